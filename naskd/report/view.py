"""The study as the report sees it: facts, records and summary normalised once (the rungs and
the target budget among them), plus the formatting every part of the page shares (numbers,
specs, training budgets, hover text).

Everything here is plain data and plain strings; nothing builds HTML elements or figures.
Strings meant for plotly are HTML-escaped here (``plot_text``), because plotly renders a
subset of HTML tags in hover text and tick labels.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from naskd.config import SearchConfig
from naskd.fidelity import budget_label
from naskd.front import Direction, pareto_ranks
from naskd.metrics import DIRECTIONS, METRICS, label, names_where
from naskd.results import DIAGNOSTIC_COLUMNS, FRONT_COLUMNS, TrialRecord

#: The objectives a study optimises when its file names none; the 3-D view always uses them.
DEFAULT_OBJECTIVES = SearchConfig().objectives
#: Metrics the diagnostics add to completed trials (scratch baselines, confirmation runs),
#: shown after FRONT_COLUMNS.
DIAGNOSTIC_METRICS = DIAGNOSTIC_COLUMNS
#: Readable axis and column labels (``label``); any other metric shows its own name.
LABELS = {name: m.label for name, m in METRICS.items()}
_INT_METRICS = frozenset(names_where(lambda m: m.format == "count"))
#: Shares in [0, 1] read best with a fixed number of decimals, so a column lines up.
_SHARE_METRICS = frozenset(names_where(lambda m: m.format == "share"))


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, None, NaN, inf, not a number)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def fmt(value: Any, metric: str | None = None) -> str:
    """A value for people: counted metrics (params, FLOPs) with thousands separators, shares
    (accuracy, agreement) to 4 decimals, other floats to 4 significant digits, lists and
    dicts item by item, anything else as text ("–" for missing)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if metric in _INT_METRICS and number(value) is not None and float(value).is_integer():
        return f"{int(value):,}"  # separators only for counts: "[1,024, 8]" would misread in a spec
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if metric in _SHARE_METRICS and number(value) is not None:
        return f"{float(value):.4f}"
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def table(mapping: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``mapping[key]`` when it is a table, else an empty one: stored facts and specs come from
    storage written by any naskd version, so a part may be missing or of another shape."""
    value = mapping.get(key)
    return value if isinstance(value, Mapping) else {}


def entries(mapping: Mapping[str, Any], key: str) -> Sequence[Any]:
    """``mapping[key]`` when it is a list, else an empty one (as ``table``)."""
    value = mapping.get(key)
    return value if isinstance(value, (list, tuple)) else []


def plot_text(value: Any) -> str:
    """Text for plotly (hover, tick labels): escaped so a user's ``<b>`` or ``<script>`` shows
    as typed; plotly turns the entities back into characters when it draws."""
    return html.escape(value if isinstance(value, str) else fmt(value), quote=False)


def slug(name: str) -> str:
    """The study name made safe for a path, as ``StudyConfig.slug`` does."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"


def arch_text(spec: Mapping[str, Any]) -> str:
    """``mlp(depth=2, width=[16, 32])``: the architecture on one line, prefixed ``int8`` for
    an int8 student (without a shrink student's teacher fingerprint)."""
    arch = table(spec, "arch")
    inner = ", ".join(f"{k}={fmt(v)}" for k, v in arch.items() if k != "teacher")
    prefix = "int8 " if spec.get("precision") == "int8" else ""
    return f"{prefix}{spec.get('family', '?')}({inner})"


def recipe_text(spec: Mapping[str, Any]) -> str:
    recipe = table(spec, "recipe")
    return ", ".join(f"{k}={fmt(v)}" for k, v in recipe.items())


def scheme_text(spec: Mapping[str, Any]) -> str:
    """``offline``, ``mutual``, ``self`` or ``born_again, 3 generations``: how the student was
    distilled (a spec from before naskd recorded a scheme is offline)."""
    recipe = table(spec, "recipe")
    scheme = str(recipe.get("scheme") or "offline")
    if scheme == "born_again" and recipe.get("generations") is not None:
        gens = recipe["generations"]
        return f"born_again, {fmt(gens)} generation{'' if gens == 1 else 's'}"
    return scheme


def spec_lines(spec: Mapping[str, Any]) -> list[str]:
    """The whole spec as short lines: family and architecture first, recipe in groups of four
    so a hover label stays narrow, then any other key (e.g. a user family's builder)."""
    lines = [arch_text(spec)]
    recipe = table(spec, "recipe")
    items = [f"{k}={fmt(v)}" for k, v in recipe.items()]
    for i in range(0, len(items), 4):
        lines.append(("recipe: " if i == 0 else "        ") + ", ".join(items[i : i + 4]))
    lines.extend(f"{k}: {fmt(v)}" for k, v in spec.items() if k not in ("family", "arch", "recipe"))
    return lines


def _count(value: Any) -> int | None:
    """``value`` as a positive whole number (a step count), or None."""
    x = number(value)
    return int(x) if x is not None and x > 0 and x.is_integer() else None


@dataclass(frozen=True)
class Fidelity:
    """The study's rungs and target budget, in training steps (``facts["fidelity"]``). A study
    recorded before naskd kept them has no ``target_steps`` and no ``rungs``."""

    rule: str | None = None
    target_steps: int | None = None
    rungs: tuple[int, ...] = ()  # ascending step counts below the target; index = rung number
    steps_per_epoch: int | None = None
    reduction_factor: int | None = None
    margin: float | None = None

    @property
    def in_epochs(self) -> bool:
        """Whether every rung and the target are whole epochs (axes then count epochs)."""
        budgets = [*self.rungs, *([self.target_steps] if self.target_steps else [])]
        per = self.steps_per_epoch
        if not per or not budgets:
            return False
        return all(b % per == 0 for b in budgets)

    def rung_steps(self, rung: int) -> int | None:
        return self.rungs[rung] if 0 <= rung < len(self.rungs) else None

    def label(self, steps: int | None) -> str:
        """``"3 epochs"`` or ``"120 steps"``, worded as the trials' reasons word it."""
        return "an unrecorded budget" if steps is None else budget_label(steps, self.steps_per_epoch)

    def long_label(self, steps: int | None) -> str:
        """``"3 epochs (120 training steps)"``; just the steps when they are no whole epochs."""
        short = self.label(steps)
        return f"{short} ({steps:,} training steps)" if steps is not None and "epoch" in short else short


@dataclass(frozen=True)
class RungPoint:
    """One student's scores at one rung."""

    rung: int
    steps: int | None
    metrics: Mapping[str, Any]


def rung_points(record: TrialRecord, fidelity: Fidelity | None = None) -> list[RungPoint]:
    """``record.rungs`` checked and in rung order (one entry per rung, the last recorded
    wins); an entry without a usable rung number or metrics is skipped, a missing step count
    is taken from the study's rungs when known."""
    found: dict[int, RungPoint] = {}
    for entry in record.rungs or ():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("metrics"), Mapping):
            continue
        rung = number(entry.get("rung"))
        if rung is None or rung < 0 or not rung.is_integer():
            continue
        steps = _count(entry.get("steps"))
        if steps is None and fidelity is not None:
            steps = fidelity.rung_steps(int(rung))
        found[int(rung)] = RungPoint(int(rung), steps, entry["metrics"])
    return [found[k] for k in sorted(found)]


