"""The report's plotly figures, one function each; a function returns None when the study has
nothing to draw for it (the page then says so in words).

Only SVG traces are used except where plotly has no SVG form (the 3-D view and parallel
coordinates need WebGL). Every user-supplied string reaching plotly goes through
``plot_text`` first: plotly renders some HTML tags in hover text and tick labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from naskd.front import non_dominated
from naskd.metrics import names_where
from naskd.report.analysis import Curve, GapRow, RankAgreement, TermRow, best_so_far
from naskd.report.view import StudyView, arch_text, fmt, label, number, plot_text, table
from naskd.results import TrialRecord

#: Size of the largest marker, in pixels; others scale by area with their params.
MAX_MARKER_PX = 26
MIN_MARKER_PX = 5
RANK_COLORSCALE = "Viridis"
FADED = "rgba(120, 120, 120, 0.35)"
#: Students stopped at a rung: present, but plainly not front material.
STOPPED = "rgba(120, 120, 120, 0.6)"
#: Learning curves of students off the front: there to show the crowd, not to be read one by one.
FADED_LINE = "rgba(120, 120, 120, 0.3)"
#: The front's learning curves, one colour each (cycled past ten).
FRONT_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
KNEE_COLOR = "#d62728"
TEACHER_COLOR = "#444"
#: Metrics spanning orders of magnitude: log axes keep small students apart.
LOG_METRICS = frozenset(names_where(lambda m: m.log_axis))


_GRID = "#e6e9ef"
#: A small template of our own: plotly's named ones hold settings for every trace type, and
#: plotly deep-copies the template into every figure (most of the time a report takes to build).
#: ``ticklabeloverflow="allow"``: plotly's default ("hide past div") measures every tick label
#: in the browser to hide those overflowing the figure, one forced layout each, and with
#: ``automargin`` none overflows.
_AXIS = dict(gridcolor=_GRID, zerolinecolor=_GRID, linecolor="#c8ced8", automargin=True, ticklabeloverflow="allow")
TEMPLATE = go.layout.Template(
    layout=dict(
        paper_bgcolor="white",
        plot_bgcolor="white",
        font=dict(color="#2a3f5f"),
        hovermode="closest",
        colorway=["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"],
        xaxis=_AXIS,
        yaxis=_AXIS,
    )
)


def _layout(fig: go.Figure, height: int, **extra: Any) -> go.Figure:
    # An explicit height: without one a plotly figure fills the viewport, and several share a page.
    settings: dict[str, Any] = dict(
        template=TEMPLATE,
        height=height,
        margin=dict(l=70, r=30, t=40, b=60),
        hoverlabel=dict(align="left", font_size=12),
    )
    fig.update_layout(**{**settings, **extra})
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    return fig


def _axis_type(metric: str, values: Sequence[float]) -> str:
    return "log" if metric in LOG_METRICS and values and min(values) > 0 else "linear"


def _axis(metric: str, values: Sequence[float]) -> dict[str, Any]:
    """Axis settings: log for counts spanning orders of magnitude, labelled at 1, 2 and 5 per
    decade (plotly's default labels every digit, which collide on short log ranges)."""
    kind = _axis_type(metric, values)
    return dict(type=kind, dtick="D2") if kind == "log" else dict(type=kind)


def _sizes(params: Sequence[float | None]) -> tuple[list[float], float]:
    """Marker sizes (params, area-scaled by plotly) and the sizeref that maps the largest to
    ``MAX_MARKER_PX``; missing params get the smallest marker."""
    known = [p for p in params if p is not None and p > 0]
    top = max(known) if known else 1.0
    return [p if p is not None and p > 0 else 0.0 for p in params], 2.0 * top / MAX_MARKER_PX**2


def _rank_marker(
    view: StudyView,
    records: Sequence[TrialRecord],
    sizes: list[float] | None = None,
    sizeref: float | None = None,
    size: int = 8,
) -> dict[str, Any]:
    ranks = [view.ranks.get(r.number, max(view.ranks.values(), default=0) + 1) for r in records]
    marker: dict[str, Any] = dict(
        color=ranks,
        colorscale=RANK_COLORSCALE,
        cmin=0,
        cmax=max(1, max(ranks, default=1)),
        line=dict(width=0.6, color="white"),
        opacity=0.9,
        colorbar=dict(title=dict(text="Pareto rank<br>(0 = front)"), thickness=14, len=0.8, dtick=1),
    )
    if sizes is not None:
        marker.update(size=sizes, sizemode="area", sizeref=sizeref, sizemin=MIN_MARKER_PX)
    else:
        marker.update(size=size)
    return marker


def _teacher_line(fig: go.Figure, view: StudyView, **where: Any) -> None:
    teacher = view.teacher_value("accuracy")
    if teacher is not None:
        fig.add_hline(
            y=teacher,
            line=dict(color=TEACHER_COLOR, dash="dot", width=1.5),
            annotation_position="top left",
            annotation_text=f"{'teachers’ ensemble' if view.teachers else 'teacher'} accuracy "
            f"{fmt(teacher, 'accuracy')}",
            **where,
        )


def pareto_2d(view: StudyView, x_metric: str) -> go.Figure | None:
    """Accuracy against one cost: completed students (size = params, colour = Pareto rank over
    the study's objectives), the non-dominated line of this view, the knee, the teacher's
    accuracy; students stopped at a rung faded at the accuracy they had there (a rung value:
    never ranked, never on the line); infeasible and failed trials faded at the bottom (they
    have no accuracy)."""
    done = [
        r
        for r in view.complete
        if number(r.metrics.get("accuracy")) is not None and number(r.metrics.get(x_metric)) is not None
    ]
    stopped = [
        r
        for r in view.stopped
        if number(r.metrics.get("accuracy")) is not None and number(r.metrics.get(x_metric)) is not None
    ]
    drawn = {r.number for r in stopped}  # a stopped student without an accuracy joins the crosses
    faded = [
        r
        for r in view.records
        if (r.state in ("infeasible", "failed") or (r.state == "pruned" and r.number not in drawn))
        and number(r.metrics.get(x_metric)) is not None
    ]
    if not done and not stopped and not faded:
        return None
    x_done = [float(r.metrics[x_metric]) for r in done]
    y_done = [float(r.metrics["accuracy"]) for r in done]
    sizes, sizeref = _sizes([number(r.metrics.get("params")) for r in done])
    fig = go.Figure()
    if done:
        fig.add_trace(
            go.Scatter(
                x=x_done,
                y=y_done,
                mode="markers",
                name="completed students",
                marker=_rank_marker(view, done, sizes[: len(done)], sizeref),
                hovertext=[view.hover(r) for r in done],
                hoverinfo="text",
            )
        )
        points = np.column_stack([y_done, x_done])
        on_line = sorted(non_dominated(points, ["maximize", "minimize"]), key=lambda i: (x_done[i], -y_done[i]))
        fig.add_trace(
            go.Scatter(
                x=[x_done[i] for i in on_line],
                y=[y_done[i] for i in on_line],
                mode="lines",
                line=dict(shape="hv", color="black", width=1.5, dash="dash"),
                name=f"front in this view (accuracy vs {label(x_metric)})",
                hoverinfo="skip",
            )
        )
        knee = [r for r in done if r.number == view.knee]
        if knee:
            fig.add_trace(
                go.Scatter(
                    x=[float(knee[0].metrics[x_metric])],
                    y=[float(knee[0].metrics["accuracy"])],
                    mode="markers",
                    name=f"knee (trial {knee[0].number})",
                    marker=dict(symbol="star", size=20, color="rgba(0,0,0,0)", line=dict(color=KNEE_COLOR, width=2)),
                    hovertext=[view.hover(knee[0])],
                    hoverinfo="text",
                )
            )
    y_stopped = [float(r.metrics["accuracy"]) for r in stopped]
    if stopped:
        # After the completed students, so a hover on the first trace's first point is a complete one.
        fig.add_trace(
            go.Scatter(
                x=[float(r.metrics[x_metric]) for r in stopped],
                y=y_stopped,
                mode="markers",
                name="stopped at a rung (accuracy there; never on the front)",
                marker=dict(symbol="circle-open", size=7, color=STOPPED, line=dict(width=1.2)),
                hovertext=[view.hover(r) for r in stopped],
                hoverinfo="text",
            )
        )
    if faded:
        # Never trained (over budget) or broken: no accuracy, so they sit just below the
        # worst student drawn, where they show how much of the space was unusable.
        low = min(y_done + y_stopped, default=0.0)
        span = max(max(y_done + y_stopped, default=1.0) - low, 0.05)
        floor = low - 0.08 * span
        fig.add_trace(
            go.Scatter(
                x=[float(r.metrics[x_metric]) for r in faded],
                y=[floor] * len(faded),
                mode="markers",
                name="infeasible / failed (not trained; drawn at the bottom)",
                marker=dict(symbol="x-thin", size=9, color=FADED, line=dict(width=2, color=FADED)),
                hovertext=[view.hover(r) for r in faded],
                hoverinfo="text",
            )
        )
    _teacher_line(fig, view)
    all_x = x_done + [float(r.metrics[x_metric]) for r in (*stopped, *faded)]
    fig.update_xaxes(title_text=label(x_metric), **_axis(x_metric, all_x))
    fig.update_yaxes(title_text="accuracy (validation)")
    return _layout(fig, 520)


def pareto_3d(view: StudyView) -> go.Figure | None:
    """The three default objectives (accuracy, latency p50, params) of completed students."""
    names = ("latency_p50_ms", "params", "accuracy")
    done = [r for r in view.complete if all(number(r.metrics.get(m)) is not None for m in names)]
    if not done:
        return None
    fig = go.Figure()
    fig.add_trace(
        go.Scatter3d(
            x=[float(r.metrics["latency_p50_ms"]) for r in done],
            y=[float(r.metrics["params"]) for r in done],
            z=[float(r.metrics["accuracy"]) for r in done],
            mode="markers",
            name="completed students",
            marker=_rank_marker(view, done, size=5),
            hovertext=[view.hover(r) for r in done],
            hoverinfo="text",
        )
    )
    knee = [r for r in done if r.number == view.knee]
    if knee:
        k = knee[0]
        fig.add_trace(
            go.Scatter3d(
                x=[float(k.metrics["latency_p50_ms"])],
                y=[float(k.metrics["params"])],
                z=[float(k.metrics["accuracy"])],
                mode="markers",
                name=f"knee (trial {k.number})",
                marker=dict(symbol="diamond-open", size=10, color=KNEE_COLOR),
                hovertext=[view.hover(k)],
                hoverinfo="text",
            )
        )
    params = [float(r.metrics["params"]) for r in done]
    fig.update_layout(
        scene=dict(
            xaxis_title=label("latency_p50_ms"),
            yaxis_title=label("params"),
            zaxis_title="accuracy",
            yaxis=_axis("params", params),
        )
    )
    return _layout(fig, 600)


def capacity_gap(view: StudyView) -> go.Figure | None:
    """Accuracy and teacher agreement against the capacity ratio (log axis), teacher accuracy as a line."""
    done = [r for r in view.complete if number(r.metrics.get("capacity_ratio")) not in (None, 0.0)]
    if not done:
        return None
    fig = go.Figure()
    for metric, symbol in (("accuracy", "circle"), ("teacher_agreement", "diamond")):
        rows = [r for r in done if number(r.metrics.get(metric)) is not None]
        if rows:
            fig.add_trace(
                go.Scatter(
                    x=[float(r.metrics["capacity_ratio"]) for r in rows],
                    y=[float(r.metrics[metric]) for r in rows],
                    mode="markers",
                    name=label(metric),
                    marker=dict(symbol=symbol, size=8, opacity=0.8),
                    hovertext=[_short_hover(r, ("capacity_ratio", "accuracy", "teacher_agreement")) for r in rows],
                    hoverinfo="text",
                )
            )
    _teacher_line(fig, view)
    ratios = [float(r.metrics["capacity_ratio"]) for r in done]
    fig.update_xaxes(title_text="capacity ratio (teacher params / student params)", **_axis("capacity_ratio", ratios))
    fig.update_yaxes(title_text="accuracy / agreement")
    return _layout(fig, 460)


def kd_gain(view: StudyView, rows: Sequence[GapRow]) -> go.Figure | None:
    """KD gain and gap closure against the capacity ratio, side by side."""
    if not rows:
        return None
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.1,
        subplot_titles=(
            "KD gain = distilled − scratch accuracy",
            "gap closure = (distilled − scratch) / (teacher − scratch)",
        ),
    )
    hover = {g.number: _gap_hover(view, g) for g in rows}
    fig.add_trace(
        go.Scatter(
            x=[g.capacity_ratio for g in rows],
            y=[g.kd_gain for g in rows],
            mode="markers",
            name="KD gain",
            marker=dict(size=9, color=[_gain_colour(g.kd_gain) for g in rows], line=dict(width=1, color="#555")),
            hovertext=[hover[g.number] for g in rows],
            hoverinfo="text",
        ),
        row=1,
        col=1,
    )
    closing = [g for g in rows if g.gap_closure is not None]
    if closing:
        fig.add_trace(
            go.Scatter(
                x=[g.capacity_ratio for g in closing],
                y=[g.gap_closure for g in closing],
                mode="markers",
                name="gap closure",
                marker=dict(size=9, symbol="diamond"),
                hovertext=[hover[g.number] for g in closing],
                hoverinfo="text",
            ),
            row=1,
            col=2,
        )
        fig.add_hline(
            y=1.0,
            line=dict(color=TEACHER_COLOR, dash="dot", width=1),
            row=1,
            col=2,
            annotation_text="teacher's accuracy",
            annotation_position="top left",
        )
    for col in (1, 2):
        fig.add_hline(y=0.0, line=dict(color="#888", width=1), row=1, col=col)
    fig.update_xaxes(title_text="capacity ratio", **_axis("capacity_ratio", [g.capacity_ratio for g in rows]))
    fig.update_yaxes(title_text="accuracy difference", row=1, col=1)
    fig.update_yaxes(title_text="share of the gap closed", row=1, col=2)
    return _layout(fig, 460, showlegend=False)


