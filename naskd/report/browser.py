"""Open a written report in a real headless Chromium and say what happened: how long the
figures took to draw, which figures and points were drawn, every request the page made and
every console error. Tooling for the browser test and ``benchmarks/report_size.py``.

Needs Playwright (a dev dependency, imported only here) and Debian's ``chromium`` at
``/usr/bin/chromium`` (the browser test installs it when missing; nothing here downloads
anything). Playwright's own browser download (``playwright install``) is never used.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
#: Without the networking flags Chromium reaches out to Google services when it starts.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# Per figure: every trace plotly holds (its data-point count) and, for SVG traces, the
# markers / bars actually in the SVG, keyed by trace index. Each trace's <g> element carries
# plotly's calcdata as its d3 datum, which names the trace.
_FIGURES_JS = """
() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(gd => {
  const count = t => t.x ? t.x.length : (t.dimensions && t.dimensions.length ? t.dimensions[0].values.length : 0);
  const traces = (gd._fullData || []).map(t => ({index: t.index, name: t.name, type: t.type,
                                                  mode: t.mode || null, points: count(t)}));
  const drawn = {};
  gd.querySelectorAll('g.trace').forEach(g => {
    const cd = g.__data__;
    if (!Array.isArray(cd) || !cd[0] || !cd[0].trace) return;
    const i = cd[0].trace.index;
    drawn[i] = (drawn[i] || 0) + g.querySelectorAll('path.point, g.point').length;
  });
  return {id: gd.id, svg: !!gd.querySelector('.main-svg'), canvases: gd.querySelectorAll('canvas').length,
          text: (gd.innerText || '').slice(0, 400), traces: traces, drawn: drawn,
          layout: !!gd._fullLayout};
})
"""


@dataclass
class Rendered:
    """What one report did in the browser. Times are per load (the first cold, the rest warm),
    in seconds, by the page's own clock unless said otherwise."""

    ready_seconds: list[float]  # navigation start to the page and every eagerly drawn (SVG) figure drawn
    lazy_seconds: list[dict[str, float]]  # lazy (WebGL) figure id -> from scrolling it into view to drawn
    paint_seconds: list[float]  # navigation start to the first contentful paint (text on screen)
    parsed_seconds: list[float]  # navigation start to the whole page parsed (DOMContentLoaded): all its text there
    wall_seconds: list[float]  # from asking for the page to every eager figure drawn (Python's clock)
    figures: list[dict[str, Any]]
    waiting: dict[str, str] = field(default_factory=dict)  # last load: lazy figure id -> its text before scrolling
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    console_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)  # alert()/confirm() the page opened: none expected
    screenshot: Path | None = None
    inspected: Any = None  # what ``inspect`` returned

    def outside_requests(self, page_url: str) -> list[str]:
        """Requests for anything but the page itself (``data:`` and ``blob:`` URLs never leave
        the page, but none are expected either, so they count)."""
        return [u for u in self.requests if u != page_url]


def find_chromium() -> Path:
    """``/usr/bin/chromium``, or a RuntimeError saying how to install it (nothing is downloaded here)."""
    if not CHROMIUM.exists():
        raise RuntimeError(
            f"{CHROMIUM} is missing; install Debian's chromium (as root: apt-get update && "
            "apt-get install -y chromium). Playwright's own browser download is not used."
        )
    return CHROMIUM


