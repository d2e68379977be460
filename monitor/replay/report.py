"""The replay's report: one self-contained HTML file (plotly, its script embedded, so it
opens with no network at all).

A :class:`Recorder` samples the pipeline's published status after every batch of the
replay (the report asks for small batches: the alerts do not depend on them); :func:`write`
draws, per model: each series' detector scores against their thresholds over the model's
events, with the reference period and the alert episodes shaded; the reference against
the current distribution at each series' first alert; data quality and rejections over
time; with labels, the production model's and the challenger's performance; and a table of
every alert with its evidence.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from monitor.alerting.alerts import Alert
from monitor.serve.snapshot import PipelineStatus

QUALITY = ("missing", "wrong_type", "out_of_range")
MAX_DISTRIBUTIONS = 24  # series' first alerts drawn as reference-vs-current bars


@dataclass
class ModelTrace:
    """What the recorder saw of one model, one entry per sample."""

    events: list[int] = field(default_factory=list)
    scores: dict[tuple[str, str], list[tuple[int, float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    quality: dict[str, list[tuple[int, int, int, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    performance: list[tuple[int, dict[str, float | None], dict[str, float | None]]] = field(
        default_factory=list
    )
    warmup: int | None = None
    reference_source: str = "warmup"


class Recorder:
    """Samples of the pipeline's status, taken after each batch."""

    def __init__(self) -> None:
        self.models: dict[str, ModelTrace] = defaultdict(ModelTrace)
        self.rejected: list[tuple[int, dict[str, int]]] = []

    def record(self, status: PipelineStatus) -> None:
        lines = 0
        for name, m in status.models.items():
            trace = self.models[name]
            lines += m.events
            if trace.events and trace.events[-1] == m.events:
                continue
            trace.events.append(m.events)
            trace.warmup = m.warmup
            trace.reference_source = str(m.reference.get("source", "warmup"))
            for s in m.series:
                trace.quality[s.name].append((m.events, s.missing, s.wrong_type, s.out_of_range))
                for d in s.detectors:
                    if math.isfinite(d.score):
                        trace.scores[(s.name, d.detector)].append(
                            (m.events, float(d.score), float(d.threshold))
                        )
            learner = m.learner.metrics if m.learner is not None else {}
            if m.performance.labelled:
                trace.performance.append(
                    (m.performance.labelled, dict(m.performance.metrics), dict(learner))
                )
        self.rejected.append((lines, dict(status.rejected)))


def _episodes(
    alerts: list[Alert],
) -> dict[tuple[str, str | None, str], list[tuple[int, int | None]]]:
    """(model, feature, detector) -> [(start event, end event or None)] of each episode."""
    starts: dict[str, tuple[tuple[str, str | None, str], int]] = {}
    ends: dict[str, int] = {}
    for a in alerts:
        if a.status == "firing" and a.id not in starts:
            starts[a.id] = ((a.model, a.feature, a.detector), a.start_event)
        elif a.status == "resolved":
            ends[a.id] = a.at_event
    out: dict[tuple[str, str | None, str], list[tuple[int, int | None]]] = defaultdict(list)
    for aid, (key, start) in starts.items():
        out[key].append((start, ends.get(aid)))
    return out


def _series_figure(model: str, series: str, trace: ModelTrace, episodes: Any) -> go.Figure:
    detectors = sorted(d for (s, d) in trace.scores if s == series)
    fig = make_subplots(
        rows=len(detectors),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=[f"{d}: score and threshold" for d in detectors],
    )
    last = trace.events[-1] if trace.events else 0
    for row, det in enumerate(detectors, 1):
        points = trace.scores[(series, det)]
        x = [p[0] for p in points]
        fig.add_trace(
            go.Scatter(
                x=x, y=[p[1] for p in points], name=f"{det} score", line={"color": "#0969da"}
            ),
            row=row,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[p[2] for p in points],
                name=f"{det} threshold",
                line={"color": "#8c959f", "dash": "dash"},
            ),
            row=row,
            col=1,
        )
        for start, end in episodes.get((model, series, det), []):
            fig.add_vrect(
                x0=start,
                x1=end if end is not None else last,
                fillcolor="#cf222e",
                opacity=0.15,
                line_width=0,
                row=row,
                col=1,
            )
        if trace.reference_source == "warmup" and trace.warmup:
            fig.add_vrect(
                x0=0,
                x1=trace.warmup,
                fillcolor="#8c959f",
                opacity=0.15,
                line_width=0,
                row=row,
                col=1,
            )
    fig.update_layout(
        title=f"{model} / {series}",
        height=170 * max(1, len(detectors)) + 60,
        showlegend=False,
        margin={"l": 50, "r": 20, "t": 60, "b": 30},
    )
    fig.update_xaxes(title_text="event", row=len(detectors), col=1)
    return fig


def _distribution_figure(a: Alert) -> go.Figure | None:
    ref, cur = a.reference_summary, a.current_summary
    if not ref or not cur:
        return None
    if "top" in ref:
        names = sorted(set(ref["top"]) | set(cur["top"]) | {"(unseen)"})
        refs = [ref["top"].get(n, 0.0) for n in names]
        curs = [
            cur["top"].get(n, 0.0) if n != "(unseen)" else cur.get("unseen_share", 0.0)
            for n in names
        ]
        title = f"{a.feature}: category shares at event {a.at_event:,}"
    else:
        names = ["p5", "p50", "p95", "mean", "std"]
        refs = [ref.get(n) for n in names]
        curs = [cur.get(n) for n in names]
        title = f"{a.feature}: reference vs the last values at event {a.at_event:,}"
    fig = go.Figure(
        [
            go.Bar(name="reference", x=names, y=refs, marker_color="#8c959f"),
            go.Bar(name="current", x=names, y=curs, marker_color="#cf222e"),
        ]
    )
    fig.update_layout(
        title=title, barmode="group", height=300, margin={"l": 50, "r": 20, "t": 50, "b": 30}
    )
    return fig


