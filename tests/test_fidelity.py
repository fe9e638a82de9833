"""The rung rule of ``naskd.fidelity``, driven directly: the rungs of a study, the Pareto-rank
verdict (first arrivals, domination, ties, the cheap end, one objective = ASHA's quantile rule,
the margin, non-finite values) and the gate that records every rung."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from naskd.config import DistillConfig, FidelityConfig
from naskd.fidelity import RungGate, RungPlan, judge, margin_ranks, plan_rungs, with_rung
from naskd.front import pareto_ranks

OBJ = ("accuracy", "params")


def m(accuracy: float, params: float, **extra: float) -> dict[str, float]:
    return {"accuracy": accuracy, "params": params, **extra}


@pytest.mark.parametrize(
    "fidelity, distill, n_train, rungs, target",
    [
        # 27 epochs of 40 steps (4000 rows, batch 100): rungs at 1, 3, 9 epochs.
        (FidelityConfig(first_rung=1), DistillConfig(epochs=27, batch_size=100), 4000, (40, 120, 360), 1080),
        # No first rung given: the target divided by factor**2 (30 // 9 = 3 steps), in steps.
        (FidelityConfig(), DistillConfig(steps=30, epochs=0, batch_size=32), 320, (3, 9, 27), 30),
        (
            FidelityConfig(first_rung=2, reduction_factor=2),
            DistillConfig(epochs=20, batch_size=50),
            100,
            (4, 8, 16, 32),
            40,
        ),
        # A target no rung fits below: single fidelity, whatever the rule.
        (FidelityConfig(), DistillConfig(epochs=1, batch_size=10), 100, (), 10),
    ],
)
def test_rungs_sit_at_first_times_factor_powers_below_the_target(fidelity, distill, n_train, rungs, target):
    plan = plan_rungs(fidelity, distill, n_train)
    assert plan.rungs == rungs and plan.target_steps == target and plan.judge


def test_rule_off_records_rungs_but_never_judges():
    plan = plan_rungs(FidelityConfig(rule="off", first_rung=1), DistillConfig(epochs=9, batch_size=10), 100)
    assert plan.rungs == (10, 30) and not plan.judge
    ledger = _Ledger({0: [m(0.99, 1)] * 5})
    gate = RungGate(plan, OBJ, ledger)
    assert gate([{"rung": 0, "steps": 10, "metrics": m(0.1, 100)}]).goes_on  # dominated by every peer, goes on anyway
    assert ledger.recorded == [[{"rung": 0, "steps": 10, "metrics": m(0.1, 100)}]]


def test_labels_say_epochs_when_whole():
    plan = RungPlan(target_steps=1080, rungs=(40, 120, 360), steps_per_epoch=40)
    assert plan.label(40) == "1 epoch" and plan.label(1080) == "27 epochs" and plan.label(50) == "50 steps"


def test_the_first_at_a_rung_always_goes_on():
    assert judge(m(0.1, 1e6), [], OBJ, 3).goes_on


def test_a_dominated_student_stops_and_a_cheaper_one_goes_on():
    assert not judge(m(0.5, 100), [m(0.9, 100)], OBJ, 2).goes_on  # as cheap, less accurate
    assert judge(m(0.5, 40), [m(0.9, 100)], OBJ, 2).goes_on  # less accurate but cheaper: both on the front
    verdict = judge(m(0.4, 100), [m(0.9, 100), m(0.5, 40)], OBJ, 2)
    assert not verdict.goes_on and "Pareto rank 1 of 3" in verdict.reason and "2 of them" in verdict.reason


def test_the_cheapest_student_always_goes_on():
    # Nobody is cheaper, so nobody can dominate it, however inaccurate it is.
    peers = [m(0.9 + i / 100, 100 + i) for i in range(9)]
    assert judge(m(0.11, 10), peers, OBJ, 3).goes_on


def test_ties_at_the_boundary_rank_all_go_on():
    # Five students on one front: keep = ceil(6 / 3) = 2 ranks' worth, but the cut falls inside
    # rank 0, so every rank-0 student goes on, and the dominated one stops.
    front = [m(0.5 + i / 10, 10 * (i + 1)) for i in range(5)]
    assert all(judge(own, [p for p in front if p is not own] + [m(0.1, 60)], OBJ, 3).goes_on for own in front)
    assert not judge(m(0.1, 60), front, OBJ, 3).goes_on


def test_one_objective_is_ashas_quantile_rule():
    rng = np.random.default_rng(0)
    for _ in range(50):
        values = list(rng.random(int(rng.integers(1, 12))))
        own, peers = values[-1], values[:-1]
        keep = math.ceil(len(values) / 3)
        asha = own >= sorted(values, reverse=True)[keep - 1]
        assert judge({"accuracy": own}, [{"accuracy": p} for p in peers], ("accuracy",), 3).goes_on == asha


def test_margin_gives_the_benefit_of_the_doubt_to_trained_objectives_only():
    peers = [m(0.90, 100)]
    assert not judge(m(0.89, 100), peers, OBJ, 2).goes_on
    assert judge(m(0.89, 100), peers, OBJ, 2, margin=0.02).goes_on  # within the margin: not clearly worse
    verdict = judge(m(0.85, 100), peers, OBJ, 2, margin=0.02)
    assert not verdict.goes_on and "clearly (by the margins)" in verdict.reason
    # Costs get no margin: 1 param dearer and 0.03 less accurate is clearly dominated.
    assert not judge(m(0.92, 101), [m(0.95, 100)], OBJ, 2, margin=0.02).goes_on
    assert judge(m(0.92, 99), [m(0.95, 100)], OBJ, 2, margin=0.02).goes_on


def test_margin_zero_ranks_are_pareto_ranks():
    rng = np.random.default_rng(1)
    points = np.column_stack([rng.random(30), rng.integers(1, 10, 30)])
    assert list(margin_ranks(points, OBJ)) == list(pareto_ranks(points, ["maximize", "minimize"]))


def test_minimised_trained_objectives_and_non_finite_values():
    objectives = ("kl_to_teacher", "params")
    assert not judge({"kl_to_teacher": 2.0, "params": 5}, [{"kl_to_teacher": 1.0, "params": 5}], objectives, 2).goes_on
    assert judge(m(float("nan"), 100), [m(0.9, 10)], OBJ, 2).goes_on  # a diverging student fails by itself
    assert judge(m(0.5, 10), [m(float("nan"), 5)], OBJ, 2).goes_on  # a broken peer counts for nothing


class _Ledger:
    def __init__(self, peers: dict[int, list[dict[str, float]]]) -> None:
        self.by_rung, self.recorded = peers, []

    def peers(self, rung: int) -> list[dict[str, float]]:
        return list(self.by_rung.get(rung, []))

    def record(self, entries: list[dict[str, Any]]) -> None:
        self.recorded.append([dict(e) for e in entries])


def test_gate_records_every_rung_then_judges_against_the_others():
    plan = RungPlan(target_steps=90, rungs=(10, 30), steps_per_epoch=10, reduction_factor=2)
    ledger = _Ledger({0: [m(0.3, 50)], 1: [m(0.95, 50)]})
    gate = RungGate(plan, OBJ, ledger)
    carried = [{"rung": 0, "steps": 10, "metrics": m(0.1, 50)}]
    entries = with_rung(carried, 0, 10, m(0.4, 50))  # a re-judged rung replaces the carried entry
    assert entries == [{"rung": 0, "steps": 10, "metrics": m(0.4, 50)}] and gate(entries).goes_on
    verdict = gate(with_rung(entries, 1, 30, m(0.6, 50)))
    assert not verdict.goes_on and "Pareto rank 1" in verdict.reason
    assert ledger.recorded[-1] == [
        {"rung": 0, "steps": 10, "metrics": m(0.4, 50)},
        {"rung": 1, "steps": 30, "metrics": m(0.6, 50)},
    ]


def test_latency_margin_protects_a_student_within_measurement_noise():
    objectives = ("accuracy", "latency_p50_ms")
    peer = [{"accuracy": 0.95, "latency_p50_ms": 0.095}]
    slower = {"accuracy": 0.90, "latency_p50_ms": 0.100}
    assert not judge(slower, peer, objectives, 2).goes_on  # 5% faster and more accurate: dominated
    assert judge(slower, peer, objectives, 2, latency_margin=0.1).goes_on  # 5% is within 10% noise
    assert not judge({"accuracy": 0.90, "latency_p50_ms": 0.120}, peer, objectives, 2, latency_margin=0.1).goes_on
    # Counts are exact: no latency margin for params.
    assert not judge(m(0.90, 101), [m(0.95, 100)], OBJ, 2, latency_margin=0.5).goes_on