def trust(view: StudyView, agreement: RankAgreement) -> go.Figure:
    """Short-run against long-run accuracy of the confirmed students, with the diagonal."""
    by_number = {r.number: r for r in view.complete}
    fig = go.Figure()
    low = min(*agreement.short, *agreement.long)
    high = max(*agreement.short, *agreement.long)
    fig.add_trace(
        go.Scatter(
            x=[low, high],
            y=[low, high],
            mode="lines",
            name="long = short",
            line=dict(color="#888", dash="dot"),
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=agreement.short,
            y=agreement.long,
            mode="markers",
            name="confirmed students",
            marker=dict(size=10),
            hovertext=[
                _short_hover(by_number[n], ("accuracy", "long_accuracy", "long_steps")) for n in agreement.numbers
            ],
            hoverinfo="text",
        )
    )
    fig.update_xaxes(title_text="accuracy in the search (target budget)")
    fig.update_yaxes(title_text="long-run accuracy (confirmation)")
    return _layout(fig, 460)


def learning_curves(view: StudyView, curves: Sequence[Curve]) -> go.Figure | None:
    """Validation accuracy against training (epochs when every rung and the target are whole
    epochs, else steps; log axis), one line per student: the front's coloured and named, the
    rest faded (a dotted line for those stopped at a rung, ending where they stopped)."""
    if not curves:
        return None
    fid = view.fidelity
    per = fid.steps_per_epoch if fid.in_epochs else None
    unit = (lambda s: s / per) if per else (lambda s: float(s))  # noqa: E731
    specs = {r.number: r.spec for r in view.records}
    fig = go.Figure()
    # Faded lines first, so the front's are drawn on top of them; one legend entry per kind.
    kinds = [
        ("pruned", "stopped at a rung", dict(color=FADED_LINE, width=1, dash="dot")),
        ("complete", "trained to the target, not on the front", dict(color=FADED_LINE, width=1)),
    ]
    for state, name, line in kinds:
        for i, c in enumerate(c for c in curves if c.state == state and not c.front):
            fig.add_trace(
                go.Scatter(
                    x=[unit(s) for s in c.steps],
                    y=c.accuracy,
                    mode="lines+markers",
                    name=name,
                    legendgroup=state,
                    showlegend=i == 0,
                    line=line,
                    marker=dict(size=4, color=FADED_LINE),
                    meta=c.number,
                    hovertext=_curve_hover(view, c, specs[c.number]),
                    hoverinfo="text",
                )
            )
    for i, c in enumerate(c for c in curves if c.front):
        color = FRONT_COLORS[i % len(FRONT_COLORS)]
        knee = " ★ knee" if c.number == view.knee else ""
        fig.add_trace(
            go.Scatter(
                x=[unit(s) for s in c.steps],
                y=c.accuracy,
                mode="lines+markers",
                name=f"trial {c.number} (front){knee}",
                legendgroup="front",
                line=dict(color=color, width=2.5),
                marker=dict(size=7, color=color),
                meta=c.number,
                hovertext=_curve_hover(view, c, specs[c.number]),
                hoverinfo="text",
            )
        )
    _teacher_line(fig, view)
    budgets = sorted(
        {*fid.rungs, *([fid.target_steps] if fid.target_steps else []), *(s for c in curves for s in c.steps)}
    )
    xs = [unit(b) for b in budgets]
    fig.update_xaxes(
        title_text=("training epochs" if per else "training steps") + " (log scale)",
        type="log" if xs and min(xs) > 0 else "linear",
        tickvals=xs,
        ticktext=[fmt(int(x)) if float(x).is_integer() else fmt(x) for x in xs],
    )
    fig.update_yaxes(title_text="accuracy (validation)")
    _layout(fig, 500)
    # A legend entry per front student: beside the plot, where a long list scrolls instead of
    # pushing the plot down.
    fig.update_layout(legend=dict(orientation="v", yanchor="top", y=1, xanchor="left", x=1.02))
    return fig


