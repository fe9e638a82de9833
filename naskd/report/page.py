"""The report page: header, warnings, sections with figures and their explanations, the
table of front students, and the study's details, assembled into one HTML document.

Every piece of text that comes from the user or the study (names, spec values, reasons,
commands, paths) passes through ``_e`` (``html.escape``) here; numbers we format ourselves
go through it too, so no path can forget.
"""

from __future__ import annotations

import html
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import plotly.graph_objects as go
from plotly.io.json import to_json_plotly
from plotly.offline import get_plotlyjs

from naskd.metrics import BUDGETS, METRICS
from naskd.report import analysis, assets, figures
from naskd.report.checks import Finding, findings
from naskd.report.commands import export_command, parse_search_command
from naskd.report.view import (
    DIAGNOSTIC_METRICS,
    StudyView,
    arch_text,
    fmt,
    label,
    number,
    recipe_text,
    scheme_text,
    table,
)
from naskd.results import FRONT_COLUMNS

#: Distributions whose versions the header lists (read from package metadata: importing
#: optuna here would break the rule that the core never imports it).
VERSIONED = ("naskd", "torch", "numpy", "optuna", "moocore", "plotly", "scipy", "scikit-learn")


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else fmt(value))


#: Trace types plotly draws with WebGL. Software WebGL (a browser without a GPU) needs a
#: second or more to set up each such figure, so they are drawn lazily: only when the reader
#: scrolls near them, after every other figure.
WEBGL_TRACES = frozenset({"scatter3d", "parcoords", "scattergl", "surface", "mesh3d", "cone", "streamtube"})
_CONFIG = {"displaylogo": False, "responsive": True}
LAZY_NOTE = "Interactive WebGL figure: drawn when scrolled into view."


