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

from naskd.report import analysis, assets, figures
from naskd.report.checks import Finding, findings
from naskd.report.commands import export_command, parse_search_command
from naskd.report.view import DIAGNOSTIC_METRICS, StudyView, arch_text, fmt, label, number, recipe_text
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
        bundle = ("<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
                  f"<script>{get_plotlyjs()}</script>\n") if first else ""
        note = f'<p class="lazy-note">{_e(LAZY_NOTE)}</p>' if lazy else ""
        return (f'<div class="figure">\n<p class="caption">{caption}</p>\n{bundle}'
                f'<div id="{div_id}" class="plotly-graph-div" style="height:{height}px; width:100%;">{note}</div>\n'
                f'<script type="application/json" data-figure="{div_id}">{data}</script>\n'
                f'<script>naskdFigure("{div_id}", {"true" if lazy else "false"});</script>\n</div>')


def build_page(view: StudyView, *, importances: Mapping[str, Mapping[str, float]] | None,
               created: datetime | None) -> str:
    created = created or datetime.now(timezone.utc)
    figs = _Figures()
    parts = [
        _header(view, created),
        _warnings(findings(view)),
        _pareto_section(view, figs),
        _table_section(view),
        _capacity_section(view, figs),
        _trust_section(view, figs),
        _search_section(view, figs, importances),
        _details_section(view),
    ]
    hook = assets.RENDER_HOOK % {"expected": len(figs.ids), "eager": figs.eager}
    title = f"naskd report: {view.name}"
    return "\n".join([
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
    ]) + "\n"


# --- header ------------------------------------------------------------------------------

def _header(view: StudyView, created: datetime) -> str:
    facts = view.facts
    c = view.counts
    counts = (f"{c['complete']} complete, {c['infeasible']} infeasible (over budget, not trained), "
              f"{c['failed']} failed, {c['pruned']} pruned")
    if c.get("running"):
        counts += f", {c['running']} still running"
    objectives = ", ".join(f"{label(o)} ({'higher' if d == 'maximize' else 'lower'} is better)"
                           for o, d in zip(view.objectives, view.directions))
    knee = next((r for r in view.complete if r.number == view.knee), None)
    result = f"{len(view.front)} student(s) on the Pareto front"
    if view.hypervolume is not None:
        result += f"; normalised hypervolume {view.hypervolume:.4f}"
    if knee is not None:
        result += (f"; knee: trial {knee.number} (accuracy {fmt(knee.metrics.get('accuracy'), 'accuracy')}, "
                   f"{fmt(knee.metrics.get('params'), 'params')} params, "
                   f"{fmt(knee.metrics.get('latency_p50_ms'))} ms)")
    search = parse_search_command(str(facts.get("command") or ""))
    command = (f'<code class="command">{_e(facts["command"])}</code>' if facts.get("command")
               else "not recorded (the study was run from Python, not with <code>naskd search</code>)")
    rows = [
        ("Date", _e(_date_text(created))),
        ("Dataset", _data_text(facts.get("data"))),
        ("Teacher", _teacher_text(view)),
        ("Search space", _space_text(facts.get("space"))),
        ("Objectives", _e(objectives)),
        ("Sampler", _e(f"{facts.get('sampler', 'unknown')}, seed {facts.get('seed', 'unknown')}")),
        ("Cost budgets", _e(_budgets_text(facts.get("budgets")))),
        ("Trials", _e(counts)),
        ("Result", _e(result)),
        ("Reproduce", command),
        ("Library versions", _e(_versions_text(facts))),
    ]
    if facts.get("storage"):
        rows.insert(-1, ("Storage", f"<code>{_e(facts['storage'])}</code>"))
    if not search.recorded and facts.get("command"):
        rows.append(("Note", "the recorded command is not a <code>naskd search</code>; export commands below use "
                             "the placeholder <code>STUDY.toml</code>"))
    grid = "\n".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    description = facts.get("description")
    lead = (
        "naskd searched for small <em>student</em> networks that learn from a trained <em>teacher</em>. Each trial "
        "sampled a student from the search space, measured its cost (parameters, FLOPs, latency), skipped it as "
        "<em>infeasible</em> when it broke a cost budget, and otherwise trained it briefly by knowledge distillation "
        "and scored it on the validation set. The <em>Pareto front</em> is the set of students that no other student "
        "beats on every objective at once; the <em>knee</em> is the front student closest to the ideal corner."
    )
    nav = "".join(f'<a href="#{anchor}">{text}</a>' for anchor, text in (
        ("pareto", "Pareto front"), ("students", "Front students"), ("capacity", "Capacity gap"),
        ("trust-section", "Short runs"), ("search", "Search progress"), ("details", "Details")))
    return "\n".join([
        "<header>",
        f"<h1>naskd report: {_e(view.name)}</h1>",
        f'<p class="lead">{_e(description)}</p>' if description else "",
        f'<p class="lead">{lead}</p>',
        f"<nav>{nav}</nav>",
        f'<dl class="facts">\n{grid}\n</dl>',
        "</header>",
    ])


