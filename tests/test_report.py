"""The HTML report without a browser: escaping, offline page, warnings, export commands, the
rungs (students stopped at one, learning curves, rank agreement, training saved), and the
sections that appear only when their data exist."""

from __future__ import annotations

import dataclasses
import html as htmllib
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import kendalltau

from naskd.report import build_report, write_report
from naskd.report.analysis import hypervolume_history
from naskd.report.commands import STUDY_PLACEHOLDER, export_command, parse_search_command
from naskd.report.view import study_view
from naskd.results import FRONT_COLUMNS, StudyFacts, TrialRecord, front_summary, render_json

ROOT = Path(__file__).resolve().parent.parent
TEACHER = {
    "source": "built-in mlp",
    "fingerprint": "feedc0de",
    "accuracy": 0.97,
    "params": 20000,
    "flops": 40000,
    "latency_p50_ms": 0.2,
    "latency_p95_ms": 0.3,
}
RECIPE = {"temperature": 4.0, "alpha": 0.9, "steps": 30, "lr": 0.003}
XSS_NAME = "<script>alert(1)</script>"
XSS_SPEC = "<img src=x onerror=alert(1)>"
XSS_REASON = "<script>alert(2)</script> broke"
#: A study whose rungs are 1, 3 and 9 epochs of 40 steps on the way to a 27-epoch target.
FIDELITY = {
    "rule": "pareto",
    "target_steps": 1080,
    "rungs": [40, 120, 360],
    "steps_per_epoch": 40,
    "reduction_factor": 3,
    "margin": 0.0,
}
RUNG_STEPS = tuple(FIDELITY["rungs"])
TARGET = FIDELITY["target_steps"]


def facts(**overrides: Any) -> dict[str, Any]:
    base = {
        "name": "unit",
        "objectives": ["accuracy", "latency_p50_ms", "params"],
        "sampler": "random",
        "seed": 3,
        "space": {
            "family": "mlp",
            "source": "inline",
            "params": [
                {
                    "name": "depth",
                    "kind": "int",
                    "range": [1, 2],
                    "step": 1,
                    "log": False,
                    "choices": None,
                    "value": None,
                    "per": None,
                    "when": None,
                },
                {
                    "name": "width",
                    "kind": "int",
                    "range": [4, 64],
                    "step": None,
                    "log": True,
                    "choices": None,
                    "value": None,
                    "per": "depth",
                    "when": None,
                },
                {
                    "name": "activation",
                    "kind": "categorical",
                    "range": None,
                    "step": None,
                    "log": False,
                    "choices": ["relu", "gelu"],
                    "value": None,
                    "per": None,
                    "when": None,
                },
            ],
        },
        "budgets": {"max_latency_ms": None, "max_params": None, "max_flops": None},
        "storage": "sqlite:////tmp/unit/study.db",
        "command": "naskd search 'my studies/unit.toml' --trials 20 --out out/unit --seed 3",
        "data": {
            "name": "synthetic",
            "input_shape": [16],
            "num_classes": 4,
            "train": 320,
            "val": 80,
            "fingerprint": "d474",
        },
        "teacher": dict(TEACHER),
        "fidelity": dict(FIDELITY),
    }
    base.update(overrides)
    return base


def _rung_entries(cost: dict[str, float], accuracies: Sequence[float]) -> tuple[dict[str, Any], ...]:
    return tuple(
        {
            "rung": k,
            "steps": RUNG_STEPS[k],
            "metrics": {
                **cost,
                "accuracy": a,
                "teacher_agreement": min(1.0, a + 0.01),
                "kl_to_teacher": 0.4,
                "train_seconds": 0.1 * (k + 1),
            },
        }
        for k, a in enumerate(accuracies)
    )