class _Figures:
    """Turns figures into HTML: a sized <div>, the figure's plotly JSON in a
    ``<script type="application/json">`` (parsed only when drawn) and a call to
    ``naskdFigure`` (``assets.RENDER_HOOK``), which draws SVG figures one by one as the page
    loads and WebGL ones when scrolled near. The plotly.js bundle is embedded once (offline:
    never the CDN), before the first figure."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.eager = 0

    def html(self, fig: go.Figure, div_id: str, caption: str) -> str:
        first = not self.ids
        self.ids.append(div_id)
        height = int(fig.layout.height or 450)
        lazy = any(trace.type in WEBGL_TRACES for trace in fig.data)
        self.eager += not lazy
        spec = fig.to_dict()
        # plotly's own serialiser: escapes "<", ">" and "/" so no string can close the script.
        data = to_json_plotly({"data": spec.get("data", []), "layout": spec.get("layout", {}), "config": _CONFIG})
        bundle = (
            (f"<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>\n<script>{get_plotlyjs()}</script>\n")
            if first
            else ""
        )
        note = f'<p class="lazy-note">{_e(LAZY_NOTE)}</p>' if lazy else ""
        return (
            f'<div class="figure">\n<p class="caption">{caption}</p>\n{bundle}'
            f'<div id="{div_id}" class="plotly-graph-div" style="height:{height}px; width:100%;">{note}</div>\n'
            f'<script type="application/json" data-figure="{div_id}">{data}</script>\n'
            f'<script>naskdFigure("{div_id}", {"true" if lazy else "false"});</script>\n</div>'
        )


def build_page(
    view: StudyView, *, importances: Mapping[str, Mapping[str, float]] | None, created: datetime | None
) -> str:
    created = created or datetime.now(timezone.utc)
    figs = _Figures()
    parts = [
        _header(view, created),
        _warnings(findings(view)),
        _pareto_section(view, figs),
        _table_section(view),
        _versions_section(view),
        _loss_terms_section(view, figs),
        _capacity_section(view, figs),
        _rungs_section(view, figs),
        _search_section(view, figs, importances),
        _details_section(view),
    ]
    hook = assets.RENDER_HOOK % {"expected": len(figs.ids), "eager": figs.eager}
    title = f"naskd report: {view.name}"
    return (
        "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en">',
                "<head>",
                '<meta charset="utf-8">',
                f'<meta http-equiv="Content-Security-Policy" content="{assets.CSP}">',
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                f"<title>{_e(title)}</title>",
                f"<style>{assets.CSS}</style>",
                f"<script>{hook}</script>",
                "</head>",
                "<body>",
                "<main>",
                *parts,
                "</main>",
                f"<script>{assets.SORT_TABLE}</script>",
                "</body>",
                "</html>",
            ]
        )
        + "\n"
    )


# --- header ------------------------------------------------------------------------------


def _header(view: StudyView, created: datetime) -> str:
    facts = view.facts
    c = view.counts
    counts = (
        f"{c['complete']} complete, {c['infeasible']} infeasible (over budget, not trained), "
        f"{c['failed']} failed, {c['pruned']} stopped at a rung"
    )
    if c.get("running"):
        counts += f", {c['running']} still running"
    objectives = ", ".join(
        f"{label(o)} ({'higher' if d == 'maximize' else 'lower'} is better)"
        for o, d in zip(view.objectives, view.directions)
    )
    knee = next((r for r in view.complete if r.number == view.knee), None)
    result = f"{len(view.front)} student(s) on the Pareto front"
    if view.hypervolume is not None:
        result += f"; normalised hypervolume {view.hypervolume:.4f}"
    if view.complete and all(r.metrics.get("accuracy") is None for r in view.complete):
        result += (
            "; accuracy unavailable: the study has no real validation data, so students "
            "are compared with the teacher on held-out synthesized inputs (agreement), never scored on them"
        )
    if knee is not None:
        result += (
            f"; knee: trial {knee.number} (accuracy {fmt(knee.metrics.get('accuracy'), 'accuracy')}, "
            f"{fmt(knee.metrics.get('params'), 'params')} params, "
            f"{fmt(knee.metrics.get('latency_p50_ms'))} ms)"
        )
    search = parse_search_command(str(facts.get("command") or ""))
    command = (
        f'<code class="command">{_e(facts["command"])}</code>'
        if facts.get("command")
        else "not recorded (the study was run from Python, not with <code>naskd search</code>)"
    )
    rows = [
        ("Date", _e(_date_text(created))),
        ("Dataset", _data_text(facts.get("data"))),
        ("Teacher", _teacher_text(view)),
        ("Search space", _space_text(facts.get("space"))),
        ("Objectives", _e(objectives)),
        ("Sampler", _e(f"{facts.get('sampler', 'unknown')}, seed {facts.get('seed', 'unknown')}")),
        ("Cost budgets", _e(_budgets_text(facts.get("budgets")))),
        ("Training budget", _e(_fidelity_text(view))),
        ("Trials", _e(counts)),
        ("Result", _e(result)),
        ("Reproduce", command),
        ("Library versions", _e(_versions_text(facts))),
    ]
    if facts.get("storage"):
        rows.insert(-1, ("Storage", f"<code>{_e(facts['storage'])}</code>"))
    if not search.recorded and facts.get("command"):
        rows.append(
            (
                "Note",
                "the recorded command is not a <code>naskd search</code>; export commands below use "
                "the placeholder <code>STUDY.toml</code>",
            )
        )
    grid = "\n".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    description = facts.get("description")
    if view.fidelity.target_steps:
        training = (
            "otherwise trained it by knowledge distillation, rung by rung, toward the study's <em>target "
            f"budget</em> of {_e(view.fidelity.long_label(view.fidelity.target_steps))}, scoring it on the validation "
            "set at each rung. A student clearly beaten at a rung was <em>stopped</em> there; every number on the "
            "front is measured at the target budget, and a stopped student's numbers are its rung's (it is never "
            "on the front)."
        )
    else:  # a study from before naskd recorded its rungs
        training = "otherwise trained it by knowledge distillation and scored it on the validation set."
    lead = (
        "naskd searched for small <em>student</em> networks that learn from a trained <em>teacher</em>. Each trial "
        "sampled a student from the search space, measured its cost (parameters, FLOPs, latency), skipped it as "
        f"<em>infeasible</em> when it broke a cost budget, and {training} The <em>Pareto front</em> is the set of "
        "students that no other student beats on every objective at once; the <em>knee</em> is the front student "
        "closest to the ideal corner."
    )
    nav = "".join(
        f'<a href="#{anchor}">{text}</a>'
        for anchor, text in (
            ("pareto", "Pareto front"),
            ("students", "Front students"),
            ("loss-terms", "Loss terms"),
            ("capacity", "Capacity gap"),
            ("rungs", "Rungs and budget"),
            ("search", "Search progress"),
            ("details", "Details"),
        )
    )
    return "\n".join(
        [
            "<header>",
            f"<h1>naskd report: {_e(view.name)}</h1>",
            f'<p class="lead">{_e(description)}</p>' if description else "",
            f'<p class="lead">{lead}</p>',
            f"<nav>{nav}</nav>",
            f'<dl class="facts">\n{grid}\n</dl>',
            "</header>",
        ]
    )


def _date_text(created: datetime) -> str:
    offset = created.utcoffset()
    zone = "" if offset is None else " UTC" if not offset else f" UTC{created.strftime('%z')}"
    return created.strftime("%Y-%m-%d %H:%M") + zone


def _data_text(data: Any) -> str:
    if not isinstance(data, Mapping) or not data:
        return "not recorded"
    shape = data.get("input_shape")
    shape_text = "(" + ", ".join(str(s) for s in shape) + ")" if isinstance(shape, (list, tuple)) else fmt(shape)
    text = (
        f"{data.get('name', 'unnamed')}: input {shape_text}, {fmt(data.get('num_classes'))} classes; "
        f"{fmt(data.get('train'), 'params')} training / {fmt(data.get('val'), 'params')} validation samples"
    )
    known = {"name", "input_shape", "num_classes", "train", "val", "fingerprint"}
    extra = ", ".join(f"{k} = {fmt(v)}" for k, v in data.items() if k not in known)
    if extra:
        text += f"; {extra}"
    if data.get("fingerprint"):
        text += f"; fingerprint {data['fingerprint']}"
    return _e(text)


def _teacher_text(view: StudyView) -> str:
    teacher = table(view.facts, "teacher")
    if not view.teacher and not teacher:
        return "not recorded"
    if view.teachers:  # several: the ensemble, then each teacher's own figures
        items = "".join(f"<li>{_e(_one_teacher(t))}</li>" for t in view.teachers)
        return f"{_e(_teachers_head(view, teacher))}<ul>{items}</ul>"
    parts = [
        f"accuracy {fmt(view.teacher_value('accuracy'), 'accuracy')}",
        f"{fmt(view.teacher_value('params'), 'params')} params",
        f"{fmt(view.teacher_value('flops'), 'flops')} FLOPs",
        f"latency p50 {fmt(view.teacher_value('latency_p50_ms'))} ms / p95 "
        f"{fmt(view.teacher_value('latency_p95_ms'))} ms",
    ]
    text = ", ".join(parts)
    if teacher.get("source"):
        text += f"; {teacher['source']}"
    if teacher.get("fingerprint"):
        text += f" (fingerprint {teacher['fingerprint']})"
    return _e(text)


def _teachers_head(view: StudyView, teacher: Mapping[str, Any]) -> str:
    """Several teachers: the ensemble's accuracy, and the largest teacher the costs are of."""
    listed = view.teachers
    largest = max(listed, key=lambda t: number(t.get("params")) or 0.0)
    cost = (
        f"{fmt(view.teacher_value('params'), 'params')} params, {fmt(view.teacher_value('flops'), 'flops')} "
        f"FLOPs, latency p50 {fmt(view.teacher_value('latency_p50_ms'))} ms / p95 "
        f"{fmt(view.teacher_value('latency_p95_ms'))} ms"
    )
    text = (
        f"{len(listed)} teachers; ensemble accuracy {fmt(view.teacher_value('accuracy'), 'accuracy')}; "
        f"the capacity ratio and the cost bounds are against the largest teacher, {largest.get('name', '?')} "
        f"({cost})"
    )
    if teacher.get("source"):
        text += f"; {teacher['source']}"
    return text


