"""Numbers the report derives from the trials: hypervolume over time, best-so-far curves,
the capacity gap (KD gain, gap closure), the rungs (learning curves, how well each rung ranks
students as the target budget does, the training they saved) and the agreement of the
search's runs with longer confirmation runs, each with the sentence that states it in words.

Pure functions over a ``StudyView``; no HTML, no figures.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from naskd.front import hypervolume, objective_bounds
from naskd.report.view import StudyView, fmt, number, rung_points
from naskd.results import TrialRecord

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
    objectives, directions = list(view.objectives), view.directions
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
        parts.append(
            f"Averaged over bands of the ratio, students with a ratio between {fmt(low)}× and {fmt(high)}× "
            f"gain most ({_points(gain)} on average, {n} students)."
        )
    if best.kd_gain <= 0:
        parts.append(
            "No student gained from the teacher: the recipe (temperature, alpha, steps) may not suit "
            "students this small or runs this short."
        )
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
    """The search's accuracy (at the target budget) against the confirmation run's (``naskd
    confirm --steps N``) for the confirmed students."""

    numbers: list[int]
    short: list[float]
    long: list[float]
    tau: float | None
    p_value: float | None
    sentence: str


def rank_agreement(view: StudyView) -> RankAgreement | None:
    """Kendall's tau between the search's and the confirmation runs' accuracy; None when no
    trial was confirmed."""
    pairs: list[tuple[int, float, float]] = []
    for r in view.complete:
        s, lo = number(r.metrics.get("accuracy")), number(r.metrics.get("long_accuracy"))
        if s is not None and lo is not None:
            pairs.append((r.number, s, lo))
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
        return (
            f"Only {n} confirmed student(s): too few to measure whether the search's runs rank students "
            "as longer training does." + tail
        )
    if tau is None:
        return (
            f"Kendall's tau is undefined for these {n} students (all search or all confirmation "
            "accuracies are equal)." + tail
        )
    if tau >= 0.7:
        verdict = "the search ranks students almost as the longer runs do; the front's order can be trusted"
    elif tau >= 0.4:
        verdict = "the search ranks students roughly right; close neighbours on the front may swap with longer training"
    elif tau >= 0:
        verdict = (
            "the search ranks students only weakly like the longer runs; confirm candidates with longer "
            "runs before choosing"
        )
    else:
        verdict = (
            "the search ranks students against the longer runs; its target budget is no reliable proxy "
            "here — raise [distill].steps or epochs"
        )
    p = f", p = {p_value:.3g}" if p_value is not None else ""
    return f"Kendall's tau = {tau:.2f} over {n} confirmed students{p}: {verdict}." + tail


# --- rungs and the target budget ---------------------------------------------------------

#: Fewer students than this and Kendall's tau says nothing.
MIN_FOR_TAU = 3


@dataclass(frozen=True)
class Curve:
    """One student's validation accuracy at each rung it reached and, when it was trained to
    it, at the target budget (``steps`` ascending)."""

    number: int
    state: str  # "complete" or "pruned"
    front: bool
    steps: list[int]
    accuracy: list[float]
    rungs: list[int]  # the rung of each point; a complete student's last point (the target) has none

    def at_target(self, i: int) -> bool:
        return i >= len(self.rungs)


def learning_curves(view: StudyView) -> list[Curve]:
    """A curve for every complete or stopped student with rung scores, in trial order; a
    stopped student's ends at the rung where it stopped."""
    fid, front = view.fidelity, set(view.front)
    out = []
    for r in view.records:
        if r.state not in ("complete", "pruned"):
            continue
        points: list[tuple[int, float, int]] = []
        for p in rung_points(r, fid):
            a = number(p.metrics.get("accuracy"))
            if p.steps is not None and a is not None:
                points.append((p.steps, a, p.rung))
        if not points:
            continue
        rungs = [k for _, _, k in points]
        final, acc = r.steps or fid.target_steps, number(r.metrics.get("accuracy"))
        if r.state == "complete" and final is not None and acc is not None and final > points[-1][0]:
            points.append((final, acc, -1))
        out.append(
            Curve(r.number, r.state, r.number in front, [s for s, _, _ in points], [a for _, a, _ in points], rungs)
        )
    return out