def _curve_hover(view: StudyView, c: Curve, spec: Mapping[str, Any]) -> list[str]:
    what = "on the front" if c.front else "stopped at a rung" if c.state == "pruned" else "trained to the target"
    head = f"<b>trial {c.number}</b> · {what}" + (" · knee" if c.number == view.knee else "")
    where = ["target budget" if c.at_target(i) else f"rung {c.rungs[i]}" for i in range(len(c.steps))]
    return [
        "<br>".join(
            [
                head,
                plot_text(f"{w}: {view.fidelity.long_label(s)}"),
                f"accuracy: {plot_text(fmt(a, 'accuracy'))}",
                plot_text(arch_text(spec)),
            ]
        )
        for w, s, a in zip(where, c.steps, c.accuracy)
    ]


def loss_terms(view: StudyView, names: Sequence[str], rows: Sequence[TermRow]) -> go.Figure | None:
    """One stacked bar per front student (front order), one trace per named loss term: the
    term's weighted value at the end of training; a bar's height is the loss minimised.
    A negative term stacks below zero (``barmode="relative"``)."""
    if not rows or not names:
        return None
    labels = [f"trial {row.number}" + (" ★" if row.number == view.knee else "") for row in rows]
    fig = go.Figure()
    for i, name in enumerate(names):
        having = [(text, row) for text, row in zip(labels, rows) if name in row.terms]  # no empty bars
        hover = []
        for _, row in having:
            share = row.share(name)
            hover.append(
                "<br>".join(
                    [
                        f"<b>trial {row.number}</b>" + (" · knee" if row.number == view.knee else ""),
                        f"{plot_text(name)}: {plot_text(fmt(row.terms[name]))}"
                        + ("" if share is None else f" ({share:.0%} of the loss)"),
                        f"total loss: {plot_text(fmt(row.total))}",
                    ]
                )
            )
        fig.add_trace(
            go.Bar(
                x=[text for text, _ in having],
                y=[row.terms[name] for _, row in having],
                name=plot_text(name),
                marker_color=FRONT_COLORS[i % len(FRONT_COLORS)],
                hovertext=hover,
                hoverinfo="text",
            )
        )
    fig.update_xaxes(title_text="front student", type="category", categoryorder="array", categoryarray=labels)
    fig.update_yaxes(title_text="weighted loss term at the end of training")
    return _layout(fig, 420, barmode="relative")