def _one_teacher(t: Mapping[str, Any]) -> str:
    """``t1: weight 0.5, accuracy 0.9300, 10,000 params, latency p50 0.1 ms; source (fingerprint ...)``"""
    text = (
        f"{t.get('name', '?')}: weight {fmt(t.get('weight'))}, accuracy {fmt(t.get('accuracy'), 'accuracy')}, "
        f"{fmt(t.get('params'), 'params')} params, {fmt(t.get('flops'), 'flops')} FLOPs, "
        f"latency p50 {fmt(t.get('latency_p50_ms'))} ms / p95 {fmt(t.get('latency_p95_ms'))} ms"
    )
    if t.get("source"):
        text += f"; {t['source']}"
    if t.get("fingerprint"):
        text += f" (fingerprint {t['fingerprint']})"
    return text


def _space_text(space: Any) -> str:
    if not isinstance(space, Mapping) or not space:
        return "not recorded"
    head = f"family {space.get('family', '?')}"
    if space.get("source"):
        head += f", from {space['source']}"
    rows = [r for r in space.get("params") or [] if isinstance(r, Mapping)]
    items = "".join(f"<li>{_e(_param_text(r))}</li>" for r in rows)
    return _e(head) + (f"<ul>{items}</ul>" if items else "")


def _param_text(row: Mapping[str, Any]) -> str:
    """``width: int 4–32 (log), one per depth`` — one declared parameter in words."""
    text = f"{row.get('name', '?')}: "
    kind = row.get("kind")
    if kind in ("int", "float") and row.get("range"):
        low, high = (list(row["range"]) + [None, None])[:2]
        text += f"{kind} {fmt(low)}–{fmt(high)}"
        if row.get("step") and not (kind == "int" and row["step"] == 1):  # step 1 is every integer: say nothing
            text += f" step {fmt(row['step'])}"
        if row.get("log"):
            text += " (log scale)"
    elif kind == "categorical" or row.get("choices") is not None:
        text += f"one of {fmt(list(row.get('choices') or []))}"
    else:  # fixed
        text += f"fixed {fmt(row.get('value'))}"
    if row.get("per"):
        text += f", one per {row['per']}"
    if row.get("when"):
        text += f", only when {row['when']}"
    return text


