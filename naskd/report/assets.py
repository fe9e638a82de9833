"""The page's own style sheet and scripts, inlined so the report is one file that works offline.

The Content-Security-Policy forbids every network request (no ``connect-src``, no remote
script, style, font or image), so even a future plotly feature that tried to fetch something
could not leave the page. plotly's WebGL traces (3-D, parallel coordinates) compile shader
code at run time, hence ``'unsafe-eval'``.
"""

from __future__ import annotations

CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; worker-src blob:; base-uri 'none'; form-action 'none'"
)

CSS = """
:root { --fg: #1d2330; --muted: #5b6472; --line: #dde1e7; --warn-bg: #fff4e5; --warn: #b35c00; --accent: #2457c5; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; overflow-wrap: anywhere; }
h2 { font-size: 20px; margin: 40px 0 8px; padding-top: 8px; border-top: 1px solid var(--line); }
h3 { font-size: 16px; margin: 24px 0 4px; }
p.lead, p.note, .caption { color: var(--muted); }
.caption { font-size: 14px; margin: 0 0 6px; max-width: 80ch; }
nav { font-size: 14px; margin: 8px 0 16px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
dl.facts { display: grid; grid-template-columns: 190px 1fr; gap: 6px 18px; margin: 16px 0; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
code, pre { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre.command, code.command { background: #f4f6f9; padding: 4px 8px; border-radius: 4px; display: inline-block;
  white-space: pre-wrap; overflow-wrap: anywhere; user-select: all; }
.warning { background: var(--warn-bg); border-left: 4px solid var(--warn); padding: 10px 14px; margin: 10px 0; }
.warning strong { color: var(--warn); }
.figure { margin: 8px 0 24px; }
.sentence { font-size: 15px; background: #eef3fb; border-left: 4px solid var(--accent); padding: 8px 12px;
  max-width: 90ch; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer; color: inherit; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
table.front-table tbody { border-bottom: 1px solid var(--line); }
table.front-table tr.metrics td { border-bottom: 0; padding-bottom: 1px; }
table.front-table tr.spec td { border-bottom: 0; padding-top: 1px; padding-bottom: 8px; font-size: 12px; }
tbody.knee { background: #fdf1f1; }
table.terms-table { width: auto; }
table.terms-table th + th { text-align: right; }
.table-wrap { overflow-x: auto; }
details summary { cursor: pointer; color: var(--accent); }
.lazy-note { height: 100%; margin: 0; display: flex; align-items: center; justify-content: center; text-align: center;
  color: var(--muted); background: #f7f8fa; border: 1px dashed #c8ced8; border-radius: 4px; }
"""