def hypervolume_history(numbers: Sequence[int], values: Sequence[float]) -> go.Figure | None:
    if not numbers:
        return None
    fig = go.Figure(
        go.Scatter(
            x=list(numbers),
            y=list(values),
            mode="lines+markers",
            name="hypervolume",
            line=dict(shape="hv"),
            marker=dict(size=4),
            hovertemplate="after trial %{x}: %{y:.4f}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="trial number")
    fig.update_yaxes(title_text="normalised hypervolume", rangemode="tozero")
    return _layout(fig, 380, showlegend=False)


def history(view: StudyView) -> go.Figure | None:
    """Every objective's value per completed trial, with the best so far."""
    if not view.complete:
        return None
    k = len(view.objectives)
    fig = make_subplots(
        rows=k,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=[f"{label(o)} ({d})" for o, d in zip(view.objectives, view.directions)],
    )
    for row, (metric, direction) in enumerate(zip(view.objectives, view.directions), start=1):
        rows = [r for r in view.complete if number(r.metrics.get(metric)) is not None]
        values = [float(r.metrics[metric]) for r in rows]
        numbers = [r.number for r in rows]
        fig.add_trace(
            go.Scatter(
                x=numbers,
                y=values,
                mode="markers",
                name=label(metric),
                marker=dict(size=6, color="#1f77b4", opacity=0.7),
                hovertext=[_short_hover(r, (metric,)) for r in rows],
                hoverinfo="text",
            ),
            row=row,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=numbers,
                y=best_so_far(values, direction),
                mode="lines",
                name="best so far",
                line=dict(shape="hv", color="#ff7f0e"),
                hoverinfo="skip",
            ),
            row=row,
            col=1,
        )
        fig.update_yaxes(title_text=label(metric), **_axis(metric, values), row=row, col=1)
    fig.update_xaxes(title_text="trial number", row=k, col=1)
    return _layout(fig, 120 + 230 * k, showlegend=False)


def parallel(view: StudyView) -> go.Figure | None:
    """Parallel coordinates of the architecture (and any searched recipe) values of completed
    students, coloured by accuracy; list params (``per``) get one axis per position."""
    done = [r for r in view.complete if number(r.metrics.get("accuracy")) is not None]
    columns = _spec_columns(done, view)
    if not done or not columns:
        return None
    dims = [_dimension(name, [values.get(r.number) for r in done]) for name, values in columns]
    acc = [float(r.metrics["accuracy"]) for r in done]
    dims.append(dict(label="accuracy", values=acc))
    fig = go.Figure(
        go.Parcoords(
            line=dict(
                color=acc,
                colorscale="Viridis",
                showscale=True,
                colorbar=dict(title=dict(text="accuracy"), thickness=14),
            ),
            dimensions=dims,
            labelangle=-20,
        )
    )
    return _layout(fig, 480, margin=dict(l=70, r=70, t=90, b=40))


def importances(view: StudyView, values: Mapping[str, Mapping[str, float]]) -> go.Figure | None:
    """One horizontal bar chart per objective, largest importance on top."""
    objectives = [o for o in values if values[o]]
    if not objectives:
        return None
    cols = min(3, len(objectives))
    rows = math.ceil(len(objectives) / cols)
    fig = make_subplots(
        rows=rows, cols=cols, horizontal_spacing=0.18, subplot_titles=[plot_text(label(str(o))) for o in objectives]
    )
    tallest = 1
    for i, objective in enumerate(objectives):
        items = sorted(
            ((str(k), float(v)) for k, v in values[objective].items() if number(v) is not None), key=lambda kv: kv[1]
        )
        tallest = max(tallest, len(items))
        fig.add_trace(
            go.Bar(
                x=[v for _, v in items],
                y=[plot_text(k) for k, _ in items],
                orientation="h",
                name=plot_text(str(objective)),
                marker_color="#1f77b4",
                hovertemplate="%{y}: %{x:.3f}<extra></extra>",
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_xaxes(title_text="importance", rangemode="tozero")
    return _layout(fig, 100 + rows * (60 + 26 * tallest), showlegend=False)


# --- helpers -----------------------------------------------------------------------------


def _short_hover(record: TrialRecord, metrics: Sequence[str]) -> str:
    lines = [f"<b>trial {record.number}</b>"]
    lines += [
        f"{plot_text(label(m))}: {plot_text(fmt(record.metrics.get(m), m))}" for m in metrics if m in record.metrics
    ]
    lines.append(plot_text(arch_text(record.spec)))
    return "<br>".join(lines)


def _gain_colour(gain: float) -> str:
    """Green where the teacher helped, red where it hurt, grey where it made no difference."""
    return "#2ca02c" if gain > 0 else "#d62728" if gain < 0 else "#bbbbbb"


def _gap_hover(view: StudyView, g: GapRow) -> str:
    closure = "undefined (teacher not above scratch)" if g.gap_closure is None else f"{g.gap_closure:.2f}"
    record = next(r for r in view.complete if r.number == g.number)
    return "<br>".join(
        [
            f"<b>trial {g.number}</b>",
            f"capacity ratio: {fmt(g.capacity_ratio)}",
            f"distilled: {fmt(g.accuracy)}",
            f"scratch: {fmt(g.scratch)}",
            f"KD gain: {g.kd_gain * 100:+.2f} points",
            f"gap closure: {closure}",
            plot_text(arch_text(record.spec)),
        ]
    )


def _spec_columns(records: Sequence[TrialRecord], view: StudyView) -> list[tuple[str, dict[int, Any]]]:
    """Axis name -> {trial number: value}: every architecture key in the space's order (lists
    split by position as ``width_0``, ``width_1``, the names the space gives them), then the
    recipe keys that vary between trials (a fixed recipe says nothing)."""
    space = table(view.facts, "space")
    order = {row.get("name"): i for i, row in enumerate(space.get("params") or []) if isinstance(row, Mapping)}
    columns: dict[tuple[int, str, int], dict[int, Any]] = {}  # (declared position, name, list index)
    for r in records:
        arch = table(r.spec, "arch")
        for key, value in arch.items():
            at = order.get(key, len(order))
            items = enumerate(value) if isinstance(value, (list, tuple)) else [(-1, value)]
            for i, item in items:
                columns.setdefault((at, str(key), i), {})[r.number] = item
    named = [(name if i < 0 else f"{name}_{i}", values) for (_, name, i), values in sorted(columns.items())]
    recipe: dict[str, dict[int, Any]] = {}
    for r in records:
        for key, value in (r.spec.get("recipe") or {}).items():
            recipe.setdefault(f"recipe.{key}", {})[r.number] = value
    varying = [(k, v) for k, v in sorted(recipe.items()) if len({repr(x) for x in v.values()}) > 1]
    return named + varying


def _dimension(name: str, values: Sequence[Any]) -> dict[str, Any]:
    """A parcoords axis: numbers stay numbers; anything else (strings, booleans) becomes
    indices with the values as tick labels. A trial without the value (a list shorter than
    this position, a conditional param that was off) sits on an extra "absent" tick below."""
    present = [v for v in values if v is not None]
    numeric = present and all(number(v) is not None for v in present) and not any(isinstance(v, bool) for v in present)
    if numeric:
        nums = [float(v) for v in present]
        whole = all(v.is_integer() for v in nums)
        if len(present) == len(values):
            distinct = sorted(set(nums))
            if whole and len(distinct) <= 8:  # a few counts (depth 1-3): one tick each, no "1.2"
                span = [distinct[0], distinct[-1]] if len(distinct) > 1 else [distinct[0] - 1, distinct[0] + 1]
                return dict(
                    label=plot_text(name),
                    values=nums,
                    tickvals=distinct,
                    ticktext=[fmt(int(v)) for v in distinct],
                    range=span,
                )
            return dict(label=plot_text(name), values=nums)
        low, high = min(nums), max(nums)
        gap = (high - low) * 0.15 or max(abs(low) * 0.15, 1.0)
        absent = low - gap
        ticks = sorted(set(np.round(np.linspace(low, high, 4), 6).tolist()))
        if whole:  # counts (depth, width) get whole-number ticks
            ticks = sorted({float(round(t)) for t in ticks})
        return dict(
            label=plot_text(name),
            values=[absent if v is None else float(v) for v in values],
            range=[absent, high],
            tickvals=[absent, *ticks],
            ticktext=["absent", *(fmt(t) for t in ticks)],
        )
    categories = sorted({fmt(v) for v in present})
    if any(v is None for v in values):
        categories = ["absent", *categories]
    index = {c: i for i, c in enumerate(categories)}
    coded = [index["absent" if v is None else fmt(v)] for v in values]
    return dict(
        label=plot_text(name),
        values=coded,
        range=[0, max(1, len(categories) - 1)],
        tickvals=list(range(len(categories))),
        ticktext=[plot_text(c) for c in categories],
    )