def _budgets_text(budgets: Any) -> str:
    if not isinstance(budgets, Mapping):
        return "not recorded"
    set_ = []
    for key, metric in BUDGETS.items():
        if budgets.get(key) is not None:
            unit = METRICS[metric].unit
            set_.append(f"{METRICS[metric].noun} ≤ {fmt(budgets[key], metric)}{(' ' + unit) if unit else ''}")
    return ", ".join(set_) if set_ else "none (every student is trained)"


def _fidelity_text(view: StudyView) -> str:
    """``target budget 27 epochs (1,080 training steps); rungs at 1, 3, 9 epochs; rule pareto,
    factor 3`` — where every front number is measured and where students were scored on the way."""
    fid = view.fidelity
    if not fid.target_steps:
        return "not recorded (a study from before naskd kept its rungs and target budget)"
    text = f"target budget {fid.long_label(fid.target_steps)}"
    if fid.rungs:
        labels = [fid.label(s) for s in fid.rungs]
        parts = [words.split(" ", 1) for words in labels]
        if len({unit.rstrip("s") for _, unit in parts}) == 1:  # "1, 3, 9 epochs", not "1 epoch, 3 epochs, 9 epochs"
            labels = [n for n, _ in parts[:-1]] + [labels[-1]]
        text += "; rungs at " + ", ".join(labels)
    else:
        text += "; no rungs (every student trained to the target)"
    if fid.rule == "off":
        text += "; rule off (rung scores recorded, no student stopped)"
    elif fid.rule:
        text += f"; rule {fid.rule}"
        if fid.reduction_factor:
            text += f", factor {fid.reduction_factor}"
        if fid.margin:
            text += f", margin {fmt(fid.margin)}"
    return text


def _versions_text(facts: Mapping[str, Any]) -> str:
    recorded = facts.get("versions")
    if isinstance(recorded, Mapping) and recorded:
        return ", ".join(f"{k} {v}" for k, v in recorded.items()) + " (recorded with the study)"
    found = []
    for dist in VERSIONED:
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return f"Python {platform.python_version()}, " + ", ".join(found) + " (when this report was written)"


# --- warnings ----------------------------------------------------------------------------


def _warnings(found: Sequence[Finding]) -> str:
    if not found:
        return ""
    items = "\n".join(
        f'<div class="warning" role="alert" data-warning="{_e(f.key)}"><strong>{_e(f.title)}.</strong> '
        f"{_e(f.detail)}</div>"
        for f in found
    )
    return f'<section id="warnings" aria-label="warnings">\n{items}\n</section>'


# --- sections ----------------------------------------------------------------------------


