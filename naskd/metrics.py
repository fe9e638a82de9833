"""The one table of metrics: each metric's name, direction, unit, label, display format, budget
key and the facts the front, the rung rule and the report read about it.

Every other module derives its lists from ``METRICS`` (``TRIAL_METRICS``, ``DIRECTIONS``,
``BUDGETS``, ...), so a new metric (int8 latency, model bytes, peak memory) is one row here.
Plain Python only: the config, the front math and the report import it, none of which may pull
in torch, optuna or ray.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BUDGETS",
    "DIAGNOSTIC_METRICS",
    "DIRECTIONS",
    "METRICS",
    "NEEDS_REAL_VALIDATION",
    "OBJECTIVE_METRICS",
    "TRIAL_METRICS",
    "Direction",
    "Format",
    "Metric",
    "budget_limits",
    "budget_violations",
    "budgets_of",
    "direction",
    "directions_of",
    "label",
    "names_where",
]

Direction = Literal["maximize", "minimize"]
#: How a value is written for people: ``share`` with 4 decimals (a column of shares lines up),
#: ``count`` as an integer with thousands separators, ``float`` to 4 significant digits.
Format = Literal["share", "count", "float"]


@dataclass(frozen=True)
class Metric:
    """One metric and everything the code needs to know about it.

    ``kind`` is ``"trial"`` for metrics every complete trial records (the front's columns, in
    table order) and ``"diagnostic"`` for those the diagnostics add later (scratch baselines,
    confirmation runs), present only once recorded.
    """

    name: str
    #: Which way is better; None where neither is (a step count is a setting, not a quality).
    direction: Direction | None
    #: The readable name without its unit: ``"latency p50"``, in prose such as a budget line.
    noun: str
    unit: str = ""
    format: Format = "float"
    kind: Literal["trial", "diagnostic"] = "trial"
    #: May be one of ``[search].objectives``.
    objective: bool = False
    #: The ``[cost]`` key (a ``CostConfig`` field) that caps this metric, if any; a student over
    #: it is infeasible and never trained.
    budget_key: str | None = None
    #: Where this budget comes among the budgets: the order ``[cost]`` lists them, which the
    #: infeasibility sentences, the report's budget line and its findings follow.
    budget_rank: int = 0
    #: A cost the teacher also has: normalised to ``[0, teacher's value]``, so a student costing
    #: as much as the teacher adds no hypervolume (``naskd.front.objective_bounds``).
    teacher_bounded: bool = False
    #: Natural range ``[0, 1]`` whatever the study (normalisation needs no observed range).
    unit_range: bool = False
    #: Spans orders of magnitude: the report draws it on a log axis.
    log_axis: bool = False
    #: Which benefit of the doubt the rung rule gives it (``naskd.fidelity``): ``"accuracy"``,
    #: the absolute ``margin`` for trained scores; ``"latency"``, the relative
    #: ``latency_margin`` for measured (noisy) times; None for exact values.
    rung_margin: Literal["accuracy", "latency"] | None = None
    #: The teacher's own value is kept in the front summary (``naskd.results``).
    teacher_summary: bool = False

    @property
    def label(self) -> str:
        """Axis and column label: ``"latency p50 (ms)"``; the noun alone without a unit."""
        return f"{self.noun} ({self.unit})" if self.unit else self.noun


#: Every metric, trial metrics first in the order of the front's columns (CSV, summary).
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "accuracy",
            "maximize",
            "accuracy",
            format="share",
            objective=True,
            unit_range=True,
            rung_margin="accuracy",
            teacher_summary=True,
        ),
        Metric(
            "teacher_agreement",
            "maximize",
            "teacher agreement",
            format="share",
            objective=True,
            unit_range=True,
            rung_margin="accuracy",
        ),
        Metric("kl_to_teacher", "minimize", "KL to teacher", objective=True),
        Metric(
            "params",
            "minimize",
            "params",
            format="count",
            objective=True,
            budget_key="max_params",
            budget_rank=1,
            teacher_bounded=True,
            log_axis=True,
            teacher_summary=True,
        ),
        Metric(
            "flops",
            "minimize",
            "FLOPs",
            format="count",
            objective=True,
            budget_key="max_flops",
            budget_rank=2,
            teacher_bounded=True,
            log_axis=True,
            teacher_summary=True,
        ),
        Metric(
            "latency_p50_ms",
            "minimize",
            "latency p50",
            unit="ms",
            objective=True,
            budget_key="max_latency_ms",
            budget_rank=0,
            teacher_bounded=True,
            rung_margin="latency",
            teacher_summary=True,
        ),
        Metric(
            "latency_p95_ms",
            "minimize",
            "latency p95",
            unit="ms",
            objective=True,
            teacher_bounded=True,
            rung_margin="latency",
        ),
        Metric("train_seconds", "minimize", "train time", unit="s", objective=True),
        Metric("capacity_ratio", "maximize", "capacity ratio", objective=True, log_axis=True),
        Metric(
            "model_bytes",
            "minimize",
            "model size",
            unit="bytes",
            format="count",
            objective=True,
            budget_key="max_model_bytes",
            budget_rank=3,
            teacher_bounded=True,
            log_axis=True,
            teacher_summary=True,
        ),
        Metric("scratch_accuracy", "maximize", "scratch accuracy", format="share", kind="diagnostic", unit_range=True),
        Metric("long_accuracy", "maximize", "long-run accuracy", format="share", kind="diagnostic", unit_range=True),
        Metric(
            "long_teacher_agreement",
            "maximize",
            "long-run agreement",
            format="share",
            kind="diagnostic",
            unit_range=True,
        ),
        Metric("long_steps", None, "long-run steps", format="count", kind="diagnostic"),
        # A study with no real data (``[data] dataset = "none"``) cannot score accuracy; its trials
        # record instead how often the student agrees with the teacher on held-out synthesized
        # inputs (present only there, so listed with the metrics that appear once recorded).
        Metric(
            "synthetic_agreement",
            "maximize",
            "agreement on held-out synthetic inputs",
            format="share",
            kind="diagnostic",
            objective=True,
            unit_range=True,
            rung_margin="accuracy",
        ),
    )
}

#: What a study without real validation data cannot measure (``[data] dataset = "none"``).
NEEDS_REAL_VALIDATION: tuple[str, ...] = ("accuracy", "teacher_agreement", "kl_to_teacher")


# --- views of a table ----------------------------------------------------------------------
# Functions of the table (not only of METRICS) so a test can check that a new row reaches
# every view without patching this module.


def names_where(where: Callable[[Metric], Any], table: Mapping[str, Metric] | None = None) -> tuple[str, ...]:
    """Names of the metrics ``where`` holds for, in table order."""
    return tuple(name for name, m in (METRICS if table is None else table).items() if where(m))


def directions_of(table: Mapping[str, Metric] | None = None) -> dict[str, Direction]:
    """``name -> direction`` for every metric that has one, in table order."""
    return {name: m.direction for name, m in (METRICS if table is None else table).items() if m.direction}


def budgets_of(table: Mapping[str, Metric] | None = None) -> dict[str, str]:
    """``budget key -> metric name``, in ``budget_rank`` order (ties in table order)."""
    capped = [m for m in (METRICS if table is None else table).values() if m.budget_key is not None]
    return {m.budget_key: m.name for m in sorted(capped, key=lambda m: m.budget_rank)}  # type: ignore[misc]


#: What every complete trial records: ``naskd.trial.METRICS`` and ``naskd.results.FRONT_COLUMNS``.
TRIAL_METRICS: tuple[str, ...] = names_where(lambda m: m.kind == "trial")
#: What the diagnostics add to a complete trial once run: ``naskd.results.DIAGNOSTIC_COLUMNS``.
DIAGNOSTIC_METRICS: tuple[str, ...] = names_where(lambda m: m.kind == "diagnostic")
#: What ``[search].objectives`` may name.
OBJECTIVE_METRICS: tuple[str, ...] = names_where(lambda m: m.objective)
DIRECTIONS: dict[str, Direction] = directions_of()
#: ``[cost]`` key -> the metric it caps: ``{"max_latency_ms": "latency_p50_ms", ...}``.
BUDGETS: dict[str, str] = budgets_of()


def direction(name: str) -> Direction:
    """The direction that makes ``name`` better; ``KeyError`` for a metric without one."""
    return DIRECTIONS[name]


def label(name: str) -> str:
    """The readable label of ``name``; any metric not in the table shows its own name."""
    m = METRICS.get(name)
    return m.label if m is not None else name


def budget_limits(cost_config: Any) -> dict[str, float | None]:
    """``budget key -> limit`` (None: not set) read off ``[cost]`` (a ``CostConfig``). Duck-typed
    so this module does not import the config, which imports it."""
    return {key: getattr(cost_config, key) for key in BUDGETS}


def budget_violations(
    metrics: Mapping[str, float], limits: Mapping[str, float | None]
) -> tuple[dict[str, float], list[str]]:
    """Constraint values per set budget (feasible when every value <= 0) and a sentence for each
    broken one (``"latency_p50_ms 1.2 > budget 1"``).

    Args:
        metrics: the student's measured costs, holding every metric a set budget caps.
        limits: budget key -> limit (``budget_limits``); a key that is missing or None is unset.

    Returns:
        ``({metric: relative excess}, [sentence, ...])``, both in ``BUDGETS`` order.
    """
    values: dict[str, float] = {}
    broken: list[str] = []
    for key, metric in BUDGETS.items():
        limit = limits.get(key)
        if limit is None:
            continue
        # Relative excess, so budgets of very different scales weigh alike in the sampler.
        values[metric] = (metrics[metric] - limit) / limit
        if metrics[metric] > limit:
            broken.append(f"{metric} {metrics[metric]:g} > budget {limit:g}")
    return values, broken
