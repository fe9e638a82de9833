"""Pareto math over plain arrays: non-dominated set, ranks, normalisation, hypervolume, knee.

Conventions:
- ``points`` is an ``(n, k)`` float array, one row per trial, one column per objective;
  ``directions[j]`` says whether column ``j`` is maximised or minimised. Values must be finite:
  drop failed or infeasible trials before calling.
- Dominance is the usual weak one: ``a`` dominates ``b`` when ``a`` is no worse in every
  objective and strictly better in at least one. Equal rows do not dominate each other, so
  duplicates share a front.
- Normalised space maps every objective to ``[0, 1]`` with 0 = best and 1 = worst, whatever its
  direction; the hypervolume's reference point is the all-ones corner of that box, so a
  hypervolume is a fraction of the unit box in ``[0, 1]``.
- Functions return indices into ``points`` (never copies of rows), so callers keep their
  own mapping from rows to trials.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import moocore
import numpy as np

from naskd.metrics import names_where

__all__ = [
    "Direction",
    "hypervolume",
    "knee",
    "non_dominated",
    "normalize",
    "objective_bounds",
    "pareto_ranks",
]

Direction = Literal["maximize", "minimize"]

#: Objectives whose natural range is [0, 1] whatever the study.
UNIT_OBJECTIVES = frozenset(names_where(lambda m: m.objective and m.unit_range))
#: Cost objectives bounded by the teacher's own cost: a student costing more is worthless.
TEACHER_BOUNDED_OBJECTIVES = frozenset(names_where(lambda m: m.objective and m.teacher_bounded))


def non_dominated(points: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Indices of the rows of ``points`` that no other row dominates.

    Args:
        points: ``(n, k)`` objective values; ``n`` may be 0.
        directions: one direction per column.

    Returns:
        Sorted ``intp`` indices of the non-dominated rows (duplicates all kept); empty for n = 0.

    Raises:
        ValueError: a shape that does not match ``directions``, an unknown direction, or a
            non-finite value.
    """
    costs = _as_costs(points, directions)
    return np.flatnonzero(_non_dominated_mask(costs))