def _missing(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _section(section_id: str, title: str, parts: list[str]) -> str:
    """One report section: its id (the page's anchors and the browser test use it), its
    heading, then its parts."""
    return "\n".join([f'<section id="{section_id}">', f"<h2>{_e(title)}</h2>", *parts, "</section>"])


def _figure_or_note(figs: _Figures, fig: go.Figure | None, div_id: str, caption: str, missing: str) -> str:
    """The figure with its (already escaped) caption, or a note saying why there is none."""
    return _missing(missing) if fig is None else figs.html(fig, div_id, caption)


def _pareto_section(view: StudyView, figs: _Figures) -> str:
    out = [
        '<p class="caption">Each coloured marker is one student trained to the target budget. Marker size grows '
        "with the number of parameters; colour is the Pareto rank over all the study's objectives (0 = on the "
        "front, 1 = on the front once the front is removed, and so on). The dashed line joins the students that "
        "are best in the two quantities drawn; the red star is the knee; the dotted line is the teacher's "
        "accuracy. Grey open circles are students stopped at a rung, drawn at the accuracy they had there: a "
        "shorter training than the target's, so they are never ranked or on the front. Grey crosses at the "
        "bottom are trials that were never trained (over budget) or failed. Hover over a marker for its metrics "
        "and its whole spec; drag to zoom, double-click to reset.</p>"
    ]
    drawn = False
    for metric, div_id in (
        ("latency_p50_ms", "fig-pareto-latency"),
        ("params", "fig-pareto-params"),
        ("flops", "fig-pareto-flops"),
    ):
        fig = figures.pareto_2d(view, metric)
        if fig is not None:
            drawn = True
            out.append(f"<h3>Accuracy against {_e(label(metric))}</h3>")
            caption = f"Up and to the left is better: more accurate, lower {label(metric)}."
            out.append(figs.html(fig, div_id, _e(caption)))
    if not drawn:
        out.append(_missing("No trial was measured, so there is nothing to draw."))
    fig = figures.pareto_3d(view)
    if fig is not None:
        out.append("<h3>Accuracy, latency and parameters in 3-D</h3>")
        out.append(
            figs.html(
                fig,
                "fig-pareto-3d",
                "The three default objectives together; drag to rotate. The open diamond is the knee.",
            )
        )
    return _section("pareto", "The Pareto front", out)


def _table_section(view: StudyView) -> str:
    by_number = {r.number: r for r in view.complete}
    rows = [by_number[n] for n in view.front if n in by_number]
    if not rows:
        return _section("students", "Students on the front", [_missing("The front is empty: no trial completed.")])
    extra = [m for m in DIAGNOSTIC_METRICS if any(m in r.metrics for r in rows)]
    metrics = [*FRONT_COLUMNS, *extra]
    show_gain = "scratch_accuracy" in extra
    show_steps = any(r.steps for r in rows)  # older studies did not record them
    show_scheme = _shows_scheme(view)
    titles = [
        "trial",
        *(label(m) for m in metrics),
        *(["KD gain"] if show_gain else []),
        *(["training steps"] if show_steps else []),
    ]
    head = "".join(f'<th data-sort="num"><button type="button">{_e(t)}</button></th>' for t in titles)
    if show_scheme:
        titles.append("scheme")
        head += '<th data-sort="text"><button type="button">scheme</button></th>'
    # One <tbody> per student: its metrics row, then a full-width row with the spec and the
    # export command (too long for a column); the sort moves the two rows together.
    bodies = []
    for r in rows:
        knee = r.number == view.knee
        cells = [_num_cell(r.number, f"{r.number}{' ★ knee' if knee else ''}")]
        cells += [_num_cell(number(r.metrics.get(m)), fmt(r.metrics.get(m), m)) for m in metrics]
        if show_gain:
            acc, scratch = number(r.metrics.get("accuracy")), number(r.metrics.get("scratch_accuracy"))
            gain = None if acc is None or scratch is None else acc - scratch
            cells.append(_num_cell(gain, "–" if gain is None else f"{gain * 100:+.1f} pts"))
        if show_steps:
            cells.append(_num_cell(r.steps, "–" if r.steps is None else f"{r.steps:,}"))
        if show_scheme:
            cells.append(f'<td class="scheme">{_e(scheme_text(r.spec))}</td>')
        recipe = recipe_text(r.spec)
        spec = f"<code>{_e(arch_text(r.spec))}</code>" + (f" <small>recipe: {_e(recipe)}</small>" if recipe else "")
        command = f'<code class="command">{_e(export_command(view.facts, view.name, r.number))}</code>'
        bodies.append(
            f'<tbody data-trial="{r.number}"{" class=knee" if knee else ""}>'
            f'<tr class="metrics">{"".join(cells)}</tr>'
            f'<tr class="spec"><td colspan="{len(titles)}">{spec}<br>export: {command}</td></tr></tbody>'
        )
    out = [
        '<p class="caption">Sorted by accuracy; click a column title to sort by it. Under each student: its '
        "spec, and the command that exports it (weights, TorchScript, spec and a README, after checking that "
        "the reloaded student reproduces its recorded accuracy).</p>",
        '<div class="table-wrap"><table class="sortable front-table">',
        f"<thead><tr>{head}</tr></thead>",
        *bodies,
        "</table></div>",
    ]
    return _section("students", "Students on the front", out)


def _versions_section(view: StudyView) -> str:
    """Lifelong studies: the front of every teacher version, each against its own teacher
    (nothing of an earlier version is dropped); the figures above are the latest version's."""
    if not view.versions:
        return ""
    head = "".join(
        f"<th>{_e(t)}</th>"
        for t in (
            "version",
            "teacher",
            "teacher accuracy",
            "first trial",
            "hypervolume",
            "front: trial (accuracy, params)",
        )
    )
    rows = []
    for v in view.versions:
        teacher = table(v, "teacher")
        members = []
        for e in v.get("front") or ():
            m = e.get("metrics") or {}
            came = f", from trial {e['continued_from']}" if e.get("continued_from") is not None else ""
            members.append(
                f"{e.get('number')} ({fmt(m.get('accuracy'), 'accuracy')}, "
                f"{fmt(m.get('params'), 'params')} params{came})"
            )
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{_e(c)}</td>"
                for c in (
                    v.get("version"),
                    f"{teacher.get('source') or ''} {teacher.get('fingerprint') or ''}".strip(),
                    fmt(teacher.get("accuracy"), "accuracy"),
                    v.get("first_trial"),
                    fmt(v.get("hypervolume"), "accuracy"),
                    "; ".join(members) or "empty",
                )
            )
            + "</tr>"
        )
    out = [
        "<p class=\"caption\">The study's teacher changed; each version's students are kept. The figures and "
        "the table above are the latest version's. A student continued from an earlier version's trial learned "
        "from the new teacher with its earlier self as a second teacher (learning without forgetting).</p>",
        '<div class="table-wrap"><table class="versions">',
        f"<thead><tr>{head}</tr></thead>",
        "<tbody>",
        *rows,
        "</tbody></table></div>",
    ]
    return _section("versions", "Teacher versions", out)


