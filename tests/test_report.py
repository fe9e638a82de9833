"""The HTML report without a browser: escaping, offline page, warnings, export commands, and
the sections that appear only when their data exist."""

from __future__ import annotations

import html as htmllib
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import kendalltau

from naskd.report import build_report, write_report
from naskd.report.analysis import hypervolume_history
from naskd.report.commands import STUDY_PLACEHOLDER, export_command, parse_search_command
from naskd.report.view import study_view
from naskd.results import FRONT_COLUMNS, StudyFacts, TrialRecord, front_summary

ROOT = Path(__file__).resolve().parent.parent
TEACHER = {"source": "built-in mlp", "fingerprint": "feedc0de", "accuracy": 0.97, "params": 20000, "flops": 40000,
           "latency_p50_ms": 0.2, "latency_p95_ms": 0.3}
RECIPE = {"temperature": 4.0, "alpha": 0.9, "steps": 30, "lr": 0.003}
XSS_NAME = "<script>alert(1)</script>"
XSS_SPEC = "<img src=x onerror=alert(1)>"
XSS_REASON = "<script>alert(2)</script> broke"


def facts(**overrides: Any) -> dict[str, Any]:
    base = {
        "name": "unit", "objectives": ["accuracy", "latency_p50_ms", "params"], "sampler": "random", "seed": 3,
        "space": {"family": "mlp", "source": "inline", "params": [
            {"name": "depth", "kind": "int", "range": [1, 2], "step": 1, "log": False, "choices": None,
             "value": None, "per": None, "when": None},
            {"name": "width", "kind": "int", "range": [4, 64], "step": None, "log": True, "choices": None,
             "value": None, "per": "depth", "when": None},
            {"name": "activation", "kind": "categorical", "range": None, "step": None, "log": False,
             "choices": ["relu", "gelu"], "value": None, "per": None, "when": None}]},
        "budgets": {"max_latency_ms": None, "max_params": None, "max_flops": None},
        "storage": "sqlite:////tmp/unit/study.db",
        "command": "naskd search 'my studies/unit.toml' --trials 20 --out out/unit --seed 3",
        "data": {"name": "synthetic", "input_shape": [16], "num_classes": 4, "train": 320, "val": 80,
                 "fingerprint": "d474"},
        "teacher": dict(TEACHER),
    }
    base.update(overrides)
    return base


def student(number: int, params: int, accuracy: float, *, state: str = "complete", activation: str = "relu",
            reason: str | None = None, **extra: float) -> TrialRecord:
    """A completed (or infeasible, failed) trial whose metrics grow plausibly with size."""
    spec = {"family": "mlp", "arch": {"depth": 1 + number % 2, "width": [8 + number] * (1 + number % 2),
                                      "activation": activation}, "recipe": dict(RECIPE)}
    cost = {"params": params, "flops": 2 * params, "latency_p50_ms": 0.01 + params * 1e-6,
            "latency_p95_ms": 0.02 + params * 1e-6, "capacity_ratio": TEACHER["params"] / params}
    if state == "failed":
        return TrialRecord(number, "failed", spec, {}, reason or "diverged: loss became nan at step 3")
    if state == "infeasible":
        return TrialRecord(number, "infeasible", spec, cost, reason or f"over budget: params {params} > budget 100")
    metrics = {**cost, "accuracy": accuracy, "teacher_agreement": min(1.0, accuracy + 0.01), "kl_to_teacher": 0.2,
               "train_seconds": 0.5, **extra}
    return TrialRecord(number, "complete", spec, metrics, reason)


def healthy(n: int = 12, **extra_per_trial: Any) -> list[TrialRecord]:
    """``n`` completed students, 500..(500 + 400 n) params, accuracy rising with size, all below the teacher."""
    return [student(i, 500 + 400 * i, 0.70 + 0.02 * i, **{k: f(i) for k, f in extra_per_trial.items()})
            for i in range(n)]


def summary_of(f: dict[str, Any], records: list[TrialRecord]) -> dict[str, Any]:
    return front_summary(StudyFacts(f["name"], tuple(f["objectives"]), f["teacher"], f["data"]), records)


def report(f: dict[str, Any], records: list[TrialRecord], **kwargs: Any) -> str:
    kwargs.setdefault("created", datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc))
    return build_report(f, records, summary_of(f, records), **kwargs)


def figure_json(page: str, fig_id: str) -> dict:
    """A figure's plotly JSON (data, layout, config) as the page holds it for drawing."""
    match = re.search(rf'<script type="application/json" data-figure="{fig_id}">(.*?)</script>', page, re.S)
    assert match, fig_id
    return json.loads(match.group(1))