def open_report(
    path: Path,
    *,
    screenshot: Path | None = None,
    loads: int = 1,
    timeout_s: float = 60.0,
    inspect: Callable[[Any], Any] | None = None,
    lazy: bool = True,
    viewport: tuple[int, int] = (1280, 900),
) -> Rendered:
    """Load ``path`` ``loads`` times in one fresh headless Chromium profile; each time, wait
    until the page says every eager figure is drawn (``naskdReport.ready``), then (``lazy``)
    scroll each lazily drawn figure into view in turn and wait until it is drawn too, timing
    it from the scroll, and scroll back to the top.

    The first load is cold (empty caches), later ones warm. Every request is routed: the page
    itself is served, anything else is recorded and aborted, so nothing can leave the machine.
    The figures are read and the screenshot (full page) taken after the last load;
    ``inspect(page)`` (a Playwright page) runs last, and its result is kept.
    """
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    url = Path(path).resolve().as_uri()
    requests: list[str] = []
    errors: list[str] = []
    dialogs: list[str] = []
    inspected: Any = None
    ready: list[float] = []
    lazy_times: list[dict[str, float]] = []
    waiting: dict[str, str] = {}
    paint: list[float] = []
    parsed: list[float] = []
    wall: list[float] = []

    def route(r: Any) -> None:
        requests.append(r.request.url)
        if r.request.url == url:
            r.continue_()
        else:
            r.abort()

    def wait(page: Any, condition: str, what: str, arg: Any = None) -> None:
        try:
            page.wait_for_function(condition, arg=arg, timeout=timeout_s * 1000)
        except Exception as exc:  # say why the page never finished, not just that it timed out
            raise RuntimeError(
                f"{url}: {what} not drawn within {timeout_s} s; console errors: {errors}; drawn: "
                f"{page.evaluate('window.naskdReport && window.naskdReport.rendered')}"
            ) from exc

    with tempfile.TemporaryDirectory(prefix="naskd-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=str(executable),
            headless=True,
            args=list(FLAGS),
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            context.route("**/*", route)
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
            page.on("dialog", lambda d: _dismiss(d, dialogs))
            for _ in range(loads):
                start = time.perf_counter()
                page.goto(url, wait_until="load", timeout=timeout_s * 1000)
                wait(page, "window.naskdReport && window.naskdReport.ready", "the eager figures")
                wall.append(time.perf_counter() - start)
                times = page.evaluate(_TIMES_JS)
                ready.append(times["ready"] / 1000.0)
                paint.append(times["paint"] / 1000.0)
                parsed.append(times["parsed"] / 1000.0)
                waiting = times["waiting"]
                drawn: dict[str, float] = {}
                for fig_id in times["lazy"] if lazy else []:
                    asked = page.evaluate(_SCROLL_JS, fig_id)
                    wait(page, "id => window.naskdReport.rendered.some(r => r[0] === id)", fig_id, fig_id)
                    at = page.evaluate("id => window.naskdReport.rendered.find(r => r[0] === id)[1]", fig_id)
                    drawn[fig_id] = max(0.0, at - asked) / 1000.0
                if lazy:
                    wait(page, "window.naskdReport.done", "every figure")
                    page.evaluate("window.scrollTo(0, 0)")
                lazy_times.append(drawn)
            figures = page.evaluate(_FIGURES_JS)
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            if inspect is not None:
                inspected = inspect(page)
        finally:
            context.close()
    return Rendered(
        ready, lazy_times, paint, parsed, wall, figures, waiting, requests, errors, dialogs, screenshot, inspected
    )


_TIMES_JS = """() => {
  const paint = performance.getEntriesByName('first-contentful-paint')[0];
  const nav = performance.getEntriesByType('navigation')[0];
  const lazy = window.naskdReport.lazy || [];
  const waiting = Object.fromEntries(lazy.map(id => [id, document.getElementById(id).innerText]));
  return {ready: window.naskdReport.readyAt || 0, paint: paint ? paint.startTime : 0,
          parsed: nav ? nav.domContentLoadedEventStart : 0, lazy: lazy, waiting: waiting};
}"""

# Scrolls a figure to the middle of the screen, as a reader would; returns when (page clock).
_SCROLL_JS = """(id) => {
  const at = performance.now();
  document.getElementById(id).scrollIntoView({block: 'center'});
  return at;
}"""


def _dismiss(dialog: Any, seen: list[str]) -> None:
    """A page's alert/confirm/prompt: recorded (a report must open none) and dismissed so the page goes on."""
    seen.append(dialog.message)
    dialog.dismiss()