def _shows_scheme(view: StudyView) -> bool:
    """Whether the front table names each student's scheme: when any trial was distilled other
    than offline, or the space searches the scheme (``recipe.scheme``)."""
    space = table(view.facts, "space")
    searched = any(isinstance(p, Mapping) and p.get("name") == "recipe.scheme" for p in space.get("params") or [])
    return searched or any(scheme_text(r.spec) != "offline" for r in view.records)


def _loss_terms_section(view: StudyView, figs: _Figures) -> str:
    """What each named loss term contributed to the front students' loss at the end of training."""
    names, rows = analysis.loss_terms(view)
    if not rows:
        why = (
            "the front is empty"
            if not view.front
            else "the front's students recorded none (a study from before naskd recorded them)"
        )
        return _section("loss-terms", "Loss terms", [_missing(f"No loss terms to show: {why}.")])
    out = [
        '<p class="caption">The loss each student minimised is the sum of named, weighted terms (ce: cross-entropy '
        "with the labels; the others: what it learns from the teacher(s) or its peers). Each value is the term's "
        "weight times its loss, averaged over the last points of the training curve.</p>",
        f'<p class="sentence">{_e(analysis.loss_terms_sentence(names, rows))}</p>',
        figs.html(
            figures.loss_terms(view, names, rows),
            "fig-loss-terms",
            _e(
                "One bar per front student (★ = knee), one colour per term; the bar's height is the loss "
                "at the end of training. Hover for each term's value and share."
            ),
        ),
    ]
    missing = len(view.front) - len(rows)
    if missing > 0:
        out.append(
            _missing(
                f"{_plural(missing, 'front student')} recorded no loss terms and "
                f"{'is' if missing == 1 else 'are'} left out."
            )
        )
    head = "".join(f"<th>{_e(t)}</th>" for t in ("trial", *names, "total"))
    body = []
    for row in rows:
        cells = [f"<td>{row.number}{' ★ knee' if row.number == view.knee else ''}</td>"]
        for name in names:
            value, share = row.terms.get(name), row.share(name)
            text = "–" if value is None else fmt(value) + ("" if share is None else f" ({share:.0%})")
            cells.append(_num_cell(value, text))
        cells.append(_num_cell(row.total, fmt(row.total)))
        body.append(f'<tr data-trial="{row.number}">{"".join(cells)}</tr>')
    out.append(
        '<div class="table-wrap"><table class="terms-table">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )
    return _section("loss-terms", "Loss terms", out)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _num_cell(value: float | None, text: str) -> str:
    """A numeric cell; ``data-value`` carries the exact number the sort uses."""
    return f'<td class="num" data-value="{"" if value is None else repr(float(value))}">{_e(text)}</td>'


def _capacity_section(view: StudyView, figs: _Figures) -> str:
    out = [
        "<p class=\"caption\">The capacity ratio is the teacher's parameters divided by the student's: 10 means the "
        "student is ten times smaller. Large gaps often make distillation less effective (Cho &amp; Hariharan, "
        "2019; Mirzadeh et al., 2020): students far below the teacher may learn more from the labels than from "
        "the teacher.</p>"
    ]
    out.append(
        _figure_or_note(
            figs,
            figures.capacity_gap(view),
            "fig-capacity",
            "Accuracy and top-1 agreement with the teacher against the capacity ratio (log axis).",
            "No completed student to draw.",
        )
    )
    rows = analysis.gap_rows(view)
    if rows:
        out += [
            '<div id="kd-gain">',
            "<h3>What the teacher adds: KD gain and gap closure</h3>",
            f'<p class="sentence">{_e(analysis.kd_gain_sentence(rows))}</p>',
        ]
        fig = figures.kd_gain(view, rows)
        if fig is not None:
            out.append(
                figs.html(
                    fig,
                    "fig-kd-gain",
                    "Each student was also trained without the teacher (scratch), "
                    "same budget. Left: accuracy gained by distilling (above 0 = the teacher helped). "
                    "Right: the share of the teacher–scratch gap that distillation closed (1 = as good "
                    "as the teacher).",
                )
            )
        out.append("</div>")
    else:
        out.append(
            _missing(
                "No scratch baselines were recorded (the same students trained without a teacher), so "
                "the gain from distillation cannot be shown."
            )
        )
    return _section("capacity", "Capacity gap", out)


def _rungs_section(view: StudyView, figs: _Figures) -> str:
    """Where the students were scored on the way to the target budget, whether those rungs
    rank students as the target does, what stopping at them saved; then the confirmation runs."""
    fid = view.fidelity
    out = []
    curves = analysis.learning_curves(view)
    if not curves:
        why = (
            "this study has no rungs: every student was trained straight to the target budget"
            if fid.target_steps and not fid.rungs
            else "this study recorded no rung scores (a study from before naskd kept them)"
        )
        out.append(
            _missing(
                f"No learning curves or rung statistics: {why}. The front's numbers are at the target "
                "budget all the same."
            )
        )
    else:
        target = f" of {fid.long_label(fid.target_steps)}" if fid.target_steps else ""
        rule = (
            "the rule is off, so every student goes on: the rungs only record how it learns"
            if fid.rule == "off"
            else "the rule decides whether it goes on"
        )
        out += [
            f'<p class="caption">Every student is trained rung by rung toward the target budget{_e(target)} and '
            f"scored on the validation set at each rung; {_e(rule)}. The front is built only from students "
            "that reached the target.</p>",
            "<h3>Learning curves</h3>",
            figs.html(
                figures.learning_curves(view, curves),
                "fig-learning-curves",
                _e(
                    "Validation accuracy at each rung and at the target budget, one line per student. "
                    "Coloured: the front's students; grey: the others, dotted where the student was "
                    "stopped at a rung (its line ends there). Hover for the trial and its budget."
                ),
            ),
            _rung_table(view, analysis.rung_agreement(view)),
        ]
        saved = analysis.training_saved(view)
        if saved is not None:
            out += [
                '<div id="training-saved">',
                "<h3>The training the rungs saved</h3>",
                f'<p class="sentence">{_e(saved.sentence)}</p>',
                "</div>",
            ]
    out.append(_confirmation(view, figs))
    return _section("rungs", "The rungs and the target budget", out)


def _rung_table(view: StudyView, rows: list[analysis.RungRank]) -> str:
    """Per rung: its budget, how many students were scored and stopped there, and how well its
    accuracy ranks the students that reached the target (Kendall's tau)."""
    fid = view.fidelity
    titles = (
        "rung",
        "budget",
        "students scored there",
        "stopped there",
        "reached the target (n)",
        "Kendall's τ with the target",
    )
    body = [
        f"<tr><td>{row.rung}</td><td>{_e(fid.long_label(row.steps))}</td>"
        + "".join(_num_cell(v, fmt(v)) for v in (row.scored, row.stopped, row.n))
        + _num_cell(row.tau, "–" if row.tau is None else f"{row.tau:.2f}")
        + "</tr>"
        for row in rows
    ]
    if fid.target_steps:
        done = len(view.complete)
        body.append(
            f"<tr><td>target</td><td>{_e(fid.long_label(fid.target_steps))}</td>{_num_cell(done, fmt(done))}"
            f"<td></td><td></td><td></td></tr>"
        )
    head = "".join(f"<th>{_e(t)}</th>" for t in titles)
    return "\n".join(
        [
            '<div id="rung-agreement">',
            "<h3>Do the rungs rank students as the target budget does?</h3>",
            f'<p class="sentence">{_e(analysis.rung_agreement_sentence(view, rows))}</p>',
            '<p class="caption">Kendall\'s τ compares two rankings of the same students: 1 = the same '
            "order, 0 = unrelated, −1 = reversed. Only students trained to the target can be compared, "
            "and they are the rule's survivors, whose accuracies spread less than the whole study's "
            "(which tends to lower τ). “–”: fewer than 3 such students, or every accuracy equal.</p>",
            f'<div class="table-wrap"><table class="rung-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>",
            "</div>",
        ]
    )


def _confirmation(view: StudyView, figs: _Figures) -> str:
    """The confirmation runs (``naskd confirm --steps N``): longer than the target budget."""
    agreement = analysis.rank_agreement(view)
    out = ["<h3>Confirmation runs: does longer training keep the order?</h3>"]
    if agreement is None:
        out.append(
            _missing(
                "No confirmation run was recorded: whether training longer than the target budget "
                "would rank the students the same way is unchecked (naskd confirm STUDY.toml --top 5 "
                "--steps N checks it)."
            )
        )
    else:
        confirmed = set(agreement.numbers)
        steps = {
            s for r in view.complete if r.number in confirmed and (s := number(r.metrics.get("long_steps"))) is not None
        }
        how = f" (long runs of {', '.join(fmt(s, 'long_steps') for s in sorted(steps))} steps)" if steps else ""
        out += [
            '<div id="trust">',
            f'<p class="sentence">{_e(agreement.sentence)}</p>',
            figs.html(
                figures.trust(view, agreement),
                "fig-trust",
                _e(
                    f"Accuracy in the search (at the target budget) against long-run (confirmation) "
                    f"accuracy of the confirmed students{how}. Points on the dotted diagonal kept their "
                    "accuracy."
                ),
            ),
            "</div>",
        ]
    return "\n".join(out)


def _search_section(view: StudyView, figs: _Figures, importances: Mapping[str, Mapping[str, float]] | None) -> str:
    numbers, values = analysis.hypervolume_history(view)
    return _section(
        "search",
        "How the search went",
        [
            "<h3>Hypervolume over trials</h3>",
            _figure_or_note(
                figs,
                figures.hypervolume_history(numbers, values),
                "fig-hypervolume",
                "The share of the objective space the front dominates, after each trial (objectives "
                "normalised: accuracy on [0, 1], costs on [0, the teacher's cost]). A curve that has stopped "
                "rising suggests more trials would change little.",
                "No trial finished.",
            ),
            "<h3>Optimisation history per objective</h3>",
            _figure_or_note(
                figs,
                figures.history(view),
                "fig-history",
                "Each completed trial's value; the orange line is the best so far.",
                "No trial completed.",
            ),
            "<h3>Parameter importances</h3>",
            _figure_or_note(
                figs,
                figures.importances(view, importances) if importances else None,
                "fig-importances",
                "How much of each objective's variation each parameter explains (fANOVA; the importances of "
                "one objective sum to 1).",
                "Parameter importances are not available for this study (they "
                "need enough completed trials and are computed by the search backend).",
            ),
            "<h3>Architecture parameters</h3>",
            _figure_or_note(
                figs,
                figures.parallel(view),
                "fig-parallel",
                "One line per completed student through its architecture values, coloured by accuracy. Drag "
                "along an axis to keep only the lines in a range. List parameters get one axis per position; "
                "\u201cabsent\u201d marks a student without that position (e.g. fewer layers).",
                "No completed trial with architecture parameters.",
            ),
        ],
    )


_SPACE_COLUMNS = ("name", "kind", "range", "step", "log", "choices", "value", "per", "when")


def _details_section(view: StudyView) -> str:
    facts = view.facts
    rows = []
    space = table(facts, "space")
    for row in space.get("params") or []:
        if isinstance(row, Mapping):
            cells = "".join(f"<td>{_e(fmt(row.get(k)) if row.get(k) is not None else '')}</td>" for k in _SPACE_COLUMNS)
            rows.append(f"<tr>{cells}</tr>")
    head = "".join(f"<th>{h}</th>" for h in _SPACE_COLUMNS)
    html_table = (
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        if rows
        else _missing("Not recorded.")
    )
    problems = [r for r in view.records if r.state in ("failed", "infeasible", "pruned") and r.reason]
    state = {"pruned": "stopped at a rung"}
    listing = "".join(
        f"<li>trial {r.number} ({_e(state.get(r.state, r.state))}): {_e(r.reason)}</li>" for r in problems[:200]
    )
    more = f'<p class="note">… and {len(problems) - 200} more.</p>' if len(problems) > 200 else ""
    return _section(
        "details",
        "Details",
        [
            "<h3>Search space</h3>",
            html_table,
            "<details><summary>Reasons recorded for infeasible and failed trials and students stopped at a rung "
            f"({len(problems)})</summary><ul>{listing}</ul>{more}</details>"
            if problems
            else "",
        ],
    )
