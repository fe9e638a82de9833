"""Numbers the report derives from the trials: hypervolume over time, best-so-far curves,
the capacity gap (KD gain, gap closure) and the agreement of short and long runs, each with
the sentence that states it in words.

Pure functions over a ``StudyView``; no HTML, no figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from naskd.front import hypervolume, objective_bounds
from naskd.report.view import StudyView, fmt, number

#: Fewer students than this and a per-bin average says nothing: name the single best instead.
MIN_FOR_BINS = 8
#: Log-spaced bins of the capacity ratio used to say where distillation helps most.
RATIO_BINS = 4


def hypervolume_history(view: StudyView) -> tuple[list[int], list[float]]:
    """The front's normalised hypervolume after each finished trial, in trial-number order.

    The bounds are fixed once from all completed trials (``objective_bounds``, the same call
    ``front_summary`` makes), so the last value equals the summary's hypervolume and the
    curve only rises.
    """
    objectives, directions = list(view.objectives), list(view.directions)
    usable = {r.number for r in view.complete if all(number(r.metrics.get(o)) is not None for o in objectives)}
    rows = [[float(r.metrics[o]) for o in objectives] for r in view.complete if r.number in usable]
    points = np.array(rows, dtype=float).reshape(-1, len(objectives))
    lower, upper = objective_bounds(objectives, view.teacher, points, directions)
    numbers: list[int] = []
    values: list[float] = []
    seen: list[list[float]] = []
    current = 0.0
    for r in view.records:
        if r.state == "running":
            continue
        if r.number in usable:
            seen.append([float(r.metrics[o]) for o in objectives])
            current = hypervolume(np.array(seen), directions, lower, upper)
        numbers.append(r.number)
        values.append(current)
    return numbers, values


def best_so_far(values: list[float], direction: str) -> list[float]:
    """Running best of ``values`` (max for a maximised objective, min otherwise)."""
    pick = max if direction == "maximize" else min
    out: list[float] = []
    for v in values:
        out.append(v if not out else pick(out[-1], v))
    return out


@dataclass(frozen=True)
class GapRow:
    """One completed student with a scratch baseline."""

    number: int
    capacity_ratio: float
    accuracy: float
    scratch: float
    kd_gain: float  # distilled − scratch accuracy
    gap_closure: float | None  # (distilled − scratch) / (teacher − scratch); None when teacher <= scratch


def gap_rows(view: StudyView) -> list[GapRow]:
    """Completed students that have ``scratch_accuracy`` (and a capacity ratio and accuracy)."""
    teacher = view.teacher_value("accuracy")
    rows = []
    for r in view.complete:
        ratio, acc, scratch = (number(r.metrics.get(k)) for k in ("capacity_ratio", "accuracy", "scratch_accuracy"))
        if ratio is None or acc is None or scratch is None or ratio <= 0:
            continue
        # Closure is undefined when the teacher is no better than the scratch student: nothing to close.
        closure = (acc - scratch) / (teacher - scratch) if teacher is not None and teacher > scratch else None
        rows.append(GapRow(r.number, ratio, acc, scratch, acc - scratch, closure))
    return rows


def kd_gain_sentence(rows: list[GapRow]) -> str:
    """Where distillation helps most, in words (plain text)."""
    if not rows:
        return "No student has a scratch baseline."
    best = max(rows, key=lambda g: (g.kd_gain, -g.number))
    helped = sum(g.kd_gain > 0 for g in rows)
    hurt = sum(g.kd_gain < 0 for g in rows)
    mean = float(np.mean([g.kd_gain for g in rows]))
    parts = [
        f"Distillation beat training from scratch for {helped} of {len(rows)} students "
        f"(hurt {hurt}); mean KD gain {_points(mean)}.",
        f"It helped most at capacity ratio {fmt(best.capacity_ratio)}× "
        f"(trial {best.number}: {fmt(best.accuracy)} distilled vs {fmt(best.scratch)} from scratch, "
        f"{_points(best.kd_gain)}).",
    ]
    band = _best_band(rows)
    if band is not None:
        low, high, gain, n = band
        parts.append(f"Averaged over bands of the ratio, students with a ratio between {fmt(low)}× and {fmt(high)}× "
                     f"gain most ({_points(gain)} on average, {n} students).")
    if best.kd_gain <= 0:
        parts.append("No student gained from the teacher: the recipe (temperature, alpha, steps) may not suit "
                     "students this small or runs this short.")
    return " ".join(parts)


def _best_band(rows: list[GapRow]) -> tuple[float, float, float, int] | None:
    """The log-spaced capacity-ratio band with the highest mean KD gain, when there are
    enough students for an average to mean something."""
    if len(rows) < MIN_FOR_BINS:
        return None
    logs = np.log([g.capacity_ratio for g in rows])
    if logs.max() - logs.min() < 1e-9:
        return None
    edges = np.linspace(logs.min(), logs.max(), RATIO_BINS + 1)
    which = np.clip(np.searchsorted(edges, logs, side="right") - 1, 0, RATIO_BINS - 1)
    best = None
    for b in range(RATIO_BINS):
        gains = [g.kd_gain for g, w in zip(rows, which) if w == b]
        if len(gains) < 2:  # one student is an anecdote, not a band
            continue
        mean = float(np.mean(gains))
        if best is None or mean > best[2]:
            best = (float(math.exp(edges[b])), float(math.exp(edges[b + 1])), mean, len(gains))
    return best


def _points(delta: float) -> str:
    """An accuracy difference in percentage points, signed."""
    return f"{delta * 100:+.1f} points"


@dataclass(frozen=True)
class RankAgreement:
    """Short-run against long-run accuracy of the confirmed students."""

    numbers: list[int]
    short: list[float]
    long: list[float]
    tau: float | None
    p_value: float | None
    sentence: str


def rank_agreement(view: StudyView) -> RankAgreement | None:
    """Kendall's tau between short-run and long-run accuracy; None when no trial was confirmed."""
    pairs = [(r.number, number(r.metrics.get("accuracy")), number(r.metrics.get("long_accuracy")))
             for r in view.complete]
    pairs = [(n, s, lo) for n, s, lo in pairs if s is not None and lo is not None]
    if not pairs:
        return None
    numbers = [p[0] for p in pairs]
    short = [p[1] for p in pairs]
    long = [p[2] for p in pairs]
    tau = p_value = None
    if len(pairs) >= 3:
        from scipy.stats import kendalltau  # imported here: scipy is slow to import and rarely needed

        result = kendalltau(short, long)
        tau = number(result.statistic)
        p_value = number(result.pvalue)
    return RankAgreement(numbers, short, long, tau, p_value, _tau_sentence(len(pairs), tau, p_value, short, long))


def _tau_sentence(n: int, tau: float | None, p_value: float | None, short: list[float], long: list[float]) -> str:
    change = float(np.mean(np.subtract(long, short)))
    tail = f" Longer training changed accuracy by {_points(change)} on average."
    if n < 3:
        return (f"Only {n} confirmed student(s): too few to measure whether the short runs rank students "
                "correctly." + tail)
    if tau is None:
        return (f"Kendall's tau is undefined for these {n} students (all short-run or all long-run accuracies "
                "are equal)." + tail)
    if tau >= 0.7:
        verdict = "the short runs rank students almost as the long runs do; the front's order can be trusted"
    elif tau >= 0.4:
        verdict = ("the short runs rank students roughly right; close neighbours on the front may swap with "
                   "longer training")
    elif tau >= 0:
        verdict = ("the short runs rank students only weakly like the long runs; confirm candidates with longer "
                   "runs before choosing")
    else:
        verdict = ("the short runs rank students against the long runs; they are not a reliable proxy here — "
                   "raise [distill].steps or epochs")
    p = f", p = {p_value:.3g}" if p_value is not None else ""
    return f"Kendall's tau = {tau:.2f} over {n} confirmed students{p}: {verdict}." + tail