#: Draws the figures and records when each is drawn, so a reader's tooling, the browser test
#: and the benchmark can tell how far the page is: ``naskdReport.ready`` / ``readyAt`` (the
#: page parsed and every eager figure drawn) and ``naskdReport.done`` / ``renderedAt`` (every
#: figure, the lazy ones included), times in ms since navigation start; ``rendered`` lists
#: [id, ms] per figure and ``lazy`` the ids of the lazily drawn ones.
#:
#: Each figure is a <div> followed by its plotly JSON (``<script type="application/json">``,
#: parsed only when the figure is drawn) and a call to ``naskdFigure(id, lazy)``. Figures are
#: drawn one at a time, in page order, each in its own task after a frame so the browser
#: paints in between. Lazy figures (the WebGL ones: software WebGL needs a second or more to
#: set each up) wait until every eager figure is drawn and the page is parsed, then until the
#: reader scrolls near them (an IntersectionObserver with a margin of 1.5 screens above and
#: below the visible part); where IntersectionObserver is missing, they are drawn right after
#: the eager ones. A print request (``beforeprint``) and ``naskdReport.drawAll()`` ask for
#: every lazy figure at once. A figure that fails says so in its box and on the console.
RENDER_HOOK = """
(function () {
  "use strict";
  var report = window.naskdReport = { expected: %(expected)d, eager: %(eager)d, lazy: [], rendered: [],
    ready: false, readyAt: null, done: false, renderedAt: null, drawAll: drawAll };
  var queue = [], waiting = {}, busy = false, parsed = false, watching = false, observer = null;
  var eagerLeft = report.eager;
  if (report.expected === 0) { report.done = true; report.renderedAt = 0; }

  function nextFrame(fn) {  // after the next paint; a timer too, as frames stop in hidden tabs
    var called = false;
    function go() { if (!called) { called = true; setTimeout(fn, 0); } }
    if (window.requestAnimationFrame) { requestAnimationFrame(go); }
    setTimeout(go, 100);
  }
  function pump() {
    if (busy || !queue.length) { return; }
    busy = true;
    var job = queue.shift(), div = document.getElementById(job.id);
    if (job.lazy) {
      var note = div.querySelector(".lazy-note");
      if (note) { note.textContent = "Drawing this figure\u2026"; }
    }
    nextFrame(function () {
      Promise.resolve().then(function () {
        var spec = JSON.parse(document.querySelector('script[data-figure="' + job.id + '"]').textContent);
        div.textContent = "";
        return Plotly.newPlot(div, spec.data, spec.layout, spec.config);
      }).catch(function (e) {
        console.error("naskd: figure " + job.id + " could not be drawn: " + e);
        div.textContent = "This figure could not be drawn: " + e;
      }).then(function () { finished(job); });
    });
  }
  function finished(job) {
    report.rendered.push([job.id, Math.round(performance.now())]);
    if (!job.lazy) { eagerLeft -= 1; }
    if (report.rendered.length >= report.expected) { report.done = true; report.renderedAt = performance.now(); }
    busy = false;
    watch();
    pump();
  }
  function request(id) {  // a lazy figure is wanted now
    if (!waiting[id]) { return; }
    delete waiting[id];
    if (observer) { observer.unobserve(document.getElementById(id)); }
    queue.push({ id: id, lazy: true });
    pump();
  }
  function drawAll() { Object.keys(waiting).forEach(request); }
  function watch() {  // once the page is parsed and every eager figure drawn
    if (watching || !parsed || eagerLeft > 0) { return; }
    watching = true;
    report.ready = true;
    report.readyAt = performance.now();
    if (!("IntersectionObserver" in window)) { drawAll(); return; }
    observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) { if (e.isIntersecting) { request(e.target.id); } });
    }, { rootMargin: "150%% 0px 150%% 0px" });
    Object.keys(waiting).forEach(function (id) { observer.observe(document.getElementById(id)); });
  }
  window.naskdFigure = function (id, lazy) {
    if (lazy) {
      waiting[id] = true;
      report.lazy.push(id);
      if (watching) { observer ? observer.observe(document.getElementById(id)) : request(id); }
    } else {
      queue.push({ id: id, lazy: false });
      pump();
    }
  };
  document.addEventListener("DOMContentLoaded", function () { parsed = true; watch(); });
  window.addEventListener("beforeprint", drawAll);
})();
"""

#: Sorts a table's <tbody> groups (one per student) by the clicked column of their first row.
SORT_TABLE = """
document.querySelectorAll("table.sortable th[data-sort] button").forEach(function (button) {
  button.addEventListener("click", function () {
    var th = button.parentElement, table = th.closest("table"), col = th.cellIndex;
    var ascending = th.getAttribute("aria-sort") !== "ascending", numeric = th.dataset.sort === "num";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    function key(body) {
      var c = body.rows[0].cells[col];
      return c.dataset.value !== undefined ? c.dataset.value : c.textContent;
    }
    Array.from(table.tBodies).sort(function (a, b) {
      var x = key(a), y = key(b), d;
      if (numeric) { x = parseFloat(x); y = parseFloat(y);
        if (isNaN(x) || isNaN(y)) { return isNaN(x) - isNaN(y); }  // missing values always last
        d = x - y; } else { d = x.localeCompare(y); }
      return ascending ? d : -d;
    }).forEach(function (body) { table.appendChild(body); });
  });
});
"""