def warning_keys(page: str) -> set[str]:
    return set(re.findall(r'data-warning="([^"]+)"', page))


# --- escaping and offline ----------------------------------------------------------------

def test_user_text_is_escaped_everywhere() -> None:
    f = facts(name=XSS_NAME, command=f"naskd search '{XSS_NAME}.toml'",
              data={**facts()["data"], "name": XSS_SPEC}, description=XSS_NAME)
    f["space"]["params"][2]["choices"] = ["relu", XSS_SPEC]
    records = [*healthy(11), student(11, 4000, 0.8, activation=XSS_SPEC),
               student(12, 900, 0, state="failed", reason=XSS_REASON)]
    page = report(f, records, importances={"accuracy": {XSS_SPEC: 0.7, "depth": 0.3}})
    for raw in (XSS_NAME, XSS_SPEC, "<script>alert(2)</script>", "<img src=x", "onerror=alert(1)>"):
        assert raw not in page
    # Shown as text: escaped in the page, HTML-escaped (then JSON-escaped by plotly) in figures.
    assert f"<h1>naskd report: {htmllib.escape(XSS_NAME)}</h1>" in page
    assert htmllib.escape(XSS_REASON) in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.replace("\\u003c", "<").replace("\\u003e", ">")


def test_hover_text_escapes_spec_values_and_reasons() -> None:
    f = facts()
    bad = student(0, 600, 0.8, activation="<b>bold</b>", reason="<i>why</i>")
    view = study_view(f, [bad], summary_of(f, [bad]))
    hover = view.hover(bad)
    assert "<b>bold</b>" not in hover and "&lt;b&gt;bold&lt;/b&gt;" in hover
    assert "<i>why</i>" not in hover and "&lt;i&gt;why&lt;/i&gt;" in hover
    assert hover.startswith("<b>trial 0</b>")  # our own markup stays markup
    for metric in FRONT_COLUMNS:
        assert metric.replace("_", " ").split()[0] in hover.lower() or metric in hover


def test_page_is_self_contained_and_offline() -> None:
    from plotly.offline import get_plotlyjs

    page = report(facts(), healthy(12))
    assert '<script src="http' not in page
    assert not re.search(r"<script[^>]*\bsrc=", page)  # no external script at all
    assert not re.search(r"<link[^>]*\bhref=", page)
    assert page.count(get_plotlyjs()[:500]) == 1  # the plotly.js bundle, embedded once
    assert "default-src 'none'" in page  # the CSP forbids every request
    ids = re.findall(r'id="(fig-[a-z0-9-]+)"', page)
    assert len(ids) == len(set(ids)) and {"fig-pareto-latency", "fig-pareto-params", "fig-pareto-flops",
                                          "fig-pareto-3d", "fig-capacity", "fig-hypervolume", "fig-history",
                                          "fig-parallel"} <= set(ids)


def test_webgl_figures_are_drawn_lazily_and_the_rest_as_the_page_loads() -> None:
    from plotly.offline import get_plotlyjs

    from naskd.report.page import LAZY_NOTE

    page = report(facts(), healthy(12))
    calls = dict(re.findall(r'<script>naskdFigure\("(fig-[a-z0-9-]+)", (true|false)\);</script>', page))
    assert {k for k, lazy in calls.items() if lazy == "true"} == {"fig-pareto-3d", "fig-parallel"}
    assert {"fig-pareto-latency", "fig-capacity", "fig-hypervolume", "fig-history"} <= set(calls)
    for fig_id, lazy in calls.items():
        spec = figure_json(page, fig_id)  # each figure's plotly JSON, parsed only when it is drawn
        assert spec["data"] and spec["layout"] and spec["config"]["displaylogo"] is False
        # a sized box, holding the visible placeholder until a WebGL figure is drawn
        div = re.search(rf'<div id="{fig_id}" class="plotly-graph-div" style="height:\d+px; width:100%;">(.*?)</div>',
                        page).group(1)
        assert (htmllib.escape(LAZY_NOTE) in div) == (lazy == "true"), (fig_id, div)
    assert "drawn when scrolled into view" in LAZY_NOTE
    assert page.index(get_plotlyjs()[:500]) < page.index("<script>naskdFigure(")  # plotly.js before any figure
    # Every figure is counted, the lazy ones included; they start after the eager ones.
    assert f'expected: {len(calls)}, eager: {sum(v == "false" for v in calls.values())}' in page
    # The CSP still allows the page's own inline scripts (and plotly's WebGL shader code), nothing else.
    assert "script-src 'unsafe-inline' 'unsafe-eval';" in page and "IntersectionObserver" in page


