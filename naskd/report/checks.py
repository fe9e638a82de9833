"""Warnings a reader of the report must see before trusting the front.

Each check is a pure function of the study; ``findings`` returns those that hold, most
serious first. The text is plain (the page escapes it); ``key`` is stable so tests and
readers can find a warning by it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from naskd.metrics import BUDGETS
from naskd.report.view import StudyView, fmt, label, number

#: Above this share of failed trials the front is built from a biased sample of the space.
FAILED_SHARE = 0.2
#: Below this many completed trials a front says more about chance than about the space
#: (Optuna's TPE, for one, samples its first 10 trials at random).
MIN_COMPLETE = 10
#: A budget is "reached" when some measured student costs at least this share of it.
BUDGET_REACH = 0.5

_BUDGET_METRICS = BUDGETS


@dataclass(frozen=True)
class Finding:
    key: str
    title: str
    detail: str


def findings(view: StudyView) -> list[Finding]:
    """Every warning that holds for this study."""
    out: list[Finding] = []
    for check in (_all_infeasible, _many_failed, _too_few, _teacher_below_student, _budget_not_reached, _incomplete):
        out.extend(check(view))
    return out


def _all_infeasible(view: StudyView) -> list[Finding]:
    n = view.counts.get("infeasible", 0)
    if n == 0 or n != view.finished:
        return []
    return [
        Finding(
            "all-infeasible",
            f"Every trial was infeasible ({n} of {n})",
            "No sampled student fit the cost budget, so none was trained and there is no front. Loosen "
            "[cost].max_latency_ms / max_params / max_flops or shrink the search space.",
        )
    ]


def _many_failed(view: StudyView) -> list[Finding]:
    failed = [r for r in view.records if r.state == "failed"]
    if not view.finished or len(failed) / view.finished <= FAILED_SHARE:
        return []
    reasons = Counter(" ".join(str(r.reason or "no reason recorded").split())[:200] for r in failed)
    common = "; ".join(f"{count}× {reason}" for reason, count in reasons.most_common(3))
    return [
        Finding(
            "many-failed",
            f"{len(failed)} of {view.finished} trials failed ({len(failed) / view.finished:.0%})",
            f"More than {FAILED_SHARE:.0%} of trials failed, so the front is drawn from the part of the "
            f"space that happens to work. Most common reasons: {common}.",
        )
    ]


def _too_few(view: StudyView) -> list[Finding]:
    n = len(view.complete)
    if n >= MIN_COMPLETE:
        return []
    return [
        Finding(
            "too-few-trials",
            f"Only {n} completed trial(s) (trained to the target budget)",
            f"A front from fewer than {MIN_COMPLETE} completed trials says more about chance than about "
            "the search space. Run more trials (`naskd search ... --trials N` resumes the study).",
        )
    ]


def _teacher_below_student(view: StudyView) -> list[Finding]:
    teacher = view.teacher_value("accuracy")
    scored = [(a, r.number) for r in view.complete if (a := number(r.metrics.get("accuracy"))) is not None]
    if teacher is None or not scored:
        return []
    best, at = max(scored, key=lambda s: (s[0], -s[1]))
    if best <= teacher:
        return []
    return [
        Finding(
            "teacher-below-student",
            f"The teacher ({fmt(teacher)}) is less accurate than the best student ({fmt(best)}, trial {at})",
            "A student beating its teacher usually means the teacher is under-trained or the wrong "
            "checkpoint was loaded; distilling from it pulls students toward its mistakes. Check the "
            "teacher (more [teacher].epochs, or its checkpoint) before trusting the front.",
        )
    ]


def _budget_not_reached(view: StudyView) -> list[Finding]:
    budgets = view.facts.get("budgets")
    if not isinstance(budgets, Mapping):
        return []
    out = []
    for key, metric in _BUDGET_METRICS.items():
        limit = number(budgets.get(key))
        # Stopped students count: their cost was measured before any training.
        measured = [
            v
            for v in (
                number(r.metrics.get(metric)) for r in view.records if r.state in ("complete", "infeasible", "pruned")
            )
            if v is not None
        ]
        if limit is None or limit <= 0 or not measured:
            continue
        largest = max(measured)
        if largest >= BUDGET_REACH * limit:
            continue
        out.append(
            Finding(
                "budget-not-reached",
                f"Budget never reached: [cost].{key} = {fmt(limit, metric)}, "
                f"largest student {fmt(largest, metric)} ({largest / limit:.0%})",
                f"No student came within {BUDGET_REACH:.0%} of the {label(metric)} budget: the search "
                "space holds only students far below it, so better students that fit the budget were "
                "never tried. Widen the space (more depth or width) or lower the budget.",
            )
        )
    return out


def _incomplete(view: StudyView) -> list[Finding]:
    """Only when the facts record the requested trial count (``trials``)."""
    wanted = number(view.facts.get("trials"))
    if wanted is None or view.finished >= wanted:
        return []
    return [
        Finding(
            "study-incomplete",
            f"The study holds {view.finished} of the {int(wanted)} requested trials",
            "The search stopped early (interrupted or failed workers). Run the same `naskd search` "
            "command again to resume.",
        )
    ]
