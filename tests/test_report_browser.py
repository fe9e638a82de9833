"""The report of a real (small) study, opened in a real headless Chromium.

Debian's ``chromium`` is driven through Playwright; when it is missing the test installs it
with apt (CI runs as root with Debian's mirrors), so this test is never skipped. Checks:
every figure drew (SVG markers counted against the trials as the page loads; the WebGL
figures, drawn lazily, show a placeholder until scrolled into view, then have their canvas
and points), no request left the page, no console error, the study's name shows as text (no
script ran), the table sorts; a full-page screenshot is kept (``$NASKD_ARTIFACTS`` when set).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import small_study, toml_text

from naskd.backends.optuna_backend import load_summary, run_search
from naskd.config import load_study
from naskd.report import build_report, write_report
from naskd.report.browser import CHROMIUM, open_report
from naskd.results import TrialRecord

NAME = "tiny <img src=x onerror=alert(1)>"
SVG_FIGURES = (
    "fig-pareto-latency",
    "fig-pareto-params",
    "fig-pareto-flops",
    "fig-loss-terms",
    "fig-capacity",
    "fig-kd-gain",
    "fig-learning-curves",
    "fig-trust",
    "fig-hypervolume",
    "fig-history",
    "fig-importances",
)
WEBGL_FIGURES = ("fig-pareto-3d", "fig-parallel")


def ensure_chromium() -> None:
    """Install Debian's chromium when it is missing (CI runs as root with Debian's mirrors).
    Not a skip: a machine that cannot install it fails here, saying why."""
    if CHROMIUM.exists():
        return
    assert os.geteuid() == 0, f"{CHROMIUM} is missing and only root can install it (apt-get install -y chromium)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, env=env, stdout=subprocess.DEVNULL)
    assert CHROMIUM.exists(), f"apt-get installed chromium but {CHROMIUM} is still missing"


def _with_diagnostics(records: list[TrialRecord]) -> list[TrialRecord]:
    """Scratch baselines and long runs, as the diagnostics commands would add them, so every
    kind of figure is drawn in the browser too (the search itself records neither)."""
    out = []
    for i, r in enumerate(records):
        if r.state == "complete":
            acc = r.metrics["accuracy"]
            extra = {
                "scratch_accuracy": max(0.0, acc - 0.02 * (i % 3)),
                "long_accuracy": min(1.0, acc + 0.01 * i),
                "long_steps": 300,
            }
            r = dataclasses.replace(r, metrics={**r.metrics, **extra})
        out.append(r)
    return out


_COLUMN_JS = """([title]) => {
  const heads = Array.from(document.querySelectorAll("table.front-table thead th"));
  const col = heads.findIndex(th => th.textContent.trim().startsWith(title));
  const rows = document.querySelectorAll("table.front-table tbody tr.metrics");
  return Array.from(rows).map(r => r.cells[col].dataset.value);
}"""


def _inspect(page: Any) -> dict[str, Any]:
    """Read the heading as shown, hover over a student in the main view and read its label,
    then sort the front table by params both ways and read the column."""
    heading = page.inner_text("h1")
    first = page.locator("#fig-pareto-latency g.trace.scatter").first.locator("path.point").first
    first.hover(force=True)  # force: the knee's star may lie on top of it
    page.wait_for_selector("#fig-pareto-latency .hoverlayer .hovertext", timeout=5000)
    hover = page.locator("#fig-pareto-latency .hoverlayer").text_content()
    button = page.locator("table.front-table th button", has_text="params").first
    button.click()
    ascending = page.evaluate(_COLUMN_JS, ["params"])
    button.click()
    descending = page.evaluate(_COLUMN_JS, ["params"])
    return {"heading": heading, "hover": hover, "ascending": ascending, "descending": descending}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ensure_chromium()  # before the study, so a failed install fails fast
    tmp = tmp_path_factory.mktemp("report-browser")
    # A tiny MLP space holds students of 88 to 1,732 params: a 500-param budget makes some infeasible.
    path = tmp / "study.toml"
    path.write_text(
        toml_text(small_study(name=NAME, search={"trials": 14, "sampler": "random"}, cost={"max_params": 500}))
    )
    config = load_study(path)
    out = tmp / "out"
    run_search(config, out, show_progress=False, command=f"naskd search {path} --out {out}")
    summary, records, optuna_study = load_summary(config, out)
    facts = optuna_study.user_attrs["naskd"]
    records = _with_diagnostics(records)
    page = build_report(
        facts, records, summary, importances={o: {"depth": 0.6, "width_0": 0.4} for o in facts["objectives"]}
    )
    report = write_report(out / "report.html", page)
    # open_report scrolls each lazily drawn figure into view and waits until it is drawn.
    rendered = open_report(report, screenshot=tmp / "report.png", inspect=_inspect)
    artifacts = os.environ.get("NASKD_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(report, Path(artifacts) / "report.html")
        shutil.copy(tmp / "report.png", Path(artifacts) / "report.png")
    return {"records": records, "summary": summary, "path": report, "rendered": rendered}


def test_the_study_has_the_trials_the_checks_need(study: dict[str, Any]) -> None:
    states = [r.state for r in study["records"]]
    assert states.count("complete") >= 2 and states.count("infeasible") >= 1 and states.count("pruned") >= 1, states


def test_every_figure_is_drawn_with_one_point_per_trial(study: dict[str, Any]) -> None:
    figures = {f["id"]: f for f in study["rendered"].figures}
    assert set(figures) == set(SVG_FIGURES) | set(WEBGL_FIGURES)
    complete = [r for r in study["records"] if r.state == "complete"]
    faded = [r for r in study["records"] if r.state in ("infeasible", "failed") and "latency_p50_ms" in r.metrics]
    for fig_id in SVG_FIGURES:
        fig = figures[fig_id]
        assert fig["svg"] and fig["layout"], fig_id
        for trace in fig["traces"]:
            if trace["type"] == "bar" or "markers" in (trace["mode"] or ""):
                # plotly holds N points and the SVG has N markers (or bars) for them
                assert fig["drawn"].get(str(trace["index"])) == trace["points"], (fig_id, trace)
    stopped = [r for r in study["records"] if r.state == "pruned"]
    for fig_id in ("fig-pareto-latency", "fig-pareto-params", "fig-pareto-flops"):
        by_name = {t["name"]: t for t in figures[fig_id]["traces"]}
        assert by_name["completed students"]["points"] == len(complete)
        if stopped:
            assert by_name["stopped at a rung (accuracy there; never on the front)"]["points"] == len(stopped)
        faded_trace = [t for name, t in by_name.items() if name.startswith("infeasible")]
        assert sum(t["points"] for t in faded_trace) == len(faded)
        assert any(name.startswith("knee") and t["points"] == 1 for name, t in by_name.items())
    assert figures["fig-capacity"]["traces"][0]["points"] == len(complete)
    assert figures["fig-hypervolume"]["traces"][0]["points"] == len(study["records"])
    # The study distils offline (ce + kd): one bar per front student in each term's trace.
    terms = {t["name"]: t["points"] for t in figures["fig-loss-terms"]["traces"]}
    assert terms == {"ce": len(study["summary"]["front"]), "kd": len(study["summary"]["front"])}, terms
    for fig_id in WEBGL_FIGURES:  # drawn once scrolled into view: the placeholder is gone
        fig = figures[fig_id]
        assert fig["canvases"] >= 1 and "WebGL" not in fig["text"] and "scrolled into view" not in fig["text"], fig
        assert fig["layout"] and fig["traces"][0]["points"] == len(complete)


def test_webgl_figures_wait_until_scrolled_into_view(study: dict[str, Any]) -> None:
    rendered = study["rendered"]
    assert rendered.ready_seconds[0] > 0  # every eager figure drawn, the WebGL ones not needed for that
    # The parallel coordinates are far below the first screen: at that point only the
    # placeholder showed. Each was drawn after open_report scrolled to it.
    assert set(rendered.waiting) == set(WEBGL_FIGURES)
    assert "drawn when scrolled into view" in rendered.waiting["fig-parallel"], rendered.waiting
    assert set(rendered.lazy_seconds[0]) == set(WEBGL_FIGURES)
    assert all(0 <= t < 60 for t in rendered.lazy_seconds[0].values()), rendered.lazy_seconds


def test_no_request_leaves_the_page(study: dict[str, Any]) -> None:
    rendered = study["rendered"]
    assert rendered.requests == [study["path"].resolve().as_uri()]
    assert rendered.outside_requests(study["path"].resolve().as_uri()) == []


def test_no_console_error_and_no_script_from_user_text(study: dict[str, Any]) -> None:
    rendered = study["rendered"]
    assert rendered.console_errors == []
    assert rendered.dialogs == []  # the <img onerror=alert(1)> in the study's name did not run
    assert rendered.inspected["heading"] == f"naskd report: {NAME}"


def test_hover_shows_the_trial_its_metrics_and_its_spec(study: dict[str, Any]) -> None:
    hover = study["rendered"].inspected["hover"]
    assert hover.startswith("trial ") and "complete" in hover, hover
    for text in (
        "accuracy:",
        "teacher agreement:",
        "KL to teacher:",
        "params:",
        "FLOPs:",
        "latency p50 (ms):",
        "latency p95 (ms):",
        "train time (s):",
        "capacity ratio:",
        "mlp(depth=",
        "recipe: ",
    ):
        assert text in hover, (text, hover)


def test_front_table_sorts(study: dict[str, Any]) -> None:
    values = [float(v) for v in study["rendered"].inspected["ascending"]]
    assert values == sorted(values) and len(values) == len(study["summary"]["front"])
    assert [float(v) for v in study["rendered"].inspected["descending"]] == sorted(values, reverse=True)


def test_screenshot_is_saved(study: dict[str, Any]) -> None:
    shot = study["rendered"].screenshot
    assert shot is not None and shot.stat().st_size > 50_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
