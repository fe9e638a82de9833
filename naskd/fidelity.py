"""Multi-fidelity search: where a student is scored on its way to the study's target budget
(the rungs), the one rule that says whether it goes on, and its saved training state, so a
student that goes on continues its own run instead of starting again.

The rule is asynchronous successive halving (ASHA, Li et al. 2020) judged by Pareto rank over
the study's objectives, as MO-ASHA does (Schmucker et al. 2021). When a student reaches a rung
it is compared with every student recorded at that rung so far, never waiting for more: it
goes on when its Pareto rank is among the best ``ceil(n / reduction_factor)`` ranks there,
ties kept. Cost objectives (params, FLOPs, latency) are known before training; only the
trained ones (accuracy, teacher agreement) are rung values, and ``margin`` gives those the
benefit of the doubt: another student counts as better only when it is more accurate by more
than the margin. Measured latency is noisy too (the same student measures differently from one
moment to the next on a shared CPU), so ``latency_margin`` does the same for it, relatively:
another student counts as faster only when it is faster by more than that share. Parameter and
FLOP counts are exact. A student stops only when others at least as cheap are already clearly
more accurate, so the cheap end of the front, which no cheaper student can dominate, always
goes on. ``benchmarks/fidelity.py`` compares this rule's variants.

Everything here is framework-free: the backends supply where rung records live (a
``RungLedger``: Optuna trial attributes in the study storage, so every worker sees them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from naskd.config import DistillConfig, FidelityConfig
from naskd.metrics import direction, names_where

log = logging.getLogger(__name__)

#: Trained objectives on the unit scale, to which the margin applies.
MARGIN_METRICS = frozenset(names_where(lambda m: m.rung_margin == "accuracy"))
#: Measured (noisy) cost objectives, to which the relative latency margin applies.
LATENCY_METRICS = frozenset(names_where(lambda m: m.rung_margin == "latency"))


@dataclass(frozen=True)
class RungPlan:
    """Where one study's students are scored, in training steps.

    ``rungs`` are ascending step counts below ``target_steps``. ``judge`` is False for
    ``rule = "off"``: the rung figures are recorded (learning curves) and nobody stops.
    """

    target_steps: int
    rungs: tuple[int, ...]
    steps_per_epoch: int
    reduction_factor: int = 3
    margin: float = 0.0
    judge: bool = True
    latency_margin: float = 0.0

    def label(self, steps: int) -> str:
        return budget_label(steps, self.steps_per_epoch)

    def verdict(
        self, metrics: dict[str, float], peers: Sequence[dict[str, float]], objectives: Sequence[str]
    ) -> Decision:
        """The rule with this plan's factor and margins; always go on when it does not judge."""
        if not self.judge:
            return Decision(True)
        return judge(metrics, peers, objectives, self.reduction_factor, self.margin, self.latency_margin)


def budget_label(steps: int, steps_per_epoch: int | None) -> str:
    """``"3 epochs"`` when ``steps`` is a whole number of epochs, else ``"120 steps"``."""
    if steps_per_epoch and steps % steps_per_epoch == 0:
        epochs = steps // steps_per_epoch
        return f"{epochs:,} epoch{'s' if epochs != 1 else ''}"
    return f"{steps:,} steps"


