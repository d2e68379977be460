"""The one status snapshot: immutable data that ``/status``, ``/metrics`` and ``/ui`` read.

The worker thread that owns the pipeline's state builds a :class:`PipelineStatus` at the
end of every batch (and after a restore or a drop) and publishes it by one reference
assignment; the event loop adds a :class:`DaemonStatus` of what it owns (Kafka, partitions,
checkpoints, sinks, components). Readers never touch live state, so a scrape can neither
see half a batch nor change anything. The only deferred value is a KS p-value, computed
when first read from the immutable statistic of the last check (thread-safe, see
``detectors._ks_pvalue``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors import DriftResult

from .model_state import ModelState


@dataclass(frozen=True)
class DetectorStatus:
    detector: str
    score: float  # NaN before the first check
    threshold: float
    drifting: bool
    window_size: int
    reference_size: int
    alert_id: str | None
    p_value_of: Callable[[], float] = field(repr=False, compare=False, default=lambda: math.nan)

    @property
    def p_value(self) -> float | None:
        p = float(self.p_value_of())
        return None if math.isnan(p) else p


@dataclass(frozen=True)
class SeriesStatus:
    name: str
    type: str  # numeric | categorical
    missing: int
    wrong_type: int
    out_of_range: int
    outliers: int | None  # numeric series, once the reference is ready
    unseen: int | None  # categorical series, once the reference is ready
    not_monitored: str | None
    detectors: tuple[DetectorStatus, ...] = ()


@dataclass(frozen=True)
class LearnerStatus:
    learner: str
    learned: int
    lag_pairs: int
    dropped: int
    adaptations: int
    restarts: int
    metrics: Mapping[str, float | None]
    error: str | None


@dataclass(frozen=True)
class PerformanceStatus:
    task: str | None
    labelled: int
    metrics: Mapping[str, float | None]
    joined: int
    expired: int
    orphan: int
    awaiting_label: int  # predictions waiting for their label
    awaiting_prediction: int  # labels that came first, waiting for their prediction
    concept_alert_id: str | None


@dataclass(frozen=True)
class ModelStatus:
    name: str
    events: int
    reference_ready: bool
    reference_events: int
    warmup: int | None
    schema_violations: int
    last_ts: float
    partition: int | None
    series: tuple[SeriesStatus, ...]
    firing: tuple[tuple[str | None, str, str], ...]  # (feature, detector, id)
    fired_total: tuple[tuple[str, str, int], ...]  # (detector, severity, episodes)
    performance: PerformanceStatus
    learner: LearnerStatus | None

    @property
    def model_alert_id(self) -> str | None:
        return next((i for f, d, i in self.firing if f is None and d == "multiple"), None)


@dataclass(frozen=True)
class PipelineStatus:
    models: Mapping[str, ModelStatus]
    rejected: Mapping[str, int]  # by reason, over the partitions this instance holds
    misrouted: int
    batches: int
    processing_seconds: float
    internal_errors: int


EMPTY = PipelineStatus({}, {}, 0, 0, 0.0, 0)


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
    )


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def jsonable(value: Any) -> Any:
    """numpy scalars to Python numbers (for the status document)."""
    if isinstance(value, np.generic):
        return value.item()
    return value