@dataclass(frozen=True)
class RungRank:
    """How one rung ranks the students that reached the target, against the target's ranking."""

    rung: int
    steps: int | None
    scored: int  # complete and stopped students scored at this rung
    stopped: int  # students stopped here
    n: int  # students trained to the target that have this rung's accuracy
    tau: float | None  # Kendall's tau, rung accuracy against target accuracy; None: n < 3 or undefined
    p_value: float | None


def rung_agreement(view: StudyView) -> list[RungRank]:
    """One row per rung of the study (and any rung a trial recorded beyond them).

    Only students trained to the target are compared: the stopped ones have no target
    accuracy. That sample is the survivors of the rule, so its accuracies spread less than
    the whole study's, which tends to lower tau; it is still the only honest comparison.
    """
    fid = view.fidelity
    points = {
        r.number: {p.rung: p for p in rung_points(r, fid)} for r in view.records if r.state in ("complete", "pruned")
    }
    seen = {k for by_rung in points.values() for k in by_rung}
    stopped_at = Counter(_stopped_rung(view, r) for r in view.stopped)
    rows = []
    for k in sorted(seen | set(range(len(fid.rungs)))):
        pairs = [
            (number(points[r.number][k].metrics.get("accuracy")), number(r.metrics.get("accuracy")))
            for r in view.complete
            if k in points.get(r.number, {})
        ]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        tau = p_value = None
        if len(pairs) >= MIN_FOR_TAU:
            from scipy.stats import kendalltau  # imported here: scipy is slow to import and rarely needed

            result = kendalltau([a for a, _ in pairs], [b for _, b in pairs])
            tau, p_value = number(result.statistic), number(result.pvalue)
        steps = fid.rung_steps(k) or next((by[k].steps for by in points.values() if k in by and by[k].steps), None)
        rows.append(
            RungRank(k, steps, sum(k in by for by in points.values()), stopped_at.get(k, 0), len(pairs), tau, p_value)
        )
    return rows


def rung_agreement_sentence(view: StudyView, rows: list[RungRank]) -> str:
    """What the rank agreement says about stopping students at the rungs (plain text)."""
    fid = view.fidelity
    # (row, its tau): the rungs where enough students were measured to rank them.
    measured = [(row, row.tau) for row in rows if row.tau is not None]
    if not measured:
        return (
            f"Too few students trained to the target budget have rung scores (at least {MIN_FOR_TAU} are "
            "needed at a rung) to tell whether the rungs rank students as the target budget does."
        )
    each = "; ".join(
        f"{tau:.2f} at {fid.label(row.steps)} (rung {row.rung}, {row.n} students)" for row, tau in measured
    )
    first, first_tau = measured[0]
    if first_tau >= 0.7:
        verdict = (
            f"even at {fid.label(first.steps)} students rank much as they do at the target budget, so "
            "stopping the clearly beaten ones there lost little"
        )
    elif first_tau >= 0.4:
        verdict = (
            f"at {fid.label(first.steps)} students rank roughly as at the target budget: a student close "
            "to the front may have been stopped there; a [fidelity].margin keeps such students going"
        )
    else:
        verdict = (
            f"at {fid.label(first.steps)} the ranking says little about the target budget's, so good "
            "students may have been stopped there; start the rungs later ([fidelity].first_rung) or give "
            "them a [fidelity].margin"
        )
    return (
        f"Kendall's tau between the accuracy at each rung and at the target budget, over the students trained "
        f"to the target: {each}. {verdict[0].upper()}{verdict[1:]}."
    )


@dataclass(frozen=True)
class TrainingSaved:
    """The training the complete and stopped students took, against training all of them to
    the target budget."""

    students: int  # complete and stopped students whose training is known
    stopped: int
    spent: int  # training steps they took
    full: int  # students × target_steps
    target_steps: int
    per_rung: tuple[tuple[int | None, int], ...]  # (rung, students stopped there), rung order; None: unknown rung
    sentence: str

    @property
    def share(self) -> float:
        return self.spent / self.full if self.full else 0.0