def _date_text(created: datetime) -> str:
    offset = created.utcoffset()
    zone = "" if offset is None else " UTC" if not offset else f" UTC{created.strftime('%z')}"
    return created.strftime("%Y-%m-%d %H:%M") + zone


def _data_text(data: Any) -> str:
    if not isinstance(data, Mapping) or not data:
        return "not recorded"
    shape = data.get("input_shape")
    shape_text = "(" + ", ".join(str(s) for s in shape) + ")" if isinstance(shape, (list, tuple)) else fmt(shape)
    text = (f"{data.get('name', 'unnamed')}: input {shape_text}, {fmt(data.get('num_classes'))} classes; "
            f"{fmt(data.get('train'), 'params')} training / {fmt(data.get('val'), 'params')} validation samples")
    known = {"name", "input_shape", "num_classes", "train", "val", "fingerprint"}
    extra = ", ".join(f"{k} = {fmt(v)}" for k, v in data.items() if k not in known)
    if extra:
        text += f"; {extra}"
    if data.get("fingerprint"):
        text += f"; fingerprint {data['fingerprint']}"
    return _e(text)


def _teacher_text(view: StudyView) -> str:
    teacher = view.facts.get("teacher") if isinstance(view.facts.get("teacher"), Mapping) else {}
    if not view.teacher and not teacher:
        return "not recorded"
    parts = [f"accuracy {fmt(view.teacher_value('accuracy'), 'accuracy')}",
             f"{fmt(view.teacher_value('params'), 'params')} params",
             f"{fmt(view.teacher_value('flops'), 'flops')} FLOPs",
             f"latency p50 {fmt(view.teacher_value('latency_p50_ms'))} ms / p95 "
             f"{fmt(view.teacher_value('latency_p95_ms'))} ms"]
    text = ", ".join(parts)
    if teacher.get("source"):
        text += f"; {teacher['source']}"
    if teacher.get("fingerprint"):
        text += f" (fingerprint {teacher['fingerprint']})"
    return _e(text)


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
    named = {"max_latency_ms": ("latency p50", "ms", None), "max_params": ("params", "", "params"),
             "max_flops": ("FLOPs", "", "flops")}
    set_ = [f"{what} ≤ {fmt(budgets[key], metric)}{(' ' + unit) if unit else ''}"
            for key, (what, unit, metric) in named.items() if budgets.get(key) is not None]
    return ", ".join(set_) if set_ else "none (every student is trained)"


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
    items = "\n".join(f'<div class="warning" role="alert" data-warning="{_e(f.key)}"><strong>{_e(f.title)}.</strong> '
                      f"{_e(f.detail)}</div>" for f in found)
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
    out = ['<p class="caption">Each marker is one trained student. Marker size grows with the number of parameters; '
           "colour is the Pareto rank over all the study's objectives (0 = on the front, 1 = on the front once the "
           "front is removed, and so on). The dashed line joins the students that are best in the two quantities "
           "drawn; the red star is the knee; the dotted line is the teacher's accuracy. Grey crosses at the bottom "
           "are trials that were never trained (over budget) or failed. Hover over a marker for its metrics and "
           "its whole spec; drag to zoom, double-click to reset.</p>"]
    drawn = False
    for metric, div_id in (("latency_p50_ms", "fig-pareto-latency"), ("params", "fig-pareto-params"),
                           ("flops", "fig-pareto-flops")):
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
        out.append(figs.html(fig, "fig-pareto-3d", "The three default objectives together; drag to rotate. The "
                             "open diamond is the knee."))
    return _section("pareto", "The Pareto front", out)