def student(
    number: int,
    params: int,
    accuracy: float,
    *,
    state: str = "complete",
    activation: str = "relu",
    reason: str | None = None,
    rungs: Sequence[float] = (),
    steps: int | None = None,
    **extra: float,
) -> TrialRecord:
    """A completed (or infeasible, failed, pruned) trial whose metrics grow plausibly with size.

    ``rungs`` are its accuracies at the rungs it reached (``RUNG_STEPS``): a complete student
    then was trained to ``TARGET`` steps; a pruned one stopped at its last rung, whose metrics
    are its own (``accuracy`` is ignored). Without ``rungs`` (nor ``steps``) a complete student
    is a record from before naskd kept rungs and steps."""
    spec = {
        "family": "mlp",
        "arch": {"depth": 1 + number % 2, "width": [8 + number] * (1 + number % 2), "activation": activation},
        "recipe": dict(RECIPE),
    }
    cost = {
        "params": params,
        "flops": 2 * params,
        "latency_p50_ms": 0.01 + params * 1e-6,
        "latency_p95_ms": 0.02 + params * 1e-6,
        "capacity_ratio": TEACHER["params"] / params,
        "model_bytes": 4 * params + 1100,
    }
    if state == "failed":
        return TrialRecord(number, "failed", spec, {}, reason or "diverged: loss became nan at step 3")
    if state == "infeasible":
        return TrialRecord(number, "infeasible", spec, cost, reason or f"over budget: params {params} > budget 100")
    entries = _rung_entries(cost, rungs)
    if state == "pruned":
        k = len(rungs) - 1
        why = reason or (
            f"stopped at rung {k} ({RUNG_STEPS[k] // 40} epochs of 27 epochs): Pareto rank 2 of 14 "
            "students at this rung"
        )
        return TrialRecord(number, "pruned", spec, dict(entries[-1]["metrics"]), why, RUNG_STEPS[k], entries)
    metrics = {
        **cost,
        "accuracy": accuracy,
        "teacher_agreement": min(1.0, accuracy + 0.01),
        "kl_to_teacher": 0.2,
        "train_seconds": 0.5,
        **extra,
    }
    return TrialRecord(number, "complete", spec, metrics, reason, steps or (TARGET if rungs else None), entries)


def healthy(n: int = 12, **extra_per_trial: Any) -> list[TrialRecord]:
    """``n`` completed students, 500..(500 + 400 n) params, accuracy rising with size, all below the teacher."""
    return [
        student(i, 500 + 400 * i, 0.70 + 0.02 * i, **{k: f(i) for k, f in extra_per_trial.items()}) for i in range(n)
    ]


def multi_fidelity() -> list[TrialRecord]:
    """12 students trained to the target through all three rungs (their rung accuracies rise
    toward the target's, in an order that shuffles a little), then 6 stopped at rungs 0, 1, 2."""
    done = [
        student(
            i,
            500 + 400 * i,
            0.70 + 0.02 * i,
            rungs=[0.70 + 0.02 * i - d + 0.01 * ((i * 7 + k * 3) % 5) for k, d in enumerate((0.3, 0.15, 0.05))],
        )
        for i in range(12)
    ]
    stopped = [
        student(12 + j, 700 + 350 * j, 0, state="pruned", rungs=[0.35 + 0.01 * j + 0.1 * k for k in range(1 + j % 3)])
        for j in range(6)
    ]
    return done + stopped


def summary_of(f: dict[str, Any], records: list[TrialRecord]) -> dict[str, Any]:
    return front_summary(
        StudyFacts(f["name"], tuple(f["objectives"]), f["teacher"], f["data"], f.get("fidelity") or {}), records
    )


def view_of(f: dict[str, Any], records: list[TrialRecord]) -> Any:
    return study_view(f, records, summary_of(f, records))


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
    f = facts(
        name=XSS_NAME,
        command=f"naskd search '{XSS_NAME}.toml'",
        data={**facts()["data"], "name": XSS_SPEC},
        description=XSS_NAME,
    )
    f["space"]["params"][2]["choices"] = ["relu", XSS_SPEC]
    records = [
        *healthy(11),
        student(11, 4000, 0.8, activation=XSS_SPEC),
        student(12, 900, 0, state="failed", reason=XSS_REASON),
    ]
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
    assert len(ids) == len(set(ids)) and {
        "fig-pareto-latency",
        "fig-pareto-params",
        "fig-pareto-flops",
        "fig-pareto-3d",
        "fig-capacity",
        "fig-hypervolume",
        "fig-history",
        "fig-parallel",
    } <= set(ids)


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
        div = re.search(
            rf'<div id="{fig_id}" class="plotly-graph-div" style="height:\d+px; width:100%;">(.*?)</div>', page
        ).group(1)
        assert (htmllib.escape(LAZY_NOTE) in div) == (lazy == "true"), (fig_id, div)
    assert "drawn when scrolled into view" in LAZY_NOTE
    assert page.index(get_plotlyjs()[:500]) < page.index("<script>naskdFigure(")  # plotly.js before any figure
    # Every figure is counted, the lazy ones included; they start after the eager ones.
    assert f"expected: {len(calls)}, eager: {sum(v == 'false' for v in calls.values())}" in page
    # The CSP still allows the page's own inline scripts (and plotly's WebGL shader code), nothing else.
    assert "script-src 'unsafe-inline' 'unsafe-eval';" in page and "IntersectionObserver" in page


