"""The one status snapshot: immutable data that ``/status``, ``/metrics`` and ``/ui`` read.

The worker thread that owns the pipeline's state builds a :class:`PipelineStatus` at the
end of every batch (and after a restore or a drop; ``monitor.online.statuses`` makes it from the
live state) and publishes it by one reference assignment; the event loop adds a
``DaemonStatus`` of what it owns (Kafka, partitions, checkpoints, sinks, components).
Readers never touch live state, so a scrape can neither see half a batch nor change
anything. The only deferred value is a KS p-value, computed when first read from the
immutable statistic of the last check (thread-safe, see ``detectors._ks_pvalue``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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

    @property
    def monitored(self) -> float:
        """1.0 while detectors watch the series, else 0.0 (a metric's value)."""
        return float(self.not_monitored is None and bool(self.detectors))


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
    # version, source, made_at, at_event, events, sha256, features; pending (a re-baseline
    # from the next events, while they come)
    reference: Mapping[str, Any] = field(default_factory=dict)

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
    # model -> series -> detector -> recent (event, score, threshold), for /ui
    history: Mapping[str, Mapping[str, Mapping[str, tuple[tuple[int, float, float], ...]]]] = field(
        default_factory=dict
    )


EMPTY = PipelineStatus({}, {}, 0, 0, 0.0, 0)


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def jsonable(value: Any) -> Any:
    """numpy scalars to Python numbers (for the status document)."""
    if isinstance(value, np.generic):
        return value.item()
    return value