def _table_section(view: StudyView) -> str:
    by_number = {r.number: r for r in view.complete}
    rows = [by_number[n] for n in view.front if n in by_number]
    if not rows:
        return _section("students", "Students on the front", [_missing("The front is empty: no trial completed.")])
    extra = [m for m in DIAGNOSTIC_METRICS if any(m in r.metrics for r in rows)]
    metrics = [*FRONT_COLUMNS, *extra]
    show_gain = "scratch_accuracy" in extra
    titles = ["trial", *(label(m) for m in metrics), *(["KD gain"] if show_gain else [])]
    head = "".join(f'<th data-sort="num"><button type="button">{_e(t)}</button></th>' for t in titles)
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
        recipe = recipe_text(r.spec)
        spec = f"<code>{_e(arch_text(r.spec))}</code>" + (f" <small>recipe: {_e(recipe)}</small>" if recipe else "")
        command = f'<code class="command">{_e(export_command(view.facts, view.name, r.number))}</code>'
        bodies.append(f'<tbody data-trial="{r.number}"{" class=knee" if knee else ""}>'
                      f'<tr class="metrics">{"".join(cells)}</tr>'
                      f'<tr class="spec"><td colspan="{len(titles)}">{spec}<br>export: {command}</td></tr></tbody>')
    out = ['<p class="caption">Sorted by accuracy; click a column title to sort by it. Under each student: its '
            "spec, and the command that exports it (weights, TorchScript, spec and a README, after checking that "
            "the reloaded student reproduces its recorded accuracy).</p>",
            '<div class="table-wrap"><table class="sortable front-table">',
            f"<thead><tr>{head}</tr></thead>", *bodies, "</table></div>"]
    return _section("students", "Students on the front", out)


def _num_cell(value: float | None, text: str) -> str:
    """A numeric cell; ``data-value`` carries the exact number the sort uses."""
    return f'<td class="num" data-value="{"" if value is None else repr(float(value))}">{_e(text)}</td>'


def _capacity_section(view: StudyView, figs: _Figures) -> str:
    out = ['<p class="caption">The capacity ratio is the teacher\'s parameters divided by the student\'s: 10 means the '
           "student is ten times smaller. Large gaps often make distillation less effective (Cho &amp; Hariharan, "
           "2019; Mirzadeh et al., 2020): students far below the teacher may learn more from the labels than from "
           "the teacher.</p>"]
    out.append(_figure_or_note(figs, figures.capacity_gap(view), "fig-capacity", "Accuracy and top-1 agreement "
                               "with the teacher against the capacity ratio (log axis).", "No completed student to draw."))
    rows = analysis.gap_rows(view)
    if rows:
        out += ['<div id="kd-gain">', "<h3>What the teacher adds: KD gain and gap closure</h3>",
                f'<p class="sentence">{_e(analysis.kd_gain_sentence(rows))}</p>']
        fig = figures.kd_gain(view, rows)
        if fig is not None:
            out.append(figs.html(fig, "fig-kd-gain", "Each student was also trained without the teacher (scratch), "
                                 "same budget. Left: accuracy gained by distilling (above 0 = the teacher helped). "
                                 "Right: the share of the teacher–scratch gap that distillation closed (1 = as good "
                                 "as the teacher)."))
        out.append("</div>")
    else:
        out.append(_missing("No scratch baselines were recorded (the same students trained without a teacher), so "
                            "the gain from distillation cannot be shown."))
    return _section("capacity", "Capacity gap", out)


