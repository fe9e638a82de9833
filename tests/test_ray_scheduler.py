"""``ParetoASHA``'s decisions, driven directly: its rungs, the Pareto-rank rule against Ray's
ASHA rule on one metric, ties, final results and non-finite values. The scheduler in a real
sweep is tested in test_ray.py."""

from __future__ import annotations

import os

import pytest

if not os.environ.get("CI"):  # in CI a missing Ray fails the run rather than skipping it
    pytest.importorskip("ray.tune", reason="Ray Tune is part of the dev extra: pip install -e '.[dev]'")

from ray.tune.schedulers import TrialScheduler  # noqa: E402

from naskd.backends.ray_scheduler import ParetoASHA, goes_on  # noqa: E402

MAX_MIN = ("maximize", "minimize")  # accuracy, params
GO, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def test_the_first_at_a_rung_always_goes_on():
    assert goes_on([[0.1, 1e6]], MAX_MIN, 2)


def test_a_dominated_student_stops_and_a_cheaper_one_goes_on():
    assert not goes_on([[0.9, 100], [0.5, 100]], MAX_MIN, 2)  # as cheap, less accurate
    assert goes_on([[0.9, 100], [0.5, 40]], MAX_MIN, 2)  # less accurate but cheaper: both on the front
    assert not goes_on([[0.9, 100], [0.5, 40], [0.4, 100]], MAX_MIN, 2)


def test_ties_at_the_boundary_rank_all_go_on():
    # Four points on one front: keep = ceil(4 / 3) = 2, but rank 0 is the boundary, so all go on.
    front = [[0.9, 400], [0.8, 300], [0.7, 200], [0.6, 100]]
    assert goes_on(front, MAX_MIN, 3)


def test_one_objective_keeps_the_best_fraction_like_asha():
    seen = [[0.5], [0.7], [0.6], [0.9]]
    assert goes_on(seen, ("maximize",), 2)  # 0.9 is the best of four
    assert not goes_on([*seen, [0.55]], ("maximize",), 2)  # keep 3 of 5: 0.9, 0.7, 0.6
    assert goes_on([*seen, [0.65]], ("maximize",), 2)


def test_rungs_and_decisions():
    scheduler = ParetoASHA(["accuracy", "params"], MAX_MIN, max_t=6, grace_period=1, reduction_factor=2,
                           final_key="final")
    assert sorted(scheduler.rungs) == [1, 2, 4]

    def report(it: int, accuracy: float, params: float, **extra) -> str:
        return scheduler.on_trial_result(None, None, {"training_iteration": it, "accuracy": accuracy,
                                                      "params": params, **extra})

    assert report(1, 0.75, 172) == GO
    assert report(1, 0.51, 46) == GO  # cheaper: ASHA on accuracy alone would stop it
    assert report(1, 0.21, 172) == STOP  # as costly as the first, far less accurate
    assert report(3, 0.01, 172) == GO  # not a rung
    assert report(6, 0.01, 999, final=True) == GO  # a final result is never judged
    assert report(2, float("nan"), 172) == GO and scheduler.rungs[2] == []  # diverging: fails by itself
    assert [len(scheduler.rungs[t]) for t in (1, 2, 4)] == [3, 0, 0]


@pytest.mark.parametrize("kwargs", [dict(grace_period=0, reduction_factor=2), dict(grace_period=1, reduction_factor=1)])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        ParetoASHA(["accuracy"], ["maximize"], max_t=4, **kwargs)
