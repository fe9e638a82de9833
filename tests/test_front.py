"""Tests for naskd.front: hand-worked fronts, hypervolumes and knees; seeded property checks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from naskd.front import (
    hypervolume,
    knee,
    non_dominated,
    normalize,
    objective_bounds,
    pareto_ranks,
)

ACC_PARAMS = ("maximize", "minimize")
MIN2 = ("minimize", "minimize")
MIN3 = ("minimize", "minimize", "minimize")


def dominates(a: np.ndarray, b: np.ndarray, directions) -> bool:
    """Reference dominance written independently of the module, for the property tests."""
    no_worse = all(x >= y if d == "maximize" else x <= y for x, y, d in zip(a, b, directions))
    better = any(x > y if d == "maximize" else x < y for x, y, d in zip(a, b, directions))
    return no_worse and better


def hv_inclusion_exclusion(unit: np.ndarray) -> float:
    """Exact union volume of the boxes [p, 1] by inclusion-exclusion (small sets only)."""
    total = 0.0
    for size in range(1, len(unit) + 1):
        for subset in itertools.combinations(range(len(unit)), size):
            corner = unit[list(subset)].max(axis=0)
            total += (-1) ** (size + 1) * float(np.prod(1.0 - corner))
    return total


# accuracy (max), params (min)
POINTS_2D = np.array(
    [
        [0.90, 100],  # 0 front
        [0.80, 50],  # 1 front
        [0.85, 120],  # 2 dominated by 0 -> rank 1
        [0.90, 100],  # 3 duplicate of 0: front too
        [0.70, 50],  # 4 weakly dominated by 1 (same params, lower accuracy) -> rank 1
        [0.95, 300],  # 5 front
        [0.60, 200],  # 6 dominated by 2 and 4 -> rank 2
    ]
)


def test_non_dominated_2d_mixed_directions() -> None:
    front = non_dominated(POINTS_2D, ACC_PARAMS)
    assert front.tolist() == [0, 1, 3, 5]
    assert front.dtype.kind == "i"


def test_non_dominated_3d_mixed_directions() -> None:
    # accuracy (max), params (min), latency (min)
    points = np.array(
        [
            [0.90, 10, 5],  # 0 front
            [0.90, 10, 6],  # 1 dominated by 0 (slower only)
            [0.80, 5, 8],  # 2 front
            [0.95, 20, 4],  # 3 front
            [0.80, 5, 9],  # 4 dominated by 2
            [0.85, 8, 7],  # 5 front: between 0 and 2 on accuracy and params
        ]
    )
    assert non_dominated(points, ("maximize", "minimize", "minimize")).tolist() == [0, 2, 3, 5]
    # Flip accuracy and latency: row 4 (least accurate, fewest params, slowest) beats all.
    assert non_dominated(points, ("minimize", "minimize", "maximize")).tolist() == [4]


def test_dominated_point_never_in_front() -> None:
    points = np.array([[0.5, 0.5], [0.4, 0.4], [0.1, 0.9]])
    assert 0 not in non_dominated(points, MIN2)


def test_non_dominated_empty_and_single() -> None:
    assert non_dominated(np.empty((0, 2)), MIN2).tolist() == []
    assert non_dominated(np.array([]), MIN2).tolist() == []
    assert non_dominated(np.array([[3.0, 4.0]]), MIN2).tolist() == [0]


def test_invalid_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        non_dominated(np.zeros((3, 3)), MIN2)
    with pytest.raises(ValueError, match="direction"):
        non_dominated(np.zeros((3, 2)), ("minimize", "max"))
    with pytest.raises(ValueError, match="finite"):
        non_dominated(np.array([[0.0, np.nan]]), MIN2)


def test_pareto_ranks_hand_worked() -> None:
    assert pareto_ranks(POINTS_2D, ACC_PARAMS).tolist() == [0, 0, 1, 0, 1, 0, 2]
    assert pareto_ranks(np.empty((0, 2)), MIN2).tolist() == []


def test_normalize_maps_best_to_zero_and_clips() -> None:
    points = np.array([[1.0, 0.0], [0.0, 100.0], [0.5, 50.0], [1.2, -10.0], [-0.1, 250.0]])
    unit = normalize(points, ACC_PARAMS, lower=[0.0, 0.0], upper=[1.0, 100.0])
    expected = [[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [0.0, 0.0], [1.0, 1.0]]
    np.testing.assert_allclose(unit, expected)
    with pytest.raises(ValueError, match="upper > lower"):
        normalize(points, ACC_PARAMS, lower=[0.0, 5.0], upper=[1.0, 5.0])


def test_hypervolume_single_point() -> None:
    assert hypervolume(np.array([[0.5, 0.5]]), MIN2, [0, 0], [1, 1]) == pytest.approx(0.25)
    # The same point in mixed units: accuracy 0.5 of [0, 1], params 50 of [0, 100].
    assert hypervolume(np.array([[0.5, 50.0]]), ACC_PARAMS, [0, 0], [1, 100]) == pytest.approx(0.25)
    assert hypervolume(np.array([[0.5, 0.5, 0.5]]), MIN3, [0] * 3, [1] * 3) == pytest.approx(0.125)


def test_hypervolume_two_points_by_hand() -> None:
    # Boxes 0.8 x 0.4 and 0.4 x 0.8 overlap in 0.4 x 0.4: 0.32 + 0.32 - 0.16.
    two = np.array([[0.2, 0.6], [0.6, 0.2]])
    assert hypervolume(two, MIN2, [0, 0], [1, 1]) == pytest.approx(0.48)
    # The same in accuracy/params units.
    mixed = np.array([[0.8, 60.0], [0.4, 20.0]])
    assert hypervolume(mixed, ACC_PARAMS, [0, 0], [1, 100]) == pytest.approx(0.48)
    # 3-D: 0.5^3 + 0.75 * 0.25 * 0.25 - overlap 0.5 * 0.25 * 0.25.
    three = np.array([[0.5, 0.5, 0.5], [0.25, 0.75, 0.75]])
    assert hypervolume(three, MIN3, [0] * 3, [1] * 3) == pytest.approx(0.140625)


def test_hypervolume_monotone_and_ignores_dominated_points() -> None:
    base = np.array([[0.2, 0.6], [0.6, 0.2]])
    bounds = ([0, 0], [1, 1])
    hv = hypervolume(base, MIN2, *bounds)
    better = np.vstack([base, [[0.3, 0.3]]])
    assert hypervolume(better, MIN2, *bounds) > hv
    dominated = np.vstack([base, [[0.7, 0.7]], [[0.6, 0.2]]])  # dominated, and a duplicate
    assert hypervolume(dominated, MIN2, *bounds) == pytest.approx(hv)


def test_hypervolume_empty_and_clipping() -> None:
    assert hypervolume(np.empty((0, 2)), MIN2, [0, 0], [1, 1]) == 0.0
    # Worse than the reference on one objective: contributes nothing.
    assert hypervolume(np.array([[0.9, 150.0]]), ACC_PARAMS, [0, 0], [1, 100]) == 0.0
    # Better than the best bound: clipped to the best, never above 1.
    assert hypervolume(np.array([[1.3, -5.0]]), ACC_PARAMS, [0, 0], [1, 100]) == pytest.approx(1.0)


def test_hypervolume_matches_inclusion_exclusion_on_random_sets() -> None:
    rng = np.random.default_rng(7)
    for k in (2, 3, 4):
        for _ in range(5):
            points = rng.uniform(-0.1, 1.1, size=(6, k))
            directions = tuple(rng.choice(["maximize", "minimize"], size=k))
            lower, upper = [0.0] * k, [1.0] * k
            expected = hv_inclusion_exclusion(normalize(points, directions, lower, upper))
            assert hypervolume(points, directions, lower, upper) == pytest.approx(expected)


CONVEX_FRONT = np.array(
    [
        [0.0, 1.0],  # distance 1
        [0.1, 0.5],  # 0.51
        [0.3, 0.2],  # 0.36 -> knee
        [0.6, 0.1],  # 0.61
        [1.0, 0.0],  # 1
        [0.8, 0.8],  # dominated
    ]
)


def test_knee_on_convex_front() -> None:
    assert knee(CONVEX_FRONT, MIN2) == 2
    # Invariant to units: the front's own range normalises each objective.
    scaled = CONVEX_FRONT * np.array([1000.0, 3.0])
    assert knee(scaled, MIN2) == 2
    # Mixed directions: accuracy = 1 - first objective is maximised.
    as_accuracy = np.column_stack([1.0 - CONVEX_FRONT[:, 0], CONVEX_FRONT[:, 1]])
    assert knee(as_accuracy, ACC_PARAMS) == 2


def test_knee_uses_given_bounds() -> None:
    # A wide range for the first objective makes its differences small: the point best on the
    # second objective wins ((1, 0) -> (0.1, 0) against (0.6, 0.1) -> (0.06, 0.1)).
    assert knee(CONVEX_FRONT, MIN2, lower=[0.0, 0.0], upper=[10.0, 1.0]) == 4
    assert knee(CONVEX_FRONT, MIN2, upper=[10.0, 1.0]) == 4


def test_knee_edge_cases() -> None:
    assert knee(np.empty((0, 2)), MIN2) is None
    assert knee(np.array([[3.0, 4.0]]), MIN2) == 0
    # A dominated row first, then a front of two duplicates: the tie goes to the lower index.
    assert knee(np.array([[5.0, 5.0], [1.0, 2.0], [1.0, 2.0]]), MIN2) == 1


def test_objective_bounds() -> None:
    names = ["accuracy", "params", "latency_p50_ms", "energy_mj", "teacher_agreement", "flops"]
    directions = ["maximize", "minimize", "minimize", "minimize", "maximize", "minimize"]
    teacher = {"accuracy": 0.97, "params": 1000.0, "latency_p50_ms": 2.0, "flops": 0.0}
    observed = np.array(
        [
            [0.9, 100, 0.5, 3.0, 0.95, 10],
            [0.8, 50, 0.2, 5.0, 0.90, 30],
            [0.7, 20, 0.1, 4.0, 0.85, 20],
        ]
    )
    lower, upper = objective_bounds(names, teacher, observed, directions)
    # flops: the teacher's value is not positive, so the observed range is used.
    assert lower == [0.0, 0.0, 0.0, 3.0, 0.0, 10.0]
    assert upper == [1.0, 1000.0, 2.0, 5.0, 1.0, 30.0]


def test_objective_bounds_zero_width_and_empty() -> None:
    names, directions = ["energy_mj", "params"], ["minimize", "minimize"]
    lower, upper = objective_bounds(names, {}, np.array([[4.0, 0.0], [4.0, 0.0]]), directions)
    assert (lower, upper) == ([2.0, -0.5], [6.0, 0.5])
    lower, upper = objective_bounds(names, {"params": 10.0}, np.empty((0, 2)), directions)
    assert (lower, upper) == ([0.0, 0.0], [1.0, 10.0])
    with pytest.raises(ValueError):
        objective_bounds(names, {}, np.zeros((2, 3)), directions)


def test_fixed_bounds_make_hypervolume_comparable() -> None:
    names, directions = ["accuracy", "params"], list(ACC_PARAMS)
    teacher = {"params": 100.0}
    run_a = np.array([[0.8, 60.0]])
    run_b = np.array([[0.8, 60.0], [0.4, 20.0]])
    bounds_a = objective_bounds(names, teacher, run_a, directions)
    bounds_b = objective_bounds(names, teacher, run_b, directions)
    assert bounds_a == bounds_b
    assert hypervolume(run_b, directions, *bounds_b) > hypervolume(run_a, directions, *bounds_a)


@pytest.mark.parametrize("seed", range(4))
def test_front_and_ranks_properties_on_random_points(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 2 + seed % 3
    # Rounding creates ties and duplicates, the cases a sloppy comparison gets wrong.
    points = np.round(rng.uniform(size=(80, k)), 1)
    directions = tuple(rng.choice(["maximize", "minimize"], size=k))

    front = set(non_dominated(points, directions).tolist())
    assert front
    for i in range(len(points)):
        beaten = any(dominates(points[j], points[i], directions) for j in range(len(points)))
        if i in front:
            assert not beaten
        else:
            assert any(dominates(points[j], points[i], directions) for j in front)

    ranks = pareto_ranks(points, directions)
    assert set(np.flatnonzero(ranks == 0).tolist()) == front
    for i, r in enumerate(ranks):
        for j, s in enumerate(ranks):
            if s >= r:
                assert not dominates(points[j], points[i], directions)
        if r > 0:
            previous = np.flatnonzero(ranks == r - 1)
            assert any(dominates(points[j], points[i], directions) for j in previous)