def training_saved(view: StudyView) -> TrainingSaved | None:
    """None when the study has no target budget on record or no student was trained.

    A complete student without recorded steps counts the target; a stopped one its last
    rung's steps; a student with neither is left out of both totals.
    """
    target = view.fidelity.target_steps
    if target is None:
        return None
    spent, students, stopped = 0, 0, 0
    where: Counter[int | None] = Counter()
    for r in view.records:
        steps = _trained_steps(view, r)
        if steps is None:
            continue
        spent += steps
        students += 1
        if r.state == "pruned":
            stopped += 1
            where[_stopped_rung(view, r)] += 1
    if not students:
        return None
    full = students * target
    per_rung = tuple(sorted(where.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))
    if stopped:
        fid = view.fidelity
        each = ", ".join(
            f"{n} at "
            + (
                "an unrecorded rung"
                if k is None
                else f"rung {k} ({fid.label(fid.rung_steps(k))})"
                if fid.rung_steps(k)
                else f"rung {k}"
            )
            for k, n in per_rung
        )
        sentence = (
            f"The rungs trained {spent / full:.0%} of the steps that training all {_students(students)} to "
            f"the target budget would have taken ({spent:,} of {full:,} steps): {_students(stopped)} "
            f"stopped at a rung. Stopped: {each}."
        )
    else:
        rule = " (rule off: the rungs only record scores)" if view.fidelity.rule == "off" else ""
        sentence = (
            f"No student stopped at a rung{rule}: all {_students(students)} were trained to the target "
            f"budget ({spent:,} training steps in all)."
        )
    return TrainingSaved(students, stopped, spent, full, target, per_rung, sentence)


def _trained_steps(view: StudyView, record: TrialRecord) -> int | None:
    if record.state == "complete":
        return record.steps or view.fidelity.target_steps
    if record.state == "pruned":
        points = rung_points(record, view.fidelity)
        return record.steps or (points[-1].steps if points else None)
    return None


def _stopped_rung(view: StudyView, record: TrialRecord) -> int | None:
    """The rung a stopped student stopped at: its last rung entry, else the rung of its steps."""
    points = rung_points(record, view.fidelity)
    if points:
        return points[-1].rung
    rungs = view.fidelity.rungs
    return rungs.index(record.steps) if record.steps in rungs else None


def _students(n: int) -> str:
    return f"{n} student" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class TermRow:
    """One front student's named loss terms at the end of its training (weighted; the loss
    minimised is their sum)."""

    number: int
    terms: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.terms.values())

    def share(self, name: str) -> float | None:
        """The term's share of the total loss; None when the student lacks the term, or when a
        negative term or a total at or below zero makes a share meaningless."""
        value, total = self.terms.get(name), self.total
        if value is None or total <= 0 or any(v < 0 for v in self.terms.values()):
            return None
        return value / total


def loss_terms(view: StudyView) -> tuple[list[str], list[TermRow]]:
    """The front's students that recorded loss terms (front order), and every term name in the
    order the terms first appear (the distiller's: ``ce`` first). Non-finite values are dropped."""
    by_number = {r.number: r for r in view.complete}
    rows = []
    for n in view.front:
        record = by_number.get(n)
        raw = record.terms if record is not None and isinstance(record.terms, Mapping) else {}
        terms = {str(k): float(v) for k, v in raw.items() if number(v) is not None}
        if terms:
            rows.append(TermRow(n, terms))
    names = list(dict.fromkeys(name for row in rows for name in row.terms))
    return names, rows


def loss_terms_sentence(names: list[str], rows: list[TermRow]) -> str:
    """The average share of each term over the front's students, largest first (a student
    without a term counts 0 for it, so the shares add up to 100%)."""
    usable = [row for row in rows if any(row.share(name) is not None for name in row.terms)]
    averaged = (
        sorted(
            ((sum(row.share(name) or 0.0 for row in usable) / len(usable), name) for name in names), key=lambda x: -x[0]
        )
        if usable
        else []
    )
    who = f"the {_students(len(usable or rows))} on the front that recorded loss terms"
    if not averaged:
        return (
            f"For {who}, shares of the loss are not shown: a term is negative or the total is not above zero; "
            "the table lists each term's value."
        )
    parts = ", ".join(f"{name} {share:.0%}" for share, name in averaged)
    return f"Averaged over {who}, the loss at the end of training was made of: {parts}."
