"""Tests for naskd.metrics: the table is consistent, its views follow it, budgets behave."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from naskd import metrics
from naskd.config import METRIC_DIRECTIONS, CostConfig
from naskd.metrics import (
    BUDGETS,
    DIAGNOSTIC_METRICS,
    DIRECTIONS,
    METRICS,
    OBJECTIVE_METRICS,
    TRIAL_METRICS,
    Metric,
    budget_limits,
    budget_violations,
    budgets_of,
    direction,
    directions_of,
    label,
    names_where,
)


def test_every_row_is_keyed_by_its_own_name():
    assert all(name == m.name for name, m in METRICS.items())


def test_trial_and_diagnostic_metrics_split_the_table_in_order():
    assert TRIAL_METRICS == (
        "accuracy",
        "teacher_agreement",
        "kl_to_teacher",
        "params",
        "flops",
        "latency_p50_ms",
        "latency_p95_ms",
        "train_seconds",
        "capacity_ratio",
        "model_bytes",
    )
    assert DIAGNOSTIC_METRICS == (
        "scratch_accuracy",
        "long_accuracy",
        "long_teacher_agreement",
        "long_steps",
        "synthetic_agreement",
    )
    assert (*TRIAL_METRICS, *DIAGNOSTIC_METRICS) == tuple(METRICS)


@pytest.mark.parametrize("name", TRIAL_METRICS)
def test_every_trial_metric_has_a_direction_a_label_and_a_format(name):
    m = METRICS[name]
    assert m.direction in ("maximize", "minimize")
    assert direction(name) == m.direction
    assert label(name) and label(name) == m.label
    assert m.format in ("share", "count", "float")


def test_every_objective_has_a_direction_and_the_config_agrees():
    assert all(METRICS[o].direction is not None for o in OBJECTIVE_METRICS)
    assert METRIC_DIRECTIONS == {o: DIRECTIONS[o] for o in OBJECTIVE_METRICS}
    assert list(METRIC_DIRECTIONS) == list(OBJECTIVE_METRICS)


def test_labels_carry_the_unit():
    assert label("latency_p50_ms") == "latency p50 (ms)"
    assert label("train_seconds") == "train time (s)"
    assert label("flops") == "FLOPs"
    assert label("not_a_metric") == "not_a_metric"


def test_direction_of_an_unknown_metric_is_a_key_error():
    with pytest.raises(KeyError):
        direction("not_a_metric")


def test_budget_keys_are_cost_config_fields_in_its_order():
    fields = [f.name for f in dataclasses.fields(CostConfig)]
    assert set(BUDGETS) <= set(fields)
    assert list(BUDGETS) == [f for f in fields if f in BUDGETS]
    assert BUDGETS == {
        "max_latency_ms": "latency_p50_ms",
        "max_params": "params",
        "max_flops": "flops",
        "max_model_bytes": "model_bytes",
    }
    assert all(METRICS[metric].budget_key == key for key, metric in BUDGETS.items())
    assert all(METRICS[metric].kind == "trial" for metric in BUDGETS.values())


def test_budget_limits_reads_the_cost_section():
    assert budget_limits(CostConfig()) == {
        "max_latency_ms": None,
        "max_params": None,
        "max_flops": None,
        "max_model_bytes": None,
    }
    cost = CostConfig(max_latency_ms=1.5, max_flops=1000)
    assert budget_limits(cost) == {
        "max_latency_ms": 1.5,
        "max_params": None,
        "max_flops": 1000,
        "max_model_bytes": None,
    }


def test_budget_violations_without_budgets_is_feasible():
    assert budget_violations({"latency_p50_ms": 9.0, "params": 9, "flops": 9}, budget_limits(CostConfig())) == ({}, [])
    assert budget_violations({}, {}) == ({}, [])


def test_budget_violations_gives_relative_excess_and_a_sentence_per_broken_budget():
    measured = {"latency_p50_ms": 1.2, "params": 50.0, "flops": 300.0}
    limits = {"max_latency_ms": 1.0, "max_params": 100.0, "max_flops": 200.0}
    values, broken = budget_violations(measured, limits)
    assert list(values) == ["latency_p50_ms", "params", "flops"]
    assert values["latency_p50_ms"] == pytest.approx(0.2)
    assert values["params"] == pytest.approx(-0.5)
    assert values["flops"] == pytest.approx(0.5)
    assert broken == ["latency_p50_ms 1.2 > budget 1", "flops 300 > budget 200"]


def test_a_budget_exactly_met_is_not_broken():
    values, broken = budget_violations({"params": 100.0}, {"max_params": 100})
    assert values == {"params": 0.0} and broken == []


def test_views_follow_the_table():
    assert DIRECTIONS == directions_of(METRICS) == {n: m.direction for n, m in METRICS.items() if m.direction}
    assert BUDGETS == budgets_of(METRICS)
    assert OBJECTIVE_METRICS == names_where(lambda m: m.objective)
    assert TRIAL_METRICS == names_where(lambda m: m.kind == "trial", METRICS)


def test_a_new_row_reaches_every_view():
    row = Metric(
        "peak_memory_bytes",
        "minimize",
        "peak memory",
        unit="bytes",
        format="count",
        objective=True,
        budget_key="max_peak_memory_bytes",
        budget_rank=4,
        teacher_bounded=True,
        log_axis=True,
    )
    table = {**METRICS, row.name: row}
    assert directions_of(table)["peak_memory_bytes"] == "minimize"
    assert row.label == "peak memory (bytes)"
    assert names_where(lambda m: m.kind == "trial", table)[-1] == "peak_memory_bytes"
    assert names_where(lambda m: m.objective, table)[-1] == "peak_memory_bytes"
    assert "peak_memory_bytes" in names_where(lambda m: m.log_axis, table)
    assert "peak_memory_bytes" in names_where(lambda m: m.teacher_bounded, table)
    assert list(budgets_of(table)) == [*BUDGETS, "max_peak_memory_bytes"]
    assert budgets_of(table)["max_peak_memory_bytes"] == "peak_memory_bytes"


def test_readers_derive_their_lists_from_the_table():
    from naskd import fidelity, front, results
    from naskd.report import checks, figures, view

    assert results.FRONT_COLUMNS == TRIAL_METRICS
    assert results.DIAGNOSTIC_COLUMNS == DIAGNOSTIC_METRICS
    assert results.TEACHER_SUMMARY == ("accuracy", "params", "flops", "latency_p50_ms", "model_bytes")
    assert front.UNIT_OBJECTIVES == {"accuracy", "teacher_agreement", "synthetic_agreement"}
    assert front.TEACHER_BOUNDED_OBJECTIVES == {"params", "flops", "latency_p50_ms", "latency_p95_ms", "model_bytes"}
    assert fidelity.MARGIN_METRICS == {"accuracy", "teacher_agreement", "synthetic_agreement"}
    assert fidelity.LATENCY_METRICS == {"latency_p50_ms", "latency_p95_ms"}
    assert figures.LOG_METRICS == {"params", "flops", "capacity_ratio", "model_bytes"}
    assert checks._BUDGET_METRICS == BUDGETS
    assert view.LABELS == {n: m.label for n, m in METRICS.items()}
    assert view.fmt(1234, "params") == "1,234"
    assert view.fmt(0.5, "accuracy") == "0.5000"
    assert view.fmt(1.23456, "latency_p50_ms") == "1.235"


def test_metrics_imports_no_framework():
    # A fresh interpreter: this test session has imported torch and friends already.
    code = "import sys, naskd.metrics; print(sorted({'torch', 'optuna', 'ray', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert metrics.__doc__