def _trust_section(view: StudyView, figs: _Figures) -> str:
    agreement = analysis.rank_agreement(view)
    out = []
    if agreement is None:
        out.append(_missing("No confirmation run was recorded: every accuracy here comes from a short training "
                            "run, and whether longer training would rank the students the same way is unchecked."))
    else:
        steps = {number(r.metrics.get("long_steps")) for r in view.complete if r.number in set(agreement.numbers)}
        steps.discard(None)
        how = f" (long runs of {', '.join(fmt(s, 'long_steps') for s in sorted(steps))} steps)" if steps else ""
        out += ['<div id="trust">',
                f'<p class="sentence">{_e(agreement.sentence)}</p>',
                figs.html(figures.trust(view, agreement), "fig-trust",
                          _e(f"Short-run (search) accuracy against long-run (confirmation) accuracy of the confirmed "
                             f"students{how}. Points on the dotted diagonal kept their accuracy.")),
                "</div>"]
    return _section("trust-section", "Can the short runs be trusted?", out)


def _search_section(view: StudyView, figs: _Figures,
                    importances: Mapping[str, Mapping[str, float]] | None) -> str:
    numbers, values = analysis.hypervolume_history(view)
    return _section("search", "How the search went", [
        "<h3>Hypervolume over trials</h3>",
        _figure_or_note(figs, figures.hypervolume_history(numbers, values), "fig-hypervolume",
                        "The share of the objective space the front dominates, after each trial (objectives "
                        "normalised: accuracy on [0, 1], costs on [0, the teacher's cost]). A curve that has stopped "
                        "rising suggests more trials would change little.", "No trial finished."),
        "<h3>Optimisation history per objective</h3>",
        _figure_or_note(figs, figures.history(view), "fig-history",
                        "Each completed trial's value; the orange line is the best so far.", "No trial completed."),
        "<h3>Parameter importances</h3>",
        _figure_or_note(figs, figures.importances(view, importances) if importances else None, "fig-importances",
                        "How much of each objective's variation each parameter explains (fANOVA; the importances of "
                        "one objective sum to 1).", "Parameter importances are not available for this study (they "
                        "need enough completed trials and are computed by the search backend)."),
        "<h3>Architecture parameters</h3>",
        _figure_or_note(figs, figures.parallel(view), "fig-parallel",
                        "One line per completed student through its architecture values, coloured by accuracy. Drag "
                        "along an axis to keep only the lines in a range. List parameters get one axis per position; "
                        "\u201cabsent\u201d marks a student without that position (e.g. fewer layers).",
                        "No completed trial with architecture parameters."),
    ])


_SPACE_COLUMNS = ("name", "kind", "range", "step", "log", "choices", "value", "per", "when")


def _details_section(view: StudyView) -> str:
    facts = view.facts
    rows = []
    space = facts.get("space") if isinstance(facts.get("space"), Mapping) else {}
    for row in space.get("params") or []:
        if isinstance(row, Mapping):
            cells = "".join(f"<td>{_e(fmt(row.get(k)) if row.get(k) is not None else '')}</td>"
                            for k in _SPACE_COLUMNS)
            rows.append(f"<tr>{cells}</tr>")
    head = "".join(f"<th>{h}</th>" for h in _SPACE_COLUMNS)
    table = (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>" if rows
             else _missing("Not recorded."))
    problems = [r for r in view.records if r.state in ("failed", "infeasible", "pruned") and r.reason]
    listing = "".join(f"<li>trial {r.number} ({_e(r.state)}): {_e(r.reason)}</li>" for r in problems[:200])
    more = f"<p class=\"note\">… and {len(problems) - 200} more.</p>" if len(problems) > 200 else ""
    return _section("details", "Details", [
        "<h3>Search space</h3>", table,
        "<details><summary>Reasons recorded for infeasible, failed and pruned trials "
        f"({len(problems)})</summary><ul>{listing}</ul>{more}</details>" if problems else "",
    ])
