"""Statuses made from live state: what the worker publishes (``monitor.serve.snapshot``) after
each batch. Call these from the thread that owns the state."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from detectors import DriftResult
from monitor.online.model_monitor import ModelMonitor
from monitor.online.model_state import ModelState
from monitor.serve.snapshot import (
    DetectorStatus,
    LearnerStatus,
    ModelStatus,
    PerformanceStatus,
    SeriesStatus,
)


def _p_of(result: DriftResult, s: int) -> Callable[[], float]:
    return lambda: float(result.p_value[s])


def model_status(state: ModelState, learner: LearnerStatus | None) -> ModelStatus:
    """The status of one model, copied out of its live state (call it from the thread
    that owns that state)."""
    mon = state.monitor
    schema = mon.schema
    bank = mon.bank
    firing = tuple(state.alerts.firing())
    alert_of = {(f, d): i for f, d, i in firing}
    per_series: dict[str, list[DetectorStatus]] = {name: [] for name in schema.series}
    if bank is not None:
        for g in bank.groups:
            r = g.last
            for s, name in enumerate(g.names):
                if r is None:
                    per_series[name].append(
                        DetectorStatus(
                            g.detector,
                            math.nan,
                            math.nan,
                            False,
                            0,
                            0,
                            alert_of.get((name, g.detector)),
                        )
                    )
                    continue
                per_series[name].append(
                    DetectorStatus(
                        g.detector,
                        float(r.score[s]),
                        float(r.threshold[s]),
                        bool(r.drifting[s]),
                        int(r.window_size[s]),
                        int(r.reference_size[s]),
                        alert_of.get((name, g.detector)),
                        _p_of(r, s),
                    )
                )
    series = []
    n_num = len(schema.numeric)
    for j, name in enumerate(schema.series):
        numeric = j < n_num
        series.append(
            SeriesStatus(
                name,
                "numeric" if numeric else "categorical",
                int(mon.missing[j]),
                int(mon.wrong_type[j]),
                int(mon.out_of_range[j]),
                int(bank.outliers[j]) if bank is not None and numeric else None,
                int(bank.unseen[j - n_num]) if bank is not None and not numeric else None,
                None if bank is None else bank.skipped.get(name),
                tuple(per_series[name]),
            )
        )
    perf, join = state.performance, state.join
    return ModelStatus(
        name=state.name,
        events=mon.events,
        reference_ready=mon.ready,
        reference_events=mon.reference_events,
        warmup=mon.warmup or None,
        schema_violations=mon.schema_violations,
        last_ts=state.last_ts,
        partition=state.partition,
        series=tuple(series),
        firing=firing,
        fired_total=tuple(sorted((d, s, n) for (d, s), n in state.alerts.fired_total.items())),
        performance=PerformanceStatus(
            perf.task,
            perf.n,
            perf.metrics(),
            join.counts.joined,
            join.counts.expired,
            join.counts.orphan,
            len(join.pending),
            len(join.early),
            next((i for f, d, i in firing if d == "concept_drift"), None),
        ),
        learner=learner,
        reference=reference_status(mon),
    )


def reference_status(mon: ModelMonitor) -> dict[str, Any]:
    """Where the model's reference came from, and a re-baseline under way."""
    out: dict[str, Any] = mon.info.to_dict()
    out.pop("events")  # the reference block says it already
    if mon.pending is not None:
        names, made_at, collector = mon.pending
        out["pending"] = {
            "from": "next",
            "events": collector.wanted,
            "collected": collector.n,
            "features": None if names is None else list(names),
            "requested_at": made_at,
        }
    return out