def plan_rungs(fidelity: FidelityConfig, recipe: DistillConfig, n_train: int) -> RungPlan:
    """The rungs of a study: ``first_rung * factor**k`` below the target, in the unit of the
    target (``[distill].steps`` when given, else epochs of ``n_train`` samples)."""
    from naskd.distill import steps_per_epoch, total_steps

    per_epoch = steps_per_epoch(recipe, n_train)
    target = total_steps(recipe, n_train)
    unit = 1 if recipe.steps else per_epoch
    budget = target // unit
    factor = fidelity.reduction_factor
    first = fidelity.first_rung or max(1, budget // factor**2)
    rungs, at = [], first
    while at < budget:
        rungs.append(at * unit)
        at *= factor
    return RungPlan(
        target,
        tuple(rungs),
        per_epoch,
        factor,
        fidelity.margin,
        judge=fidelity.rule == "pareto",
        latency_margin=fidelity.latency_margin,
    )


@dataclass(frozen=True)
class Decision:
    goes_on: bool
    reason: str = ""


def judge(
    own: dict[str, float],
    peers: Sequence[dict[str, float]],
    objectives: Sequence[str],
    reduction_factor: int,
    margin: float = 0.0,
    latency_margin: float = 0.0,
) -> Decision:
    """Whether a student with metrics ``own`` at a rung goes on, given the metrics ``peers``
    recorded there by other students (see the module docstring).

    A peer dominates ``own`` when it is no worse in every objective and better in one, after
    ``own``'s trained objectives (``MARGIN_METRICS``) are moved ``margin`` toward better and its
    latencies (``LATENCY_METRICS``) are cut by the share ``latency_margin``.
    Peers are ranked the same way among themselves. A non-finite value never stops anyone:
    a diverging student fails by itself.
    """
    rows = [own, *peers]
    points = np.array([[float(r[name]) for name in objectives] for r in rows], dtype=float)
    if not np.all(np.isfinite(points[0])):
        return Decision(True)
    points = points[np.all(np.isfinite(points), axis=1)]
    ranks = margin_ranks(points, objectives, margin, latency_margin)
    keep = math.ceil(len(ranks) / reduction_factor)
    cut = np.sort(ranks)[keep - 1]
    if ranks[0] <= cut:
        return Decision(True)
    better = int(np.sum(_dominators(points, objectives, margin, latency_margin)[0]))
    clearly = " clearly (by the margins)" if margin or latency_margin else ""
    return Decision(
        False,
        f"Pareto rank {ranks[0]} of {len(ranks)} students at this rung (going on: rank <= {cut}); "
        f"{better} of them at least as cheap and more accurate{clearly}",
    )


def _dominators(
    points: np.ndarray, objectives: Sequence[str], margin: float, latency_margin: float = 0.0
) -> np.ndarray:
    """``d[i, j]``: row ``j`` dominates row ``i`` as ``judge`` says (``i`` given the margins)."""
    signs = np.array([1.0 if direction(o) == "minimize" else -1.0 for o in objectives])
    costs = points * signs  # lower is better everywhere
    shift = np.array([margin if o in MARGIN_METRICS else 0.0 for o in objectives])
    scale = np.array([1.0 - latency_margin if o in LATENCY_METRICS else 1.0 for o in objectives])
    optimistic = costs * scale - shift  # each row as judged: its noisy values given the benefit of the doubt
    no_worse = np.all(costs[None, :, :] <= optimistic[:, None, :], axis=2)
    better = np.any(costs[None, :, :] < optimistic[:, None, :], axis=2)
    d = no_worse & better
    np.fill_diagonal(d, False)
    return d


def margin_ranks(
    points: np.ndarray, objectives: Sequence[str], margin: float = 0.0, latency_margin: float = 0.0
) -> np.ndarray:
    """Non-domination ranks (0 = not dominated) under the margin rule of ``judge``; with both
    margins 0 the usual Pareto ranks (``naskd.front.pareto_ranks``)."""
    d = _dominators(points, objectives, margin, latency_margin)
    ranks = np.full(len(points), -1, dtype=np.int64)
    left = np.ones(len(points), dtype=bool)
    rank = 0
    while left.any():
        layer = left & ~np.any(d & left[None, :], axis=1)
        if not layer.any():  # a margin can make the relation cyclic: the rest share the last rank
            layer = left.copy()
        ranks[layer] = rank
        left &= ~layer
        rank += 1
    return ranks


class RungLedger(Protocol):
    """Where a study's rung records live (the backend's side)."""

    def peers(self, rung: int) -> list[dict[str, float]]:
        """Metrics recorded at ``rung`` by the study's other students."""
        ...

    def record(self, entries: list[dict[str, Any]]) -> None:
        """This student's rung entries so far (each ``{"rung", "steps", "metrics"}``)."""
        ...


def with_rung(
    entries: Sequence[dict[str, Any]], rung: int, steps: int, metrics: dict[str, float]
) -> list[dict[str, Any]]:
    """``entries`` up to ``rung`` (exclusive), then this rung's ``{"rung", "steps", "metrics"}``:
    a rung judged again replaces its entry and any after it."""
    return [e for e in entries if e["rung"] < rung] + [{"rung": rung, "steps": steps, "metrics": dict(metrics)}]


@dataclass
class RungGate:
    """What ``naskd.trial.evaluate`` asks at every rung, given the student's rung entries so
    far (the last is this rung's): record them and say whether it goes on."""

    plan: RungPlan
    objectives: tuple[str, ...]
    ledger: RungLedger

    def __call__(self, entries: list[dict[str, Any]]) -> Decision:
        own = entries[-1]
        peers = self.ledger.peers(own["rung"]) if self.plan.judge else []
        self.ledger.record(entries)
        return self.plan.verdict(own["metrics"], peers, self.objectives)


class CheckpointFile:
    """A student's training state at its latest rung, in one file (write then rename), read
    back with ``weights_only=True``; a file that cannot be read is reported and not used."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def save(self, state: dict[str, Any]) -> None:
        import io

        import torch

        from naskd.cache import atomic_write_bytes

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.path, buf.getvalue())

    def load(self) -> dict[str, Any] | None:
        import torch

        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # damaged or foreign: never continue from it
            log.warning("%s: cannot be read (%s); the student starts again", self.path, type(exc).__name__)
            return None
        if not isinstance(state, dict) or not {"step", "modules", "optimizer", "points", "terms"} <= set(state):
            log.warning("%s: not a naskd training state; the student starts again", self.path)
            return None
        return state

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