def pareto_ranks(points: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Non-domination rank of every row: 0 = the front, 1 = the front once rank 0 is removed, ...

    Args:
        points: ``(n, k)`` objective values.
        directions: one direction per column.

    Returns:
        An ``(n,)`` integer array of ranks.

    Raises:
        ValueError: as ``non_dominated``.
    """
    costs = _as_costs(points, directions)
    ranks = np.full(len(costs), -1, dtype=np.int64)
    remaining = np.arange(len(costs))
    rank = 0
    # Peeling is O(fronts * n^2 * k): fine for study sizes (hundreds to a few thousand trials).
    while remaining.size:
        on_front = _non_dominated_mask(costs[remaining])
        ranks[remaining[on_front]] = rank
        remaining = remaining[~on_front]
        rank += 1
    return ranks


def normalize(
    points: np.ndarray,
    directions: Sequence[Direction],
    lower: Sequence[float],
    upper: Sequence[float],
) -> np.ndarray:
    """Map every objective onto ``[0, 1]`` with 0 = best and 1 = worst.

    A minimised objective maps ``lower -> 0, upper -> 1``; a maximised one ``upper -> 0,
    lower -> 1``. Values outside ``[lower, upper]`` are clipped to the nearer end.

    Args:
        points: ``(n, k)`` objective values.
        directions: one direction per column.
        lower: per-objective lower bound, in the objective's own units.
        upper: per-objective upper bound; must be > ``lower``.

    Returns:
        A new ``(n, k)`` float array.

    Raises:
        ValueError: as ``non_dominated``, or bounds of the wrong length or with upper <= lower.
    """
    costs = _as_costs(points, directions)
    low, high = _bounds(lower, upper, len(directions))
    if np.any(high <= low):
        raise ValueError(f"expected upper > lower for every objective, got {lower=} {upper=}")
    return _scale(costs, _signs(directions), low, high)


def hypervolume(
    points: np.ndarray,
    directions: Sequence[Direction],
    lower: Sequence[float],
    upper: Sequence[float],
) -> float:
    """Fraction of the normalised unit box dominated by ``points`` (reference = all ones).

    Points are normalised with ``normalize`` first, so the result lies in ``[0, 1]`` and is
    comparable between runs that share ``lower``/``upper`` (see ``objective_bounds``). A point
    at the worst end of any objective adds nothing. The volume is exact in any dimension
    (moocore's dimension-sweep algorithms by Fonseca, Paquete, López-Ibáñez and Guerreiro).

    Args:
        points: ``(n, k)`` objective values; dominated rows are allowed and add nothing.
        directions: one direction per column.
        lower, upper: the fixed normalisation bounds.

    Returns:
        The hypervolume; 0.0 for no points.

    Raises:
        ValueError: as ``normalize``.
    """
    unit = normalize(points, directions, lower, upper)
    if len(unit) == 0:
        return 0.0
    return float(moocore.hypervolume(unit, ref=np.ones(unit.shape[1])))


def knee(
    points: np.ndarray,
    directions: Sequence[Direction],
    lower: Sequence[float] | None = None,
    upper: Sequence[float] | None = None,
) -> int | None:
    """Index of the knee: the front point closest (Euclidean) to the ideal point.

    The front is normalised to 0 = best, 1 = worst per objective, over the front's own
    range (so every objective weighs the same whatever its units) unless ``lower``/``upper``
    are given, which replace the front's own minimum/maximum. An objective on which the whole
    front agrees maps to 0 and does not influence the choice. Ties go to the lowest index.

    Args:
        points: ``(n, k)`` objective values.
        directions: one direction per column.
        lower, upper: optional normalisation bounds (each may be given alone).

    Returns:
        An index into ``points``, or None when ``points`` is empty.

    Raises:
        ValueError: as ``non_dominated``, or bounds of the wrong length or with upper < lower.
    """
    costs = _as_costs(points, directions)
    if len(costs) == 0:
        return None
    signs = _signs(directions)
    front = np.flatnonzero(_non_dominated_mask(costs))
    values = costs[front] * signs  # back to the objectives' own units
    low = values.min(axis=0) if lower is None else _vector(lower, len(signs), "lower")
    high = values.max(axis=0) if upper is None else _vector(upper, len(signs), "upper")
    if np.any(high < low):
        raise ValueError(f"expected upper >= lower for every objective, got {low=} {high=}")
    unit = _scale(costs[front], signs, low, high)
    distances = np.linalg.norm(unit, axis=1)
    return int(front[np.argmin(distances)])


def objective_bounds(
    names: Sequence[str],
    teacher: Mapping[str, float],
    observed: np.ndarray,
    directions: Sequence[Direction],
) -> tuple[list[float], list[float]]:
    """The fixed ``(lower, upper)`` normalisation bounds of a study's objectives.

    - ``accuracy`` and ``teacher_agreement``: ``[0, 1]``.
    - ``params``, ``flops``, ``latency_p50_ms``, ``latency_p95_ms`` when ``teacher`` has a
      positive value for them: ``[0, teacher value]``. A student that costs as much as the
      teacher or more sits at the worst end and adds no hypervolume.
    - anything else: ``[min, max]`` of the observed column (NaNs ignored). A zero-width range
      ``v`` becomes ``[v - |v|/2, v + |v|/2]`` (``[-0.5, 0.5]`` for 0), so the point lands in the
      middle; with no observation at all the range is ``[0, 1]``.

    Bounds anchored to fixed facts (the unit interval, the teacher's cost) do not move as trials
    arrive, so the hypervolumes of two runs of the same study, or of one run over time, are
    comparable. Only the fallback for other objectives depends on the observed values.
    The bounds do not depend on ``directions``; it is checked against ``names`` and ``observed``.

    Args:
        names: objective names, one per column of ``observed``.
        teacher: the teacher's measured values by name (e.g. its cost and accuracy).
        observed: ``(n, len(names))`` values seen so far; ``n`` may be 0.
        directions: one direction per objective.

    Returns:
        ``(lower, upper)`` as lists of floats with ``upper > lower`` everywhere.

    Raises:
        ValueError: lengths of ``names``, ``directions`` and ``observed``'s columns disagree, or
            an unknown direction.
    """
    _signs(directions)
    if len(names) != len(directions):
        raise ValueError(f"expected one direction per name, got {len(names)} names and {len(directions)} directions")
    values = np.asarray(observed, dtype=np.float64)
    if values.size == 0:
        values = values.reshape(0, len(names))
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ValueError(f"expected observed of shape (n, {len(names)}), got {values.shape}")

    lower: list[float] = []
    upper: list[float] = []
    for j, name in enumerate(names):
        if name in UNIT_OBJECTIVES:
            low, high = 0.0, 1.0
        elif name in TEACHER_BOUNDED_OBJECTIVES and float(teacher.get(name, 0.0)) > 0.0:
            low, high = 0.0, float(teacher[name])
        else:
            low, high = _observed_range(values[:, j])
        lower.append(low)
        upper.append(high)
    return lower, upper


def _observed_range(column: np.ndarray) -> tuple[float, float]:
    """``[min, max]`` of the finite values of ``column``, widened to a non-zero width."""
    finite = column[np.isfinite(column)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    if high > low:
        return low, high
    half = abs(low) / 2 if low != 0.0 else 0.5
    return low - half, low + half


def _signs(directions: Sequence[Direction]) -> np.ndarray:
    """+1 for minimised, -1 for maximised objectives: multiplying turns everything into a cost."""
    signs = []
    for d in directions:
        if d == "minimize":
            signs.append(1.0)
        elif d == "maximize":
            signs.append(-1.0)
        else:
            raise ValueError(f"expected direction 'maximize' or 'minimize', got {d!r}")
    return np.asarray(signs)


def _as_costs(points: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Validate ``points`` and return them as an ``(n, k)`` array in which lower is better."""
    signs = _signs(directions)
    values = np.asarray(points, dtype=np.float64)
    if values.size == 0:
        # Accept `np.array([])` as well as `np.empty((0, k))` for "no trials yet".
        return values.reshape(0, len(signs))
    if values.ndim != 2 or values.shape[1] != len(signs):
        raise ValueError(f"expected points of shape (n, {len(signs)}) to match directions, got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("points must be finite; drop failed or infeasible trials first")
    return values * signs


def _non_dominated_mask(costs: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of a minimisation array that no other row dominates."""
    keep = np.ones(len(costs), dtype=bool)
    for i, row in enumerate(costs):
        # Row i is dominated if some row is <= everywhere and < somewhere; a duplicate of row i
        # fails the strict test, so duplicates survive together.
        no_worse = np.all(costs <= row, axis=1)
        better = np.any(costs < row, axis=1)
        if np.any(no_worse & better):
            keep[i] = False
    return keep


def _scale(costs: np.ndarray, signs: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map minimisation-form ``costs`` to [0, 1] (0 = best) given bounds in original units.

    A zero-width range maps to 0: when every point agrees on an objective, none is worse.
    """
    # In cost form a maximised objective's best end is -high and its worst end is -low.
    best = np.where(signs > 0, low, -high)
    width = high - low
    safe = np.where(width > 0, width, 1.0)
    return np.clip((costs - best) / safe, 0.0, 1.0)


def _bounds(lower: Sequence[float], upper: Sequence[float], k: int) -> tuple[np.ndarray, np.ndarray]:
    """``lower`` and ``upper`` as float vectors of length ``k``."""
    return _vector(lower, k, "lower"), _vector(upper, k, "upper")


def _vector(values: Sequence[float], k: int, name: str) -> np.ndarray:
    """``values`` as a float vector of length ``k``, or a ValueError naming ``name``."""
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (k,):
        raise ValueError(f"expected {name} to have {k} values, got shape {array.shape}")
    return array