def test_header_states_the_study() -> None:
    from importlib.metadata import version

    page = report(facts(), healthy(12))
    for text in ("2026-01-02 03:04 UTC", "synthetic: input (16), 4 classes; 320 training / 80 validation samples",
                 "accuracy 0.9700, 20,000 params, 40,000 FLOPs, latency p50 0.2 ms / p95 0.3 ms",
                 "random, seed 3", "12 complete, 0 infeasible", "width: int 4–64 (log scale), one per depth",
                 f"plotly {version('plotly')}", f"optuna {version('optuna')}",
                 htmllib.escape("naskd search 'my studies/unit.toml' --trials 20 --out out/unit --seed 3")):
        assert text in page, text


def test_missing_facts_and_empty_study_still_render() -> None:
    empty = build_report({}, [], front_summary(StudyFacts("x", ("accuracy", "params"), {}), []))
    assert "<h1>naskd report: x</h1>" in empty and "not recorded" in empty
    assert "expected: 0" in empty  # no figure: the page is complete at once
    page = build_report({"name": "bare"}, healthy(3), summary_of(facts(), healthy(3)))
    assert "fig-pareto-latency" in page and "STUDY.toml" in page


def test_write_report_writes_atomically(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "report.html"
    assert write_report(target, "<html>é</html>") == target
    assert target.read_text(encoding="utf-8") == "<html>é</html>"
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]  # no temporary file left
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # shareable, not the temp file's 0600


def test_report_does_not_import_optuna_or_ray() -> None:
    code = ("import sys, test_report as t; t.report(t.facts(), t.healthy(12)); "
            "bad = [m for m in ('optuna', 'ray') if m in sys.modules]; assert not bad, bad")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


# --- warnings ----------------------------------------------------------------------------

def _budget(max_params: float | None) -> dict[str, Any]:
    return facts(budgets={"max_latency_ms": None, "max_params": max_params, "max_flops": None})


WARNING_CASES = {
    "healthy": (facts(), healthy(12), set()),
    "teacher below the best student": (facts(teacher={**TEACHER, "accuracy": 0.8}), healthy(12),
                                       {"teacher-below-student"}),
    "teacher equal to the best student": (facts(teacher={**TEACHER, "accuracy": 0.92}), healthy(12), set()),
    "every trial infeasible": (_budget(100), [student(i, 500 + i, 0, state="infeasible") for i in range(12)],
                               {"all-infeasible", "too-few-trials"}),
    "some infeasible": (_budget(4500), [*healthy(12), student(12, 5000, 0, state="infeasible")], set()),
    "25% failed": (facts(), [*healthy(12), *(student(12 + i, 900, 0, state="failed") for i in range(4))],
                   {"many-failed"}),
    "exactly 20% failed": (facts(), [*healthy(12), *(student(12 + i, 900, 0, state="failed") for i in range(3))],
                           set()),
    "budget far above every student": (_budget(100_000), healthy(12), {"budget-not-reached"}),
    "budget approached": (_budget(9000), healthy(12), set()),
    "too few trials": (facts(), healthy(9), {"too-few-trials"}),
    "requested trials not reached": (facts(trials=20), healthy(12), {"study-incomplete"}),
    "requested trials reached": (facts(trials=12), healthy(12), set()),
}


@pytest.mark.parametrize("case", list(WARNING_CASES))
def test_each_warning_appears_exactly_when_its_condition_holds(case: str) -> None:
    f, records, expected = WARNING_CASES[case]
    assert warning_keys(report(f, records)) == expected


def test_failure_warning_names_the_common_reasons() -> None:
    records = [*healthy(10), *(student(10 + i, 900, 0, state="failed", reason="CUDA <oom>") for i in range(5))]
    page = report(facts(), records)
    assert "5× CUDA &lt;oom&gt;" in page


# --- table and export commands -----------------------------------------------------------

def test_front_table_has_an_export_command_per_student() -> None:
    f = facts()
    records = healthy(12)
    summary = summary_of(f, records)
    page = build_report(f, records, summary)
    rows = re.findall(r'<tbody[^>]*data-trial="(\d+)"', page)
    assert sorted(map(int, rows)) == sorted(e["number"] for e in summary["front"]) and rows
    for entry in summary["front"]:
        n = entry["number"]
        command = (f"naskd export 'my studies/unit.toml' --trial {n} -o students/unit-trial-{n} "
                   f"--out out/unit --seed 3")
        assert export_command(f, "unit", n) == command
        assert htmllib.escape(command) in page
    assert f'data-trial="{summary["knee"]}"' in page and "★ knee" in page