def _quality_figure(
    model: str, trace: ModelTrace, rejected: list[tuple[int, dict[str, int]]]
) -> go.Figure:
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["data quality (cumulative)", "rejected records (all models)"],
    )
    for series, rows in trace.quality.items():
        for k, q in enumerate(QUALITY, 1):
            if any(r[k] for r in rows):
                fig.add_trace(
                    go.Scatter(
                        x=[r[0] for r in rows], y=[r[k] for r in rows], name=f"{series} {q}"
                    ),
                    row=1,
                    col=1,
                )
    reasons = sorted({r for _, counts in rejected for r in counts})
    for reason in reasons:
        fig.add_trace(
            go.Scatter(
                x=[n for n, _ in rejected],
                y=[c.get(reason, 0) for _, c in rejected],
                name=f"rejected {reason}",
            ),
            row=1,
            col=2,
        )
    fig.update_layout(
        title=f"{model}: data quality", height=320, margin={"l": 50, "r": 20, "t": 60, "b": 30}
    )
    fig.update_xaxes(title_text="event")
    return fig


def _performance_figure(model: str, trace: ModelTrace, episodes: Any) -> go.Figure | None:
    if not trace.performance:
        return None
    fig = go.Figure()
    keys = sorted({k for _, prod, _ in trace.performance for k, v in prod.items() if v is not None})
    for key in keys:
        xs = [n for n, _, _ in trace.performance]
        fig.add_trace(
            go.Scatter(
                x=xs, y=[p.get(key) for _, p, _ in trace.performance], name=f"production {key}"
            )
        )
        if any(c.get(key) is not None for _, _, c in trace.performance):
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=[c.get(key) for _, _, c in trace.performance],
                    name=f"challenger {key}",
                    line={"dash": "dot"},
                )
            )
    for start, end in episodes.get((model, None, "concept_drift"), []):
        fig.add_vrect(
            x0=start,
            x1=end if end is not None else trace.performance[-1][0],
            fillcolor="#cf222e",
            opacity=0.15,
            line_width=0,
        )
    fig.update_layout(
        title=f"{model}: the production model and the online challenger",
        height=340,
        margin={"l": 50, "r": 20, "t": 60, "b": 30},
    )
    fig.update_xaxes(title_text="labelled pair")
    return fig


def _alert_table(alerts: list[Alert]) -> str:
    cols = [
        "id",
        "status",
        "model",
        "feature",
        "detector",
        "severity",
        "score",
        "threshold",
        "p_value",
        "window_size",
        "started_at",
        "at_event",
        "resolution",
    ]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{c}</th>" for c in cols)
    rows = "".join(
        "<tr>" + "".join(f"<td>{cell(getattr(a, c))}</td>" for c in cols) + "</tr>" for a in alerts
    )
    return f"<table class='alerts'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def write(path: Path, recorder: Recorder, alerts: list[Alert], *, title: str) -> int:
    """Write the report to ``path``; returns the number of plots in it."""
    episodes = _episodes(alerts)
    parts: list[str] = []
    figures: list[go.Figure] = []

    def plot(fig: go.Figure) -> None:
        figures.append(fig)
        parts.append(
            pio.to_html(
                fig,
                full_html=False,
                include_plotlyjs=len(figures) == 1,
                config={"displaylogo": False, "responsive": True},
            )
        )

    for model, trace in recorder.models.items():
        parts.append(f"<h2>{html.escape(model)}</h2>")
        parts.append(
            f"<p>{trace.events[-1] if trace.events else 0:,} events; reference from "
            f"{html.escape(trace.reference_source)}"
            + (f" (events 0 to {trace.warmup:,}, shaded grey)" if trace.warmup else "")
            + "; alert episodes shaded red.</p>"
        )
        for series in dict.fromkeys(s for s, _ in trace.scores):
            plot(_series_figure(model, series, trace, episodes))
        firsts: dict[str, Alert] = {}
        for a in alerts:
            if a.model == model and a.status == "firing" and a.feature and a.feature not in firsts:
                firsts[a.feature] = a
        if firsts:
            parts.append("<h3>Reference against current at each series' first alert</h3>")
        for a in list(firsts.values())[:MAX_DISTRIBUTIONS]:
            fig = _distribution_figure(a)
            if fig is not None:
                plot(fig)
        plot(_quality_figure(model, trace, recorder.rejected))
        perf = _performance_figure(model, trace, episodes)
        if perf is not None:
            plot(perf)
    parts.append(f"<h2>Every alert ({len(alerts):,})</h2>" + _alert_table(alerts))
    style = (
        "body{font:14px/1.4 system-ui,sans-serif;margin:20px;color:#1f2328}"
        "table.alerts{border-collapse:collapse;font-size:12px}"
        "table.alerts td,table.alerts th{border-bottom:1px solid #eaeef2;padding:2px 6px;"
        "text-align:left}"
    )
    doc = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        + "".join(parts)
        + "</body></html>"
    )
    path.write_text(doc, encoding="utf-8")
    return len(figures)
