"""A study's results as plain records, and the front summary built from them.

Backends turn their own trial objects into ``TrialRecord``s; everything downstream (the
front, tables, JSON, CSV, export) reads only these, never a framework's types.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from naskd.front import hypervolume, knee, non_dominated, objective_bounds
from naskd.metrics import DIAGNOSTIC_METRICS, TRIAL_METRICS, direction, names_where
from naskd.terminal import printable

State = Literal["complete", "infeasible", "failed", "pruned", "running"]

#: Metric columns of the front table, in order: what every complete trial records.
FRONT_COLUMNS = TRIAL_METRICS
#: Metrics that diagnostics add to a trial (scratch baseline, confirmation run), when recorded.
DIAGNOSTIC_COLUMNS = DIAGNOSTIC_METRICS
#: The teacher's own figures kept in the front summary.
TEACHER_SUMMARY = names_where(lambda m: m.teacher_summary)
#: Each teacher's figures kept in the front summary when a study distils from several.
TEACHERS_SUMMARY = ("name", "weight", *dict.fromkeys((*TEACHER_SUMMARY, "latency_p95_ms")), "source", "fingerprint")


@dataclass(frozen=True)
class TrialRecord:
    """One trial. ``metrics`` are measured after ``steps`` training steps: the target budget
    for a complete trial, the rung where it stopped for a pruned one; ``rungs`` holds
    ``{"rung", "steps", "metrics"}`` for every rung the student reached."""

    number: int
    state: State
    spec: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    steps: int | None = None  # None: recorded before naskd kept it
    rungs: tuple[dict[str, Any], ...] = ()
    terms: dict[str, float] = field(default_factory=dict)  # each loss term's weighted value at the end
    teacher_version: int = 1  # which of the study's teacher versions it learned from (naskd.versions)
    continued_from: int | None = None  # lifelong: the earlier version's trial whose student it continued


@dataclass(frozen=True)
class StudyFacts:
    """What a study stores about itself besides its trials."""

    name: str
    objectives: tuple[str, ...]
    teacher: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    fidelity: dict[str, Any] = field(default_factory=dict)  # rule, target_steps, rungs, steps_per_epoch, ...


def counts(records: Sequence[TrialRecord]) -> dict[str, int]:
    out = {"complete": 0, "infeasible": 0, "failed": 0, "pruned": 0}
    for r in records:
        if r.state in out:
            out[r.state] += 1
    return out


def front_summary(facts: StudyFacts, records: Sequence[TrialRecord]) -> dict[str, Any]:
    """The front of a study as one JSON-able object.

    The front is the non-dominated set of completed, feasible trials over the study's
    objectives: students trained to the target budget (``target_steps``); a student stopped at
    a rung is never on it. The hypervolume is normalised with a fixed reference (see
    ``naskd.front.objective_bounds``: accuracy in [0, 1], costs in [0, teacher's cost]) so two
    runs of the same study compare; the knee is the front point closest to the ideal point.
    Each member carries ``steps`` (the training behind its metrics), ``rungs`` (its metrics
    at every rung it passed) and ``loss_terms`` (each named loss term's weighted value at the
    end of its training; ``{}`` for a study from before naskd recorded them). With several
    teachers the teacher block adds ``teachers``, each teacher's own figures.
    """
    directions = [direction(o) for o in facts.objectives]
    done = [r for r in records if r.state == "complete"]
    points = np.array([[r.metrics[o] for o in facts.objectives] for r in done], dtype=float).reshape(
        -1, len(directions)
    )
    idx = non_dominated(points, directions) if len(done) else np.array([], dtype=int)
    lower, upper = objective_bounds(facts.objectives, facts.teacher, points, directions)
    hv = hypervolume(points[idx], directions, lower, upper) if len(idx) else 0.0
    knee_at = knee(points[idx], directions) if len(idx) else None
    front = sorted((done[i] for i in idx), key=lambda r: (-r.metrics.get("accuracy", 0.0), r.number))
    return {
        "study": facts.name,
        "objectives": [{"name": o, "direction": d} for o, d in zip(facts.objectives, directions)],
        "teacher": _teacher_summary(facts.teacher),
        "target_steps": facts.fidelity.get("target_steps"),
        "counts": counts(records),
        "hypervolume": hv,
        "knee": done[idx[knee_at]].number if knee_at is not None else None,
        "front": [
            {
                "number": r.number,
                "spec": r.spec,
                "metrics": {
                    k: r.metrics.get(k)
                    for k in (*FRONT_COLUMNS, *DIAGNOSTIC_COLUMNS)
                    if k in FRONT_COLUMNS or k in r.metrics
                },
                "steps": r.steps,
                "loss_terms": dict(r.terms or {}),
                "rungs": [
                    {"rung": e["rung"], "steps": e["steps"], "metrics": {k: e["metrics"].get(k) for k in FRONT_COLUMNS}}
                    for e in r.rungs
                ],
                **({"continued_from": r.continued_from} if r.continued_from is not None else {}),
            }
            for r in front
        ],
    }


def _teacher_summary(teacher: dict[str, Any]) -> dict[str, Any]:
    """The teacher's figures (``TEACHER_SUMMARY``); with several teachers the accuracy is the
    ensemble's, the costs the largest teacher's, and ``teachers`` lists each one's own figures."""
    out = {k: teacher.get(k) for k in TEACHER_SUMMARY}
    listed = teacher.get("teachers")
    if isinstance(listed, (list, tuple)) and listed:
        out["teachers"] = [{k: t.get(k) for k in TEACHERS_SUMMARY} for t in listed if isinstance(t, Mapping)]
    return out


def rung_progress(fidelity: dict[str, Any], records: Sequence[TrialRecord]) -> tuple[str, str]:
    """For a progress bar: ``("rungs 1/3/9/27ep", "40>14>8>6")``, how many students reached
    each rung and the target (complete); empty strings when the study has no rungs."""
    rungs, per_epoch, target = (
        fidelity.get("rungs") or [],
        fidelity.get("steps_per_epoch"),
        fidelity.get("target_steps"),
    )
    if not rungs or not target:
        return "", ""
    budgets = [*rungs, target]
    epochs = bool(per_epoch) and all(b % per_epoch == 0 for b in budgets)
    label = "rungs " + "/".join(str(b // per_epoch if epochs else b) for b in budgets) + ("ep" if epochs else "st")
    reached = [sum(1 for r in records if any(e.get("rung") == k for e in r.rungs)) for k in range(len(rungs))]
    reached.append(sum(1 for r in records if r.state == "complete"))
    return label, ">".join(map(str, reached))


def _fmt(value: Any) -> str:
    if value is None:  # not measured (no real validation data: no accuracy)
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def arch_summary(spec: dict[str, Any]) -> str:
    """``cnn1d(stages=2, ...)``, prefixed ``int8`` for an int8 student (a shrink student's
    teacher fingerprint is left out: it is the study's teacher)."""
    arch = ", ".join(
        f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in spec.get("arch", {}).items() if k != "teacher"
    )
    prefix = "int8 " if spec.get("precision") == "int8" else ""
    return f"{prefix}{spec.get('family', '?')}({arch})"


def render_table(summary: dict[str, Any]) -> str:
    """The front as an aligned text table, teacher first, knee marked with '*'; scratch and
    long-run accuracy columns appear once diagnostics have recorded them."""
    extra = [k for k in ("scratch_accuracy", "long_accuracy") if any(k in e["metrics"] for e in summary["front"])]
    cols = [
        "trial",
        "accuracy",
        "agreement",
        "latency_p50_ms",
        "params",
        "flops",
        "model_bytes",
        "capacity_ratio",
        *extra,
        "spec",
    ]
    t = summary["teacher"]
    rows = [
        [
            "teacher",
            _fmt(t.get("accuracy")),
            "-",
            _fmt(t.get("latency_p50_ms")),
            _fmt(t.get("params")),
            _fmt(t.get("flops")),
            _fmt(t.get("model_bytes", "-")),
            "1",
            *("-" for _ in extra),
            "ensemble" if t.get("teachers") else "",
        ]
    ]
    # Several teachers: a row each under the ensemble's (capacity ratios are against the largest).
    largest = t.get("params") or 1
    rows += [
        [
            f"  {each.get('name')}",
            _fmt(each.get("accuracy")),
            "-",
            _fmt(each.get("latency_p50_ms")),
            _fmt(each.get("params")),
            _fmt(each.get("flops")),
            _fmt(each.get("model_bytes", "-")),
            _fmt(largest / max(1, each.get("params") or 1)),
            *("-" for _ in extra),
            f"weight {_fmt(each.get('weight'))}",
        ]
        for each in t.get("teachers") or ()
    ]
    for entry in summary["front"]:
        m = entry["metrics"]
        mark = "*" if entry["number"] == summary["knee"] else ""
        agreement = m.get("teacher_agreement")
        rows.append(
            [
                f"{entry['number']}{mark}",
                _fmt(m.get("accuracy")),
                _fmt(agreement if agreement is not None else m.get("synthetic_agreement")),
                _fmt(m["latency_p50_ms"]),
                _fmt(m["params"]),
                _fmt(m["flops"]),
                _fmt(m.get("model_bytes", "-")),
                _fmt(m["capacity_ratio"]),
                *(_fmt(m[k]) if k in m else "-" for k in extra),
                arch_summary(entry["spec"]),
            ]
        )
    rows = [[printable(cell) for cell in row] for row in rows]  # a spec or name is user text
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    c = summary["counts"]
    budget = f" at the target budget of {summary['target_steps']} training steps" if summary.get("target_steps") else ""
    head = (
        f"study {printable(summary['study'])}: {len(summary['front'])} students on the front{budget} "
        f"({c['complete']} complete, {c['infeasible']} infeasible, {c['failed']} failed, "
        f"{c['pruned']} stopped at a rung); hypervolume {summary['hypervolume']:.4f}; * = knee"
    )
    lines = [head, line(cols), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    if summary["front"] and all(e["metrics"].get("accuracy") is None for e in summary["front"]):
        lines.append(
            "accuracy: unavailable (no real validation data); agreement: with the teacher on held-out "
            "synthesized inputs"
        )
    for v in summary.get("versions") or ():  # lifelong: every teacher version's front, in one line each
        teacher = v.get("teacher") or {}
        members = ", ".join(str(e["number"]) for e in v.get("front") or ()) or "empty"
        lines.append(
            printable(
                f"teacher version {v['version']} (accuracy {_fmt(teacher.get('accuracy'))}, from "
                f"trial {v.get('first_trial')}): front {members}; hypervolume "
                f"{v.get('hypervolume', 0.0):.4f}"
            )
        )
    return "\n".join(lines)


def render_csv(summary: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    # One column per loss term any front student recorded (``loss_<term>``), empty where absent.
    terms = list(dict.fromkeys(t for e in summary["front"] for t in e.get("loss_terms") or {}))
    writer.writerow(["number", "knee", *FRONT_COLUMNS, "steps", *(f"loss_{t}" for t in terms), "spec"])
    for entry in summary["front"]:
        own = entry.get("loss_terms") or {}
        writer.writerow(
            [
                entry["number"],
                int(entry["number"] == summary["knee"]),
                *(entry["metrics"][k] for k in FRONT_COLUMNS),
                entry.get("steps"),
                *(own.get(t, "") for t in terms),
                json.dumps(entry["spec"], sort_keys=True),
            ]
        )
    return buf.getvalue()


def render_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=False)
