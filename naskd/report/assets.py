"""The page's own style sheet and scripts, inlined so the report is one file that works offline.

The Content-Security-Policy forbids every network request (no ``connect-src``, no remote
script, style, font or image), so even a future plotly feature that tried to fetch something
could not leave the page. plotly's WebGL traces (3-D, parallel coordinates) compile shader
code at run time, hence ``'unsafe-eval'``.
"""

from __future__ import annotations

CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:; worker-src blob:; base-uri 'none'; form-action 'none'")

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
.sentence { font-size: 15px; background: #eef3fb; border-left: 4px solid var(--accent); padding: 8px 12px; max-width: 90ch; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer; color: inherit; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
tr.knee { background: #fdf1f1; }
.table-wrap { overflow-x: auto; }
details summary { cursor: pointer; color: var(--accent); }
"""

#: Records when each figure has been drawn (plotly's newPlot promise resolved), so a reader's
#: tooling (and the browser test) can tell when the page is complete.
RENDER_HOOK = """
window.naskdReport = { expected: %d, rendered: [], done: %s, renderedAt: null };
function naskdFigureDone(id) {
  var r = window.naskdReport;
  r.rendered.push([id, Math.round(performance.now())]);
  if (r.rendered.length >= r.expected) { r.done = true; r.renderedAt = performance.now(); }
}
"""

SORT_TABLE = """
document.querySelectorAll("table.sortable th[data-sort] button").forEach(function (button) {
  button.addEventListener("click", function () {
    var th = button.parentElement, table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    var ascending = th.getAttribute("aria-sort") !== "ascending", numeric = th.dataset.sort === "num";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    function key(row) { var c = row.cells[col]; return c.dataset.value !== undefined ? c.dataset.value : c.textContent; }
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b), d;
      if (numeric) { x = parseFloat(x); y = parseFloat(y);
        if (isNaN(x) || isNaN(y)) { return isNaN(x) - isNaN(y); }  // missing values always last
        d = x - y; } else { d = x.localeCompare(y); }
      return ascending ? d : -d;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
"""