def test_header_states_the_study() -> None:
    from importlib.metadata import version

    page = report(facts(), healthy(12))
    for text in (
        "2026-01-02 03:04 UTC",
        "synthetic: input (16), 4 classes; 320 training / 80 validation samples",
        "accuracy 0.9700, 20,000 params, 40,000 FLOPs, latency p50 0.2 ms / p95 0.3 ms",
        "random, seed 3",
        "12 complete, 0 infeasible",
        "width: int 4–64 (log scale), one per depth",
        f"plotly {version('plotly')}",
        f"optuna {version('optuna')}",
        htmllib.escape("naskd search 'my studies/unit.toml' --trials 20 --out out/unit --seed 3"),
    ):
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
    code = (
        "import sys, test_report as t; t.report(t.facts(), t.healthy(12)); "
        "bad = [m for m in ('optuna', 'ray') if m in sys.modules]; assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


# --- warnings ----------------------------------------------------------------------------


def _budget(max_params: float | None) -> dict[str, Any]:
    return facts(budgets={"max_latency_ms": None, "max_params": max_params, "max_flops": None})


WARNING_CASES = {
    "healthy": (facts(), healthy(12), set()),
    "teacher below the best student": (
        facts(teacher={**TEACHER, "accuracy": 0.8}),
        healthy(12),
        {"teacher-below-student"},
    ),
    "teacher equal to the best student": (facts(teacher={**TEACHER, "accuracy": 0.92}), healthy(12), set()),
    "every trial infeasible": (
        _budget(100),
        [student(i, 500 + i, 0, state="infeasible") for i in range(12)],
        {"all-infeasible", "too-few-trials"},
    ),
    "some infeasible": (_budget(4500), [*healthy(12), student(12, 5000, 0, state="infeasible")], set()),
    "25% failed": (
        facts(),
        [*healthy(12), *(student(12 + i, 900, 0, state="failed") for i in range(4))],
        {"many-failed"},
    ),
    "exactly 20% failed": (
        facts(),
        [*healthy(12), *(student(12 + i, 900, 0, state="failed") for i in range(3))],
        set(),
    ),
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
        command = f"naskd export 'my studies/unit.toml' --trial {n} -o students/unit-trial-{n} --out out/unit --seed 3"
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
    records = [
        TrialRecord(
            r.number,
            r.state,
            r.spec,
            {**r.metrics, "long_accuracy": longs[r.number], "long_steps": 300} if r.number < len(longs) else r.metrics,
        )
        for r in records
    ]
    page = report(facts(), records)
    tau = kendalltau([r.metrics["accuracy"] for r in records[:7]], longs).statistic
    assert 'id="trust"' in page and "fig-trust" in page
    assert htmllib.escape(f"Kendall's tau = {tau:.2f} over 7 confirmed students") in page
    assert "long runs of 300 steps" in page


def test_importances_section() -> None:
    assert "Parameter importances are not available" in report(facts(), healthy(12))
    assert "Parameter importances are not available" in report(facts(), healthy(12), importances={})
    page = report(
        facts(),
        healthy(12),
        importances={"accuracy": {"depth": 0.7, "width_0": 0.3}, "params": {"depth": 0.1, "width_0": 0.9}},
    )
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


# --- rungs and the target budget ---------------------------------------------------------

STOPPED_TRACE = "stopped at a rung (accuracy there; never on the front)"


def test_stopped_students_are_drawn_faded_at_their_rung_accuracy_and_never_on_the_front() -> None:
    f = facts()
    # One stopped student that would dominate everyone (cheapest, most accurate) if it were ranked.
    records = [*multi_fidelity(), student(18, 100, 0, state="pruned", rungs=[0.99])]
    page = report(f, records)
    stopped = [r for r in records if r.state == "pruned"]
    for fig_id, metric in (("fig-pareto-latency", "latency_p50_ms"), ("fig-pareto-params", "params")):
        by_name = {t["name"]: t for t in figure_json(page, fig_id)["data"]}
        trace = by_name[STOPPED_TRACE]
        assert trace["x"] == [r.metrics[metric] for r in stopped]
        assert trace["y"] == [r.rungs[-1]["metrics"]["accuracy"] for r in stopped]  # the rung's accuracy
        assert "colorscale" not in trace["marker"] and trace["marker"]["symbol"] == "circle-open"  # no rank colour
        for r, hover in zip(stopped, trace["hovertext"]):
            k = len(r.rungs) - 1
            assert hover.startswith(f"<b>trial {r.number}</b> · stopped at a rung")
            assert f"stopped at rung {k}: {[1, 3, 9][k]} epoch" in hover and "Pareto rank" not in hover.split("<br>")[0]
        done = by_name["completed students"]
        assert len(done["x"]) == 12 and not any(f"trial {r.number}<" in h for r in stopped for h in done["hovertext"])
        line = next(t for name, t in by_name.items() if name.startswith("front in this view"))
        assert 100 not in line["x"] and 0.99 not in line["y"]
        assert set(zip(line["x"], line["y"])) <= set(zip(done["x"], done["y"]))
        crosses = [t for name, t in by_name.items() if name.startswith("infeasible")]
        assert not crosses  # no infeasible or failed trial here; the stopped ones are not crosses
    view = view_of(f, records)
    assert not {r.number for r in stopped} & (set(view.ranks) | set(view.front) | {view.knee})


def test_learning_curves_have_one_line_per_student_with_rungs_and_highlight_the_front() -> None:
    from naskd.report import analysis, figures

    f = facts()
    old = student(30, 9000, 0.5)  # no rung entries (a record from before rungs): no line
    records = [*multi_fidelity(), old]
    view = view_of(f, records)
    fig = figures.learning_curves(view, analysis.learning_curves(view))
    lines = {t.meta: t for t in fig.data}
    assert sorted(lines) == [r.number for r in records if r.rungs] and len(fig.data) == len(lines)
    assert all(t.type == "scatter" for t in fig.data)  # SVG, not WebGL
    assert fig.layout.height and "epochs" in fig.layout.xaxis.title.text and fig.layout.xaxis.type == "log"
    front = set(view.front)
    assert front and front <= set(lines)
    for number, trace in lines.items():
        record = next(r for r in records if r.number == number)
        on_front = number in front
        assert (trace.line.width == 2.5) == on_front and (trace.line.color == figures.FADED_LINE) != on_front
        assert (f"trial {number}" in trace.name) == on_front
        rung_acc = [e["metrics"]["accuracy"] for e in record.rungs]
        if record.state == "pruned":  # ends where it stopped, in epochs
            assert list(trace.x) == [s / 40 for s in RUNG_STEPS[: len(record.rungs)]] and list(trace.y) == rung_acc
            assert trace.line.dash == "dot"
        else:  # every rung, then the target budget
            assert list(trace.x) == [1, 3, 9, 27] and list(trace.y) == [*rung_acc, record.metrics["accuracy"]]
    page = report(f, records)
    assert {t["type"] for t in figure_json(page, "fig-learning-curves")["data"]} == {"scatter"}
    assert 'naskdFigure("fig-learning-curves", false)' in page


def test_rung_tau_is_scipys_kendalltau_over_the_students_that_reached_the_target() -> None:
    from naskd.report.analysis import rung_agreement

    records = multi_fidelity()
    rows = rung_agreement(view_of(facts(), records))
    done = [r for r in records if r.state == "complete"]
    assert [row.rung for row in rows] == [0, 1, 2] and [row.steps for row in rows] == list(RUNG_STEPS)
    for row in rows:
        expected = kendalltau(
            [r.rungs[row.rung]["metrics"]["accuracy"] for r in done], [r.metrics["accuracy"] for r in done]
        )
        assert row.n == 12 and row.tau == pytest.approx(expected.statistic) and row.tau < 1  # shuffled a little
        assert row.p_value == pytest.approx(expected.pvalue)
    assert [row.scored for row in rows] == [18, 16, 14] and [row.stopped for row in rows] == [2, 2, 2]
    # Two students at the target: too few for tau; equal rung accuracies: tau undefined.
    few = [student(0, 500, 0.8, rungs=[0.5, 0.6, 0.7]), student(1, 900, 0.9, rungs=[0.6, 0.5, 0.7])]
    assert [row.tau for row in rung_agreement(view_of(facts(), few))] == [None, None, None]
    flat = [student(i, 500 + 100 * i, 0.7 + 0.01 * i, rungs=[0.5]) for i in range(4)]
    (row,) = rung_agreement(view_of(facts(fidelity={**FIDELITY, "rungs": [40]}), flat))
    assert row.n == 4 and row.tau is None
    page = report(facts(), few)
    assert "Too few students trained to the target budget" in page


def test_training_saved_counts_every_step_exactly() -> None:
    from naskd.report.analysis import training_saved

    records = [
        student(0, 500, 0.8, rungs=[0.5, 0.6, 0.7]),
        student(1, 900, 0.85, rungs=[0.5, 0.6, 0.7]),
        student(2, 1300, 0.9, rungs=[0.5, 0.6, 0.7]),
        student(3, 700, 0, state="pruned", rungs=[0.3]),  # 40 steps
        student(4, 800, 0, state="pruned", rungs=[0.3, 0.4]),  # 120
        student(5, 850, 0, state="pruned", rungs=[0.3, 0.4]),  # 120
        student(6, 950, 0, state="pruned", rungs=[0.3, 0.4, 0.5]),  # 360
        student(7, 9000, 0, state="infeasible"),
        student(8, 900, 0, state="failed"),
    ]  # never trained
    saved = training_saved(view_of(facts(), records))
    assert (saved.students, saved.stopped, saved.spent, saved.full) == (7, 4, 3 * 1080 + 640, 7 * 1080)
    assert saved.share == pytest.approx(3880 / 7560) and saved.per_rung == ((0, 1), (1, 2), (2, 1))
    sentence = (
        "The rungs trained 51% of the steps that training all 7 students to the target budget would have "
        "taken (3,880 of 7,560 steps): 4 students stopped at a rung. Stopped: 1 at rung 0 (1 epoch), "
        "2 at rung 1 (3 epochs), 1 at rung 2 (9 epochs)."
    )
    assert saved.sentence == sentence
    assert htmllib.escape(sentence) in report(facts(), records)
    # Rule off: every student reached the target.
    off = training_saved(view_of(facts(fidelity={**FIDELITY, "rule": "off"}), records[:3]))
    assert off.share == 1.0 and off.sentence.startswith("No student stopped at a rung (rule off")
    assert training_saved(view_of(facts(fidelity=None), healthy(3))) is None  # no target on record


def test_studies_without_rung_data_say_so() -> None:
    old = report(facts(fidelity=None), healthy(12))  # a study from before rungs: no fidelity, no steps
    assert "fig-learning-curves" not in old and 'id="rung-agreement"' not in old and 'id="training-saved"' not in old
    assert "No learning curves or rung statistics: this study recorded no rung scores" in old
    assert "not recorded (a study from before naskd kept its rungs" in old
    assert "training steps</button>" not in old  # no steps column without steps
    no_rungs = [student(i, 500 + 400 * i, 0.7 + 0.02 * i, steps=TARGET) for i in range(3)]
    flat = report(facts(fidelity={**FIDELITY, "rungs": []}), no_rungs)
    assert "No learning curves or rung statistics: this study has no rungs" in flat
    assert "fig-learning-curves" not in flat and "training steps</button>" in flat
    assert 'id="rungs"' in old and 'href="#rungs"' in old and "trust-section" not in old


def test_header_states_the_target_budget_and_the_rungs() -> None:
    page = report(facts(fidelity={**FIDELITY, "margin": 0.02}), multi_fidelity())
    assert (
        "target budget 27 epochs (1,080 training steps); rungs at 1, 3, 9 epochs; rule pareto, factor 3, margin 0.02"
    ) in page
    assert "6 stopped at a rung" in page and "pruned" not in re.search(r"<dt>Trials</dt><dd>(.*?)</dd>", page)[1]
    assert "every number on the front is measured at the target budget" in page
    assert "trained it briefly" not in page
    assert "training steps</button>" in page  # the front table's steps column
    # Rungs that are no whole epochs: counted in steps.
    odd = facts(fidelity={**FIDELITY, "rungs": [50, 120, 360]})
    assert "target budget 27 epochs (1,080 training steps); rungs at 50 steps, 3 epochs, 9 epochs" in report(
        odd, multi_fidelity()
    )
    steps_only = facts(fidelity={**FIDELITY, "steps_per_epoch": 7})
    assert "target budget 1,080 steps; rungs at 40, 120, 360 steps; rule pareto" in report(steps_only, multi_fidelity())


def test_stopped_students_text_is_escaped() -> None:
    bad = student(20, 600, 0, state="pruned", rungs=[0.4, 0.5], activation=XSS_SPEC, reason=XSS_REASON)
    records = [*multi_fidelity(), bad]
    page = report(facts(), records)
    for raw in (XSS_SPEC, "<script>alert(2)</script>", "<img src=x"):
        assert raw not in page
    assert htmllib.escape(XSS_REASON) in page  # the details' list of reasons
    unescaped = page.replace("\\u003c", "<").replace("\\u003e", ">")
    assert unescaped.count("&lt;img src=x onerror=alert(1)&gt;") >= 2 + 3  # its line in the curves, 3 Pareto views
    by_name = {t["name"]: t for t in figure_json(page, "fig-pareto-latency")["data"]}
    hover = by_name[STOPPED_TRACE]["hovertext"][-1]
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in hover and "<script>" not in hover
    curve = next(t for t in figure_json(page, "fig-learning-curves")["data"] if t["meta"] == 20)
    assert all("&lt;img src=x" in h and "<img" not in h for h in curve["hovertext"])


# --- loss terms, schemes, several teachers -----------------------------------------------

BAD_TERM = "<b>x"


def _with_terms(records: list[TrialRecord], skip: Sequence[int] = ()) -> list[TrialRecord]:
    """Each complete student gets ce (growing with its number), kd and a term named like markup;
    the students in ``skip`` keep no terms (records from before naskd recorded them)."""
    return [
        dataclasses.replace(r, terms={"ce": 0.1 + 0.01 * r.number, "kd": 0.3, BAD_TERM: 0.05})
        if r.state == "complete" and r.number not in skip
        else r
        for r in records
    ]


def _section_html(page: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">.*?</section>', page, re.S)
    assert match, section_id
    return match.group(0)


def test_loss_terms_show_each_term_of_each_front_student_escaped() -> None:
    f = facts()
    records = _with_terms(healthy(12))
    summary = summary_of(f, records)
    page = build_report(f, records, summary, created=datetime(2026, 1, 2, tzinfo=timezone.utc))
    front = [e["number"] for e in summary["front"]]
    assert front and 'href="#loss-terms"' in page
    section = _section_html(page, "loss-terms")
    assert "No loss terms to show" not in section and 'id="fig-loss-terms"' in section
    # The figure: one trace per term (the markup-like name escaped), one bar per front student.
    data = figure_json(page, "fig-loss-terms")["data"]
    assert [t["name"] for t in data] == ["ce", "kd", htmllib.escape(BAD_TERM, quote=False)]
    by_number = {r.number: r for r in records}
    for trace, term in zip(data, ("ce", "kd", BAD_TERM)):
        assert trace["type"] == "bar" and len(trace["x"]) == len(front)
        assert [int(re.match(r"trial (\d+)", x)[1]) for x in trace["x"]] == front
        assert trace["y"] == pytest.approx([by_number[n].terms[term] for n in front])
        assert all(BAD_TERM not in h for h in trace["hovertext"])
    assert figure_json(page, "fig-loss-terms")["layout"]["barmode"] == "relative"  # stacked
    # The table: a row per front student, a column per term, each value with its share.
    table = re.search(r'<table class="terms-table">.*?</table>', section, re.S).group(0)
    assert re.findall(r"<th>(.*?)</th>", table) == ["trial", "ce", "kd", "&lt;b&gt;x", "total"]
    assert [int(n) for n in re.findall(r'<tr data-trial="(\d+)">', table)] == front
    n = front[0]
    ce, total = 0.1 + 0.01 * n, 0.1 + 0.01 * n + 0.35
    row = re.search(rf'<tr data-trial="{n}">(.*?)</tr>', table).group(1)
    assert f">{ce:.4g} ({ce / total:.0%})</td>" in row and f">{total:.4g}</td>" in row
    assert BAD_TERM not in page.replace(htmllib.escape(BAD_TERM), "")
    assert "&lt;b&gt;x" in section.split("<table")[0]  # the sentence names it too, escaped
    # JSON front: every member carries its record's terms, the escaping left to the reader.
    parsed = json.loads(render_json(summary))
    assert [e["loss_terms"] for e in parsed["front"]] == [by_number[n].terms for n in front]


def test_loss_terms_missing_say_so_in_one_line() -> None:
    old = report(facts(), healthy(12))  # records from before naskd recorded loss terms
    section = _section_html(old, "loss-terms")
    assert re.findall(r'<p class="note">(.*?)</p>', section) == [
        "No loss terms to show: the front&#x27;s students recorded none (a study from before naskd recorded them)."
    ]
    assert 'id="fig-loss-terms"' not in old and 'class="terms-table"' not in old
    assert all(e["loss_terms"] == {} for e in summary_of(facts(), healthy(12))["front"])
    empty = build_report({}, [], front_summary(StudyFacts("x", ("accuracy", "params"), {}), []))
    assert "No loss terms to show: the front is empty." in empty
    # Some front students without terms: the others are shown, the gap is said.
    f = facts()
    records = _with_terms(healthy(12), skip=(11,))
    page = report(f, records)
    table = re.search(r'<table class="terms-table">.*?</table>', page, re.S).group(0)
    assert 'data-trial="11"' not in table and 'data-trial="10"' in table
    assert "1 front student recorded no loss terms and is left out." in page
    assert all("trial 11" not in x for t in figure_json(page, "fig-loss-terms")["data"] for x in t["x"])


def test_loss_term_shares_only_when_they_mean_something() -> None:
    from naskd.report.analysis import TermRow, loss_terms_sentence

    row = TermRow(3, {"ce": 0.25, "kd": 0.75})
    assert row.total == 1.0 and row.share("ce") == 0.25 and row.share("fitnet") is None
    negative = TermRow(4, {"ce": 0.5, "contrast": -0.1})
    assert negative.share("ce") is None
    assert loss_terms_sentence(["ce", "kd"], [row]) == (
        "Averaged over the 1 student on the front that recorded "
        "loss terms, the loss at the end of training was made of: "
        "kd 75%, ce 25%."
    )
    # A student without a term counts 0 for it: the shares add up to 100%.
    other = TermRow(5, {"ce": 0.5, "fitnet": 0.5})
    assert loss_terms_sentence(["ce", "kd", "fitnet"], [row, other]).endswith("ce 38%, kd 38%, fitnet 25%.")
    assert "shares of the loss are not shown" in loss_terms_sentence(["ce", "contrast"], [negative])


def _scheme(record: TrialRecord, scheme: str, **extra: Any) -> TrialRecord:
    return dataclasses.replace(
        record, spec={**record.spec, "recipe": {**record.spec["recipe"], "scheme": scheme, **extra}}
    )


def test_front_table_names_each_students_scheme_when_any_is_not_offline() -> None:
    offline = report(facts(), healthy(12))
    assert "scheme</button>" not in offline and 'class="scheme"' not in offline  # old studies: offline only
    records = healthy(12)
    records[11] = _scheme(records[11], "born_again", generations=3)
    records[10] = _scheme(records[10], "mutual", generations=2)  # generations only matter for born_again
    records[9] = _scheme(records[9], "offline")
    page = report(facts(), records)
    assert '<th data-sort="text"><button type="button">scheme</button></th>' in page
    cells = dict(re.findall(r'<tbody[^>]*data-trial="(\d+)".*?<td class="scheme">(.*?)</td>', page, re.S))
    assert cells["11"] == "born_again, 3 generations" and cells["10"] == "mutual"
    assert cells["9"] == "offline" and cells["0"] == "offline"  # no scheme recorded: offline
    # The spec row under each student still spans every column, the scheme's included.
    heads = re.search(r"<thead><tr>(.*?)</tr></thead>", _section_html(page, "students")).group(1).count("<th")
    assert f'<td colspan="{heads}">' in page
    # A space that searches the scheme shows the column even when every student was offline.
    f = facts()
    f["space"]["params"].append({"name": "recipe.scheme", "kind": "categorical", "choices": ["offline", "mutual"]})
    assert "scheme</button>" in report(f, healthy(12))


def _teachers() -> dict[str, Any]:
    listed = [
        {
            "name": "<i>small</i>",
            "weight": 0.25,
            "source": "small.pt",
            "fingerprint": "aa11",
            "accuracy": 0.91,
            "params": 8000,
            "flops": 16000,
            "latency_p50_ms": 0.1,
            "latency_p95_ms": 0.15,
            "model_bytes": 33000,
        },
        {
            "name": "big",
            "weight": 0.75,
            "source": "big.pt",
            "fingerprint": "bb22",
            "accuracy": 0.96,
            "params": 20000,
            "flops": 40000,
            "latency_p50_ms": 0.2,
            "latency_p95_ms": 0.3,
            "model_bytes": 81000,
        },
    ]
    return {**TEACHER, "accuracy": 0.975, "source": "2 teachers, mean_logits (largest: big)", "teachers": listed}


def test_several_teachers_are_each_shown_with_the_ensemble() -> None:
    f = facts(teacher=_teachers())
    page = report(f, healthy(12))
    teacher = re.search(r"<dt>Teacher</dt><dd>(.*?)</dd>", page, re.S).group(1)
    assert "ensemble accuracy 0.9750" in teacher and "against the largest teacher, big" in teacher
    items = re.findall(r"<li>(.*?)</li>", teacher)
    assert items == [
        "&lt;i&gt;small&lt;/i&gt;: weight 0.25, accuracy 0.9100, 8,000 params, 16,000 FLOPs, latency p50 0.1 ms / "
        "p95 0.15 ms; small.pt (fingerprint aa11)",
        "big: weight 0.75, accuracy 0.9600, 20,000 params, 40,000 FLOPs, latency p50 0.2 ms / p95 0.3 ms; "
        "big.pt (fingerprint bb22)",
    ]
    assert "<i>small</i>" not in page
    shapes = figure_json(page, "fig-pareto-latency")["layout"]["annotations"]
    assert any(a["text"].startswith("teachers’ ensemble accuracy 0.9750") for a in shapes)
    # One teacher: the header as before, no list.
    single = re.search(r"<dt>Teacher</dt><dd>(.*?)</dd>", report(facts(), healthy(12)), re.S).group(1)
    assert "<ul>" not in single and "ensemble" not in single and single.startswith("accuracy 0.9700")
    # The front summary's teacher block: the same keys, plus every teacher's figures.
    block = summary_of(f, healthy(12))["teacher"]
    assert {k: block[k] for k in ("accuracy", "params", "flops", "latency_p50_ms")} == {
        "accuracy": 0.975,
        "params": 20000,
        "flops": 40000,
        "latency_p50_ms": 0.2,
    }
    assert block["teachers"] == _teachers()["teachers"]
    assert json.loads(render_json(summary_of(f, healthy(12))))["teacher"]["teachers"][0]["name"] == "<i>small</i>"
    assert "teachers" not in summary_of(facts(), healthy(12))["teacher"]


def test_the_text_table_lists_every_teacher_and_the_csv_every_loss_term() -> None:
    from dataclasses import replace

    from naskd.results import render_csv, render_table

    summary = summary_of(facts(teacher=_teachers()), healthy(12))
    lines = render_table(summary).splitlines()
    teacher_rows = [ln for ln in lines if ln.startswith(("teacher", "  "))]
    assert teacher_rows[0].startswith("teacher") and teacher_rows[0].endswith("ensemble")
    assert teacher_rows[1].split()[:2] == ["<i>small</i>", "0.91"] and teacher_rows[1].endswith("weight 0.25")
    assert teacher_rows[2].split()[0] == "big" and teacher_rows[2].split()[-3] == "1"  # the largest: ratio 1
    assert not any(ln.startswith("  ") for ln in render_table(summary_of(facts(), healthy(12))).splitlines())

    records = [replace(r, terms={"ce": 0.1, "kd": 0.5 + r.number}) if r.number % 2 else r for r in healthy(12)]
    rows = render_csv(summary_of(facts(), records)).splitlines()
    header = rows[0].split(",")
    assert header[header.index("steps") + 1 : header.index("steps") + 3] == ["loss_ce", "loss_kd"]
    by_number = {row.split(",")[0]: row.split(",") for row in rows[1:]}
    for number, cells in by_number.items():
        kd = cells[header.index("loss_kd")]
        assert kd == (str(0.5 + int(number)) if int(number) % 2 else "")
    assert "loss_" not in render_csv(summary_of(facts(), healthy(12))).splitlines()[0]
