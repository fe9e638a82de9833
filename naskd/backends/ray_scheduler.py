"""Multi-objective early stopping for Ray sweeps: asynchronous successive halving that ranks
students by Pareto rank over the study's objectives instead of by one metric.

Ray's ``ASHAScheduler`` ranks on one metric. On validation accuracy alone it stops the cheap,
less accurate students first, which are exactly the cheap end of the front a study is meant
to map (``benchmarks/parallel.py``: 19 of 24 students stopped, front of 13 -> 4-5; this
scheduler: 13-15 stopped, front of 8). This scheduler
keeps ASHA's rungs (``grace * factor**k`` epochs, below the full run) and its asynchronous rule
(a trial is judged against the trials that reached the same rung before it, never waits), but
judges with non-dominated sorting over every objective, as MO-ASHA does (Schmucker et al.,
2021): at a rung, a trial goes on when its Pareto rank is among the best ``1 / factor`` of the
ranks recorded there. The cost objectives are known before training, accuracy is the one
reported after the epoch, so a student stops only when others are at least as cheap *and*
already more accurate. Ties within the boundary rank all go on: the rule never stops a
student on the current front of its rung.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from naskd.front import Direction, pareto_ranks


def goes_on(points: Sequence[Sequence[float]], directions: Sequence[Direction], reduction_factor: int) -> bool:
    """Whether the last of ``points`` (the objective vectors recorded at one rung, in arrival
    order) is among the best ``ceil(n / reduction_factor)`` by Pareto rank, ties kept."""
    ranks = pareto_ranks(np.asarray(points, dtype=float), directions)
    keep = math.ceil(len(ranks) / reduction_factor)
    return bool(ranks[-1] <= np.sort(ranks)[keep - 1])


class ParetoASHA(FIFOScheduler):
    """Asynchronous successive halving over several objectives (see the module docstring).

    Args:
        objectives: the result keys to rank on, e.g. the study's objectives.
        directions: ``"maximize"`` or ``"minimize"``, one per objective.
        max_t: the full run, in ``time_attr`` units (epochs, one report each).
        grace_period: the first rung.
        reduction_factor: about ``1 / reduction_factor`` of the trials at a rung go on.
        time_attr: the result key that counts progress.
        final_key: a result key that marks a trial's final result, which is never judged.
    """

    def __init__(self, objectives: Sequence[str], directions: Sequence[Direction], *, max_t: int,
                 grace_period: int, reduction_factor: int, time_attr: str = "training_iteration",
                 final_key: str | None = None) -> None:
        super().__init__()
        if len(objectives) != len(directions) or not objectives:
            raise ValueError("one direction per objective, and at least one objective")
        if grace_period < 1 or reduction_factor < 2:
            raise ValueError(f"grace_period >= 1 and reduction_factor >= 2, got {grace_period}, {reduction_factor}")
        self.objectives, self.directions = tuple(objectives), tuple(directions)
        self.reduction_factor, self.time_attr, self.final_key = reduction_factor, time_attr, final_key
        milestones, t = [], grace_period
        while t < max_t:
            milestones.append(t)
            t *= reduction_factor
        self.rungs: dict[int, list[list[float]]] = {t: [] for t in milestones}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        rung = self.rungs.get(result.get(self.time_attr))  # type: ignore[arg-type]
        if rung is None or (self.final_key and result.get(self.final_key)):
            return TrialScheduler.CONTINUE
        point = [float(result[name]) for name in self.objectives]
        if not all(math.isfinite(v) for v in point):
            return TrialScheduler.CONTINUE  # a diverging trial fails by itself
        rung.append(point)
        return TrialScheduler.CONTINUE if goes_on(rung, self.directions, self.reduction_factor) \
            else TrialScheduler.STOP

    def debug_string(self) -> str:
        return (f"Pareto ASHA over {', '.join(self.objectives)}: rungs at {sorted(self.rungs)}, "
                f"factor {self.reduction_factor}")