def test_search_command_parsing() -> None:
    parsed = parse_search_command("naskd search s.toml --storage=postgresql://u:***@h/db -q --workers 2 --out o")
    assert parsed.study == "s.toml" and parsed.kept == (("--storage", "postgresql://u:***@h/db"), ("--out", "o"))
    assert parse_search_command("").study == STUDY_PLACEHOLDER
    assert parse_search_command("naskd search 'unbalanced").study == STUDY_PLACEHOLDER
    assert export_command({}, "a b/c", 4) == "naskd export STUDY.toml --trial 4 -o students/a_b_c-trial-4"


# --- sections that need diagnostics ------------------------------------------------------

def test_kd_gain_section_only_with_scratch_baselines() -> None:
    without = report(facts(), healthy(12))
    assert 'id="kd-gain"' not in without and "fig-kd-gain" not in without
    assert "No scratch baselines" in without
    with_scratch = report(facts(), healthy(12, scratch_accuracy=lambda i: 0.70 + 0.02 * i - 0.01 * (i % 3)))
    assert 'id="kd-gain"' in with_scratch and "fig-kd-gain" in with_scratch
    assert "helped most at capacity ratio" in with_scratch
    assert "Distillation beat training from scratch for 8 of 12 students" in with_scratch


def test_kendall_tau_section_only_with_long_runs() -> None:
    without = report(facts(), healthy(12))
    assert 'id="trust"' not in without and "fig-trust" not in without
    assert "No confirmation run" in without
    longs = [0.75, 0.71, 0.80, 0.78, 0.86, 0.84, 0.9]
    records = healthy(12, **{})
    records = [TrialRecord(r.number, r.state, r.spec,
                           {**r.metrics, "long_accuracy": longs[r.number], "long_steps": 300}
                           if r.number < len(longs) else r.metrics) for r in records]
    page = report(facts(), records)
    tau = kendalltau([r.metrics["accuracy"] for r in records[:7]], longs).statistic
    assert 'id="trust"' in page and "fig-trust" in page
    assert htmllib.escape(f"Kendall's tau = {tau:.2f} over 7 confirmed students") in page
    assert "long runs of 300 steps" in page


def test_importances_section() -> None:
    assert "Parameter importances are not available" in report(facts(), healthy(12))
    assert "Parameter importances are not available" in report(facts(), healthy(12), importances={})
    page = report(facts(), healthy(12), importances={"accuracy": {"depth": 0.7, "width_0": 0.3},
                                                     "params": {"depth": 0.1, "width_0": 0.9}})
    assert "fig-importances" in page and "not available" not in page.split("Parameter importances</h3>")[1][:300]


def test_hypervolume_history_ends_at_the_summary_value() -> None:
    f = facts()
    records = [*healthy(12), student(12, 900, 0, state="failed")]
    summary = summary_of(f, records)
    numbers, values = hypervolume_history(study_view(f, records, summary))
    assert numbers == list(range(13))
    assert values == sorted(values) and values[-1] == pytest.approx(summary["hypervolume"])


def test_figure_data_match_the_trials() -> None:
    """The plotly JSON of the main view holds one point per completed and per faded trial."""
    f = _budget(5000)
    records = [*healthy(12), student(12, 6000, 0, state="infeasible"), student(13, 900, 0, state="failed")]
    page = report(f, records)
    data = figure_json(page, "fig-pareto-latency")["data"]
    by_name = {t["name"]: t for t in data}
    assert len(by_name["completed students"]["x"]) == len(by_name["completed students"]["hovertext"]) == 12
    faded = next(t for name, t in by_name.items() if name.startswith("infeasible"))
    assert len(faded["x"]) == 1  # the failed trial has no cost to place it by; the infeasible one has


def test_parallel_coordinates_split_lists_and_mark_absent_positions() -> None:
    from naskd.report import figures

    f = facts()
    records = healthy(12)  # odd trials have depth 2, even ones depth 1
    fig = figures.parallel(study_view(f, records, summary_of(f, records)))
    dims = {d.label: d for d in fig.data[0].dimensions}
    assert list(dims) == ["depth", "width_0", "width_1", "activation", "accuracy"]
    assert list(dims["depth"].ticktext) == ["1", "2"]
    assert dims["width_1"].ticktext[0] == "absent" and len(dims["width_1"].values) == 12
    assert min(dims["width_1"].values) < min(dims["width_0"].values)  # absent sits below every width
