"""Open a written report in a real headless Chromium and say what happened: how long the
figures took to draw, which figures and points were drawn, every request the page made and
every console error. Tooling for the browser test and ``benchmarks/report_size.py``.

Needs Playwright (a dev dependency, imported only here) and Debian's ``chromium`` at
``/usr/bin/chromium``; ``ensure_chromium`` installs it with apt when running as root.
Playwright's own browser download (``playwright install``) is never used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
#: Without the networking flags Chromium reaches out to Google services when it starts.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")

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
    """What one report did in the browser."""

    render_seconds: list[float]  # per load: navigation start to the last figure drawn (page clock)
    wall_seconds: list[float]  # per load: from asking for the page to the last figure drawn
    figures: list[dict[str, Any]]
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    console_errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    def outside_requests(self, page_url: str) -> list[str]:
        """Requests for anything but the page itself (``data:`` and ``blob:`` URLs never leave
        the page, but none are expected either, so they count)."""
        return [u for u in self.requests if u != page_url]


def ensure_chromium() -> Path:
    """``/usr/bin/chromium``, installing Debian's package first when it is missing (as root)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing; install Debian's chromium (apt-get install -y chromium, as root)")
    return CHROMIUM


def open_report(path: Path, *, screenshot: Path | None = None, loads: int = 1, timeout_s: float = 60.0) -> Rendered:
    """Load ``path`` ``loads`` times in one fresh headless Chromium profile and wait each time
    until every figure reports it is drawn (``window.naskdReport.done``).

    The first load is cold (empty caches), later ones warm. Every request is routed: the page
    itself is served, anything else is recorded and aborted, so nothing can leave the machine.
    """
    from playwright.sync_api import sync_playwright

    executable = ensure_chromium()
    url = Path(path).resolve().as_uri()
    requests: list[str] = []
    errors: list[str] = []
    render: list[float] = []
    wall: list[float] = []

    def route(r: Any) -> None:
        requests.append(r.request.url)
        if r.request.url == url:
            r.continue_()
        else:
            r.abort()

    with tempfile.TemporaryDirectory(prefix="naskd-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(profile, executable_path=str(executable), headless=True,
                                                        args=list(FLAGS), viewport={"width": 1280, "height": 900})
        try:
            context.route("**/*", route)
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
            for _ in range(loads):
                start = time.perf_counter()
                page.goto(url, wait_until="load", timeout=timeout_s * 1000)
                page.wait_for_function("window.naskdReport && window.naskdReport.done", timeout=timeout_s * 1000)
                wall.append(time.perf_counter() - start)
                render.append(page.evaluate("window.naskdReport.renderedAt || 0") / 1000.0)
            figures = page.evaluate(_FIGURES_JS)
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            context.close()
    return Rendered(render, wall, figures, requests, errors, screenshot)
