"""The study's rung rule as a Ray Tune scheduler: every trial reports at each rung of the
study's plan, and ``RungScheduler`` stops it there or lets it go on by ``naskd.fidelity.judge``
against the rung records in the study storage, exactly as the Optuna backend's workers do; so
a study can move between the backends, or run on both at once, and be judged alike.

Tune calls the scheduler, then (for a trial that goes on) the search algorithm with the same
result, in one thread: ``NaskdSearch`` records the rung entry right after the decision, so the
next decision already sees it. A stopped trial's entry is recorded when Tune completes it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from naskd.backends.optuna_backend import rung_peers
from naskd.fidelity import RungPlan

if TYPE_CHECKING:
    from naskd.backends.ray_backend import NaskdSearch


class RungScheduler(FIFOScheduler):
    """Stop trials at rungs by the study's rule (FIFO for ``rule = "off"``).

    Args:
        search: the sweep's search algorithm, whose study holds the rung records.
        plan: the study's rungs (``StudyContext.plan``).
        objectives: the study's objectives, ranked at each rung.
    """

    def __init__(self, search: NaskdSearch, plan: RungPlan, objectives: tuple[str, ...]) -> None:
        super().__init__()
        self.search, self.plan, self.objectives = search, plan, objectives

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        from naskd.backends.ray_backend import METRICS_KEY, NUMBER_KEY, RUNG_KEY, VERSION_KEY

        rung = result.get(RUNG_KEY)
        if rung is None or not self.plan.judge:
            return TrialScheduler.CONTINUE
        number = trial.config.get(NUMBER_KEY)
        decision = self.plan.verdict(
            json.loads(result[METRICS_KEY]),
            rung_peers(self.search.study, int(rung), exclude=number, version=int(trial.config.get(VERSION_KEY, 1))),
            self.objectives,
        )
        if decision.goes_on:
            return TrialScheduler.CONTINUE
        optuna_trial = self.search.optuna_trial(trial.trial_id)
        if optuna_trial is not None:
            optuna_trial.set_user_attr(
                "reason",
                f"stopped at rung {rung} ({self.plan.label(self.plan.rungs[int(rung)])} "
                f"of {self.plan.label(self.plan.target_steps)}): {decision.reason}",
            )
        return TrialScheduler.STOP

    def debug_string(self) -> str:
        return (
            f"naskd rungs at {list(self.plan.rungs)} of {self.plan.target_steps} steps, "
            f"factor {self.plan.reduction_factor}, {'judged' if self.plan.judge else 'recorded only'}"
        )