@dataclass(frozen=True)
class StudyView:
    """One study, normalised for the report.

    ``ranks`` maps the number of every completed trial to its non-domination rank over the
    study's objectives (0 = the front); ``front`` and ``knee`` come from the summary.
    """

    name: str
    objectives: tuple[str, ...]
    directions: tuple[Direction, ...]
    teacher: dict[str, float]
    records: tuple[TrialRecord, ...]
    complete: tuple[TrialRecord, ...]
    ranks: dict[int, int]
    front: tuple[int, ...]
    knee: int | None
    counts: dict[str, int]
    metrics: tuple[str, ...]
    hypervolume: float | None
    fidelity: Fidelity = field(default_factory=Fidelity)
    facts: Mapping[str, Any] = field(repr=False, default_factory=dict)
    #: lifelong studies: each teacher version's front summary (``naskd.versions.version_fronts``)
    versions: tuple[Mapping[str, Any], ...] = ()
    _hovers: dict[int, str] = field(repr=False, compare=False, default_factory=dict)  # four figures share them

    @property
    def finished(self) -> int:
        """Trials that ended, whatever their state (running ones excluded)."""
        return sum(self.counts.get(k, 0) for k in ("complete", "infeasible", "failed", "pruned"))

    def teacher_value(self, metric: str) -> float | None:
        return number(self.teacher.get(metric))

    @property
    def teachers(self) -> list[Mapping[str, Any]]:
        """Each teacher's own figures when the study distils from several (``teacher["teachers"]``:
        the top-level accuracy is then the ensemble's, the costs the largest teacher's); [] for one."""
        teacher = table(self.facts, "teacher")
        listed = teacher.get("teachers")
        return [t for t in listed if isinstance(t, Mapping)] if isinstance(listed, (list, tuple)) else []

    def values(self, records: Sequence[TrialRecord], metric: str) -> list[float | None]:
        return [number(r.metrics.get(metric)) for r in records]

    @property
    def stopped(self) -> tuple[TrialRecord, ...]:
        """Students stopped at a rung (pruned): their metrics are rung values, never on the front."""
        return tuple(r for r in self.records if r.state == "pruned")

    def has(self, metric: str) -> list[TrialRecord]:
        """The completed trials that recorded ``metric``."""
        return [r for r in self.complete if number(r.metrics.get(metric)) is not None]

    def hover(self, record: TrialRecord) -> str:
        """Hover label: trial number, state and rank, every metric, the whole spec, the reason."""
        if record.number not in self._hovers:
            self._hovers[record.number] = self._hover(record)
        return self._hovers[record.number]

    def _hover(self, record: TrialRecord) -> str:
        state = "stopped at a rung" if record.state == "pruned" else record.state
        head = f"<b>trial {record.number}</b> · {plot_text(state)}"
        if record.number in self.ranks:
            rank = self.ranks[record.number]
            head += f" · Pareto rank {rank}" + (" (front)" if rank == 0 else "")
        if record.number == self.knee:
            head += " · knee"
        lines = [head]
        budget = self._budget_line(record)
        if budget:
            lines.append(plot_text(budget))
        shown = [m for m in self.metrics if m in record.metrics]
        shown += sorted(k for k in record.metrics if k not in shown)
        lines += [f"{plot_text(label(m))}: {plot_text(fmt(record.metrics[m], m))}" for m in shown]
        lines += [plot_text(line) for line in spec_lines(record.spec)]
        if record.reason:
            lines.append("reason: " + plot_text(_clip(record.reason, 160)))
        return "<br>".join(lines)

    def _budget_line(self, record: TrialRecord) -> str:
        """How much training the metrics of ``record`` come from: the target budget, or the rung
        where it stopped (then every metric shown is that rung's)."""
        fid = self.fidelity
        if record.state == "pruned":
            points = rung_points(record, fid)
            steps = record.steps or (points[-1].steps if points else None)
            where = f"stopped at rung {points[-1].rung}" if points else "stopped at a rung"
            of = f" of {fid.label(fid.target_steps)}" if fid.target_steps else ""
            return f"{where}: {fid.long_label(steps)}{of}; every metric below is that rung's"
        if record.state == "complete" and (record.steps or fid.target_steps):
            steps = record.steps or fid.target_steps
            return (
                f"trained to the target budget: {fid.long_label(steps)}"
                if steps == fid.target_steps
                else f"trained {fid.long_label(steps)}"
            )
        return ""


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _teacher(facts: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, float]:
    """The teacher's numbers: the stored facts, completed by the summary; Nones dropped so the
    front math (which reads ``teacher.get(name, 0)``) never sees them."""
    merged: dict[str, Any] = {}
    for source in (summary.get("teacher"), facts.get("teacher")):
        if isinstance(source, Mapping):
            merged.update({k: v for k, v in source.items() if v is not None})
    return {k: float(v) for k, v in merged.items() if number(v) is not None}


