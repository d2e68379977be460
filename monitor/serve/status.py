"""``/status``: one JSON document made from a :class:`Snapshot`, and nothing else.

A snapshot is the pipeline's last published :class:`~monitor.serve.snapshot.PipelineStatus`
(built by the worker after each batch) and a :class:`DaemonStatus` (what the event loop
owns: Kafka, partitions, checkpoints, dead letters, sinks, components), both immutable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from monitor.ingest.timestamps import iso
from monitor.serve.snapshot import ModelStatus, PipelineStatus, finite
from sinks.base import SinkStats


@dataclass(frozen=True)
class ComponentStatus:
    """A supervised component: restarts so far, and why it is not working (None: fine)."""

    name: str
    restarts: int
    error: str | None


@dataclass(frozen=True)
class DaemonStatus:
    version: str
    ready: bool
    stopping: bool
    connected: bool
    kafka_error: str | None
    disconnected_s: float | None
    topic: str
    group_id: str
    assignment: tuple[str, ...]
    lag: int | None
    partitions: tuple[int, ...]
    restoring: Mapping[int, str]  # partitions paused until their checkpoint can be read
    positions: Mapping[tuple[str, int], int]
    dead_lettered: Mapping[str, int]
    dead_letter_failures: int
    dead_letter_error: str | None
    commit_failures: int
    internal_errors: int  # batches whose processing failed as a whole (their records rejected)
    offset_resets: Mapping[str, int]
    store: str | None
    memory_only: bool
    checkpoints: int
    checkpoint_failures: int
    checkpoint_error: str | None
    checkpoint_seconds: float
    checkpoint_bytes: int
    checkpoint_at: float | None
    restores: Mapping[str, int]
    sinks: Mapping[str, SinkStats]
    components: tuple[ComponentStatus, ...]
    reload: Any = None  # monitor.app.reloader.ReloadStatus: the last reload
    lags: Mapping[tuple[str, int], int] = field(default_factory=dict)  # per partition
    wall_clock: float = 0.0  # when this status was taken (for event-time lag)


@dataclass(frozen=True)
class Snapshot:
    pipeline: PipelineStatus
    daemon: DaemonStatus


def model_document(m: ModelStatus) -> dict[str, Any]:
    series: dict[str, Any] = {}
    for s in m.series:
        doc: dict[str, Any] = {
            "type": s.type,
            "missing": s.missing,
            "wrong_type": s.wrong_type,
            "out_of_range": s.out_of_range,
            "detectors": {
                d.detector: {
                    "score": finite(d.score),
                    "threshold": finite(d.threshold),
                    "p_value": d.p_value,
                    "drifting": d.drifting,
                    "window_size": d.window_size,
                    "reference_size": d.reference_size,
                    "alert_id": d.alert_id,
                }
                for d in s.detectors
            },
        }
        if s.outliers is not None:
            doc["outliers"] = s.outliers
        if s.unseen is not None:
            doc["unseen"] = s.unseen
        doc["monitored"] = bool(s.monitored)
        if s.not_monitored is not None:
            doc["not_monitored"] = s.not_monitored
        series[s.name] = doc
    lrn = m.learner
    perf = m.performance
    return {
        "events": m.events,
        "partition": m.partition,
        "last_event_ts": finite(m.last_ts),
        "reference": {
            "ready": m.reference_ready,
            "events": m.reference_events,
            "warmup": m.warmup,
            **m.reference,
        },
        "schema_violations": m.schema_violations,
        "model_alert_id": m.model_alert_id,
        "online_model": None
        if lrn is None
        else {
            "learner": lrn.learner,
            "learned": lrn.learned,
            "lag_pairs": lrn.lag_pairs,
            "dropped": lrn.dropped,
            "adaptations": lrn.adaptations,
            "restarts": lrn.restarts,
            "metrics": dict(lrn.metrics),
            "error": lrn.error,
        },
        "performance": {
            "task": perf.task,
            "labelled": perf.labelled,
            "metrics": dict(perf.metrics),
            "concept_drift_alert_id": perf.concept_alert_id,
            "labels": {
                "joined": perf.joined,
                "expired": perf.expired,
                "orphan": perf.orphan,
                "awaiting": perf.awaiting_label,
                "waiting_for_prediction": perf.awaiting_prediction,
            },
        },
        "series": series,
    }


def status_document(snap: Snapshot) -> dict[str, Any]:
    p, d = snap.pipeline, snap.daemon
    models = p.models
    return {
        "version": d.version,
        "ready": d.ready,
        "kafka": {
            "connected": d.connected,
            "topic": d.topic,
            "group_id": d.group_id,
            "assignment": list(d.assignment),
            "lag_records": d.lag,
            "lag_records_by_partition": {f"{t}/{p}": n for (t, p), n in sorted(d.lags.items())},
            "last_error": d.kafka_error,
            "disconnected_seconds": d.disconnected_s,
            "offset_resets": dict(d.offset_resets),
        },
        "events_rejected": dict(p.rejected),
        "dead_letters": {
            "sent": dict(d.dead_lettered),
            "failures": d.dead_letter_failures,
            "last_error": d.dead_letter_error,
        },
        "internal_errors": p.internal_errors + d.internal_errors,
        "commit_failures": d.commit_failures,
        "partitions": {
            str(part): {
                "models": sorted(n for n, m in models.items() if m.partition == part),
                "position": {
                    f"{t}/{p_}": o for (t, p_), o in sorted(d.positions.items()) if p_ == part
                },
            }
            for part in d.partitions
        },
        "restoring": {str(k): v for k, v in sorted(d.restoring.items())},
        "misrouted_events": p.misrouted,
        "state": {
            "store": d.store,
            "memory_only": d.memory_only,
            "checkpoints_written": d.checkpoints,
            "checkpoint_failures": d.checkpoint_failures,
            "last_error": d.checkpoint_error,
            "last_checkpoint_seconds": d.checkpoint_seconds,
            "last_checkpoint_bytes": d.checkpoint_bytes,
            "last_checkpoint_at": d.checkpoint_at,
            "restores": dict(d.restores),
        },
        "components": {c.name: {"restarts": c.restarts, "error": c.error} for c in d.components},
        "config": None
        if d.reload is None
        else {
            "last_reload_successful": d.reload.successful,
            "last_reload_success_at": iso(d.reload.success_at),
            "last_reload_error": d.reload.error,
            "last_reload_changed": list(d.reload.changed),
        },
        "alerts_firing": [
            {"model": name, "feature": f, "detector": det, "id": aid}
            for name, m in models.items()
            for f, det, aid in m.firing
        ],
        "sinks": {name: st.as_dict() for name, st in d.sinks.items()},
        "models": {name: model_document(m) for name, m in models.items()},
    }