def _fidelity(facts: Mapping[str, Any], summary: Mapping[str, Any], records: Sequence[TrialRecord]) -> Fidelity:
    """The rungs and target from the facts; the target from the summary and the rungs from the
    trials' own entries when the facts lack them."""
    raw = table(facts, "fidelity")
    target = _count(raw.get("target_steps")) or _count(summary.get("target_steps"))
    listed = entries(raw, "rungs")
    rungs = tuple(s for s in (_count(v) for v in listed) if s is not None)
    if not rungs:  # read them off the trials: rung k's steps, when every rung 0..n-1 is seen
        seen = {p.rung: p.steps for r in records for p in rung_points(r) if p.steps is not None}
        if seen and sorted(seen) == list(range(len(seen))):
            rungs = tuple(seen[k] for k in range(len(seen)))
    rule = raw.get("rule")
    return Fidelity(
        rule=str(rule) if rule is not None else None,
        target_steps=target,
        rungs=rungs,
        steps_per_epoch=_count(raw.get("steps_per_epoch")),
        reduction_factor=_count(raw.get("reduction_factor")),
        margin=number(raw.get("margin")),
    )


def study_view(facts: Mapping[str, Any], records: Sequence[TrialRecord], summary: Mapping[str, Any]) -> StudyView:
    """Normalise the three inputs of a report; missing keys get safe defaults."""
    facts = facts if isinstance(facts, Mapping) else {}
    summary = summary if isinstance(summary, Mapping) else {}
    stored = [o.get("name") for o in summary.get("objectives", []) if isinstance(o, Mapping)]
    objectives = tuple(facts.get("objectives") or stored or DEFAULT_OBJECTIVES)
    known = {o.get("name"): o.get("direction") for o in summary.get("objectives", []) if isinstance(o, Mapping)}
    directions: tuple[Direction, ...] = tuple(
        "minimize" if (known.get(o) or DIRECTIONS.get(o)) == "minimize" else "maximize" for o in objectives
    )
    listed = tuple(v for v in summary.get("versions") or () if isinstance(v, Mapping))
    if listed:  # lifelong: the figures are the current teacher version's; the others get a table
        latest = int(listed[-1].get("version", 1))
        records = [r for r in records if r.teacher_version == latest]
    ordered = tuple(sorted(records, key=lambda r: r.number))
    complete = tuple(r for r in ordered if r.state == "complete")

    # Ranks only over trials with every objective finite: the front math rejects NaNs.
    rankable = [r for r in complete if all(number(r.metrics.get(o)) is not None for o in objectives)]
    ranks: dict[int, int] = {}
    if rankable:
        points = np.array([[float(r.metrics[o]) for o in objectives] for r in rankable])
        ranks = {r.number: int(k) for r, k in zip(rankable, pareto_ranks(points, list(directions)))}

    counts = {k: 0 for k in ("complete", "infeasible", "failed", "pruned", "running")}
    for r in ordered:
        counts[r.state] = counts.get(r.state, 0) + 1
    seen = {k for r in complete for k in r.metrics}
    metrics = tuple(m for m in (*FRONT_COLUMNS, *DIAGNOSTIC_METRICS) if m in seen or m in FRONT_COLUMNS)
    metrics += tuple(sorted(seen - set(metrics)))
    front = tuple(e["number"] for e in summary.get("front", []) if isinstance(e, Mapping) and "number" in e)
    return StudyView(
        name=str(facts.get("name") or summary.get("study") or "study"),
        objectives=objectives,
        directions=directions,
        teacher=_teacher(facts, summary),
        records=ordered,
        complete=complete,
        ranks=ranks,
        front=front,
        knee=summary.get("knee"),
        counts=counts,
        metrics=metrics,
        hypervolume=number(summary.get("hypervolume")),
        fidelity=_fidelity(facts, summary, ordered),
        facts=facts,
        versions=listed,
    )
