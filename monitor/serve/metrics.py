"""Prometheus metrics, pull-model: a collector reads the status snapshot at scrape time
(as prometheus_client's ``GCCollector`` reads ``gc.get_stats()``), never live state.

Labels are bounded: ``model`` and ``feature`` come from the configuration (never from
events), ``detector``, ``reason``, ``severity``, ``sink`` and ``component`` from fixed or
configured sets. Families are declared in tables: a family is a name, a help text, its
labels and how to read its samples from the snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.ingest.decode import REJECT_REASONS
from monitor.ingest.kafka import RESET_REASONS
from monitor.serve.snapshot import ModelStatus
from monitor.serve.status import Snapshot
from sinks.base import REASONS

Samples = Iterable[tuple[list[str], float]]
COUNTER, GAUGE = CounterMetricFamily, GaugeMetricFamily


def _per_model(read: Callable[[ModelStatus], float | None]) -> Callable[[Snapshot], Samples]:
    def samples(snap: Snapshot) -> Samples:
        for name, m in snap.pipeline.models.items():
            value = read(m)
            if value is not None:
                yield [name], value

    return samples


def _per_series(kind: str) -> Callable[[Snapshot], Samples]:
    def samples(snap: Snapshot) -> Samples:
        for name, m in snap.pipeline.models.items():
            for s in m.series:
                value = getattr(s, kind)
                if value is not None:
                    yield [name, s.name], value

    return samples


def _per_detector(read: Callable[[Any], float | None]) -> Callable[[Snapshot], Samples]:
    def samples(snap: Snapshot) -> Samples:
        for name, m in snap.pipeline.models.items():
            for s in m.series:
                for d in s.detectors:
                    value = read(d)
                    if value is not None and value == value:  # NaN: no check yet
                        yield [name, s.name, d.detector], value

    return samples


def _metric(key: str, source: str) -> Callable[[Snapshot], Samples]:
    """A metric of the production model (``source`` "performance") or of the online
    learner ("learner"), per model, where it applies."""

    def samples(snap: Snapshot) -> Samples:
        for name, m in snap.pipeline.models.items():
            holder = m.performance if source == "performance" else m.learner
            value = None if holder is None else holder.metrics.get(key)
            if value is not None:
                yield [name], value

    return samples


def _fired(snap: Snapshot) -> Samples:
    for name, m in snap.pipeline.models.items():
        for detector, severity, n in m.fired_total:
            yield [name, detector, severity], n


def _by(
    values: Callable[[Snapshot], dict[str, int]], keys: Iterable[str]
) -> Callable[[Snapshot], Samples]:
    fixed = tuple(keys)
    return lambda snap: (([k], values(snap).get(k, 0)) for k in fixed)


def _one(read: Callable[[Snapshot], float | None]) -> Callable[[Snapshot], Samples]:
    def samples(snap: Snapshot) -> Samples:
        value = read(snap)
        if value is not None:
            yield [], value

    return samples


def _learner(attr: str) -> Callable[[Snapshot], Samples]:
    def samples(snap: Snapshot) -> Samples:
        for name, m in snap.pipeline.models.items():
            if m.learner is not None:
                yield [name], getattr(m.learner, attr)

    return samples


def _sink(attr: str) -> Callable[[Snapshot], Samples]:
    return lambda snap: (([n], getattr(st, attr)) for n, st in snap.daemon.sinks.items())


def _sink_failures(snap: Snapshot) -> Samples:
    for n, st in snap.daemon.sinks.items():
        for reason in REASONS:
            yield [n, reason], st.failures.get(reason, 0)


PERFORMANCE = {
    "accuracy": "Accuracy of {who}, sliding window.",
    "log_loss": "Log-loss of {who}'s probabilities, sliding window.",
    "f1": "F1 of the positive class for {who}, sliding window.",
    "decayed_error_rate": "Exponentially decayed error rate of {who}.",
    "mae": "Mean absolute error of {who}, sliding window.",
    "rmse": "Root mean squared error of {who}, sliding window.",
    "decayed_mae": "Exponentially decayed absolute error of {who}.",
}

# (kind, name without driftline_ and _total, help, labels, samples)
FAMILIES: list[tuple[type, str, str, list[str], Callable[[Snapshot], Samples]]] = [
    (
        COUNTER,
        "events",
        "Prediction events accepted, per model.",
        ["model"],
        _per_model(lambda m: m.events),
    ),
    (
        GAUGE,
        "reference_ready",
        "1 once the model's reference is complete.",
        ["model"],
        _per_model(lambda m: float(m.reference_ready)),
    ),
    (
        GAUGE,
        "series_monitored",
        "1 while detectors watch the series; 0 while the reference warms up or when it "
        "cannot be monitored (too few usable reference values: see /status).",
        ["model", "feature"],
        _per_series("monitored"),
    ),
    (
        GAUGE,
        "reference_events",
        "Events in the model's reference.",
        ["model"],
        _per_model(lambda m: m.reference_events),
    ),
    (
        GAUGE,
        "last_event_timestamp_seconds",
        "Event time (ts) of the newest event seen, per model.",
        ["model"],
        _per_model(lambda m: m.last_ts if m.last_ts == m.last_ts else None),
    ),
    (
        COUNTER,
        "schema_violations",
        "Events carrying feature keys the model does not declare.",
        ["model"],
        _per_model(lambda m: m.schema_violations),
    ),
    (
        COUNTER,
        "feature_missing",
        "Missing values (null, absent, NaN) per series.",
        ["model", "feature"],
        _per_series("missing"),
    ),
    (
        COUNTER,
        "feature_wrong_type",
        "Values of the wrong type per series (treated as missing).",
        ["model", "feature"],
        _per_series("wrong_type"),
    ),
    (
        COUNTER,
        "feature_out_of_range",
        "Values beyond float64 (Infinity, 1e400) per series (treated as missing).",
        ["model", "feature"],
        _per_series("out_of_range"),
    ),
    (
        COUNTER,
        "feature_outliers",
        "Values beyond the series' reference fences (ADWIN sees them clipped).",
        ["model", "feature"],
        _per_series("outliers"),
    ),
    (
        COUNTER,
        "feature_unseen_category",
        "Categorical values absent from the reference, per series.",
        ["model", "feature"],
        _per_series("unseen"),
    ),
    (
        GAUGE,
        "drift_score",
        "Drift statistic at the detector's most recent check.",
        ["model", "feature", "detector"],
        _per_detector(lambda d: d.score),
    ),
    (
        GAUGE,
        "drift_threshold",
        "Value of the score at which the detector signals.",
        ["model", "feature", "detector"],
        _per_detector(lambda d: d.threshold),
    ),
    (
        GAUGE,
        "drift_active",
        "1 while a drift alert is firing for the series.",
        ["model", "feature", "detector"],
        _per_detector(lambda d: float(d.alert_id is not None)),
    ),
    (COUNTER, "alerts", "Alert episodes started.", ["model", "detector", "severity"], _fired),
    (
        GAUGE,
        "model_owned",
        "1 for the models whose state this instance holds (filter a group's per-model series).",
        ["model"],
        _per_model(lambda m: 1.0 if m.partition is not None else None),
    ),
    # labels and performance
    (
        COUNTER,
        "labels_joined",
        "Labels joined to their prediction.",
        ["model"],
        _per_model(lambda m: m.performance.joined),
    ),
    (
        COUNTER,
        "predictions_expired",
        "Predictions that left the join buffer without a label.",
        ["model"],
        _per_model(lambda m: m.performance.expired),
    ),
    (
        COUNTER,
        "labels_orphan",
        "Labels that left the join buffer without their prediction.",
        ["model"],
        _per_model(lambda m: m.performance.orphan),
    ),
    (
        GAUGE,
        "predictions_awaiting_label",
        "Predictions in the join buffer.",
        ["model"],
        _per_model(lambda m: m.performance.awaiting_label),
    ),
    (
        GAUGE,
        "labels_awaiting_prediction",
        "Labels that came first, waiting for their prediction.",
        ["model"],
        _per_model(lambda m: m.performance.awaiting_prediction),
    ),
    (
        COUNTER,
        "labelled_predictions",
        "Prediction-label pairs scored.",
        ["model"],
        _per_model(lambda m: m.performance.labelled),
    ),
    (
        GAUGE,
        "concept_drift_active",
        "1 while a concept drift alert is firing.",
        ["model"],
        _per_model(lambda m: float(m.performance.concept_alert_id is not None)),
    ),
    *[
        (
            GAUGE,
            f"production_{k}",
            text.format(who="the model's own predictions"),
            ["model"],
            _metric(k, "performance"),
        )
        for k, text in PERFORMANCE.items()
    ],
    (
        COUNTER,
        "learner_learned",
        "Pairs the online learner learned (test-then-train).",
        ["model"],
        _learner("learned"),
    ),
    (
        COUNTER,
        "learner_dropped",
        "Pairs the online learner did not learn (queue full, restarts).",
        ["model"],
        _learner("dropped"),
    ),
    (
        GAUGE,
        "learner_lag_pairs",
        "Pairs waiting for the online learner.",
        ["model"],
        _learner("lag_pairs"),
    ),
    (
        COUNTER,
        "learner_adaptations",
        "Learner replacements after concept drift.",
        ["model"],
        _learner("adaptations"),
    ),
    *[
        (
            GAUGE,
            f"online_{k}",
            text.format(who="the online learner"),
            ["model"],
            _metric(k, "learner"),
        )
        for k, text in PERFORMANCE.items()
    ],
    # records, Kafka, state
    (
        COUNTER,
        "events_rejected",
        "Records rejected, by reason.",
        ["reason"],
        _by(lambda s: dict(s.pipeline.rejected), REJECT_REASONS),
    ),
    (
        COUNTER,
        "dead_letters",
        "Rejected records forwarded to the dead-letter topic.",
        ["reason"],
        _by(lambda s: dict(s.daemon.dead_lettered), REJECT_REASONS),
    ),
    (
        COUNTER,
        "dead_letter_failures",
        "Attempts to write dead letters that failed (retried).",
        [],
        _one(lambda s: s.daemon.dead_letter_failures),
    ),
    (
        COUNTER,
        "internal_errors",
        "Unexpected errors while handling a batch (its records rejected).",
        [],
        _one(lambda s: s.pipeline.internal_errors + s.daemon.internal_errors),
    ),
    (
        GAUGE,
        "consumer_lag_records",
        "Records between the consumer and the assigned partitions' high watermarks.",
        [],
        _one(lambda s: s.daemon.lag),
    ),
    (
        GAUGE,
        "kafka_connected",
        "1 while the broker answers the daemon's health probe.",
        [],
        _one(lambda s: float(s.daemon.connected)),
    ),
    (
        COUNTER,
        "offset_resets",
        "Partition positions that could not be used as saved (log replaced, truncated, retention).",
        ["reason"],
        _by(lambda s: dict(s.daemon.offset_resets), RESET_REASONS),
    ),
    (
        GAUGE,
        "partition_owned",
        "1 for each partition whose state this instance holds (of the prediction topic and, "
        "co-partitioned, of the labels topic).",
        ["partition"],
        lambda s: (([str(p)], 1.0) for p in s.daemon.partitions),
    ),
    (
        GAUGE,
        "partition_restoring",
        "1 for each assigned partition paused until its state is read.",
        ["partition"],
        lambda s: (([str(p)], 1.0) for p in s.daemon.restoring),
    ),
    (
        COUNTER,
        "misrouted_events",
        "Events read from another partition than their model's (key events by model).",
        [],
        _one(lambda s: s.pipeline.misrouted),
    ),
    (
        GAUGE,
        "kafka_consumergroup_lag",
        "Records behind the end of each assigned partition (as kafka_exporter's "
        "kafka_consumergroup_lag).",
        ["consumergroup", "topic", "partition"],
        lambda snap: (
            ([snap.daemon.group_id, t, str(p)], n) for (t, p), n in sorted(snap.daemon.lags.items())
        ),
    ),
    (
        GAUGE,
        "event_lag_seconds",
        "Wall clock minus the event time of the newest event seen, per model.",
        ["model"],
        lambda snap: (
            (
                [
                    name,
                ],
                snap.daemon.wall_clock - m.last_ts,
            )
            for name, m in snap.pipeline.models.items()
            if m.last_ts == m.last_ts and snap.daemon.wall_clock
        ),
    ),
    (
        GAUGE,
        "config_last_reload_successful",
        "1 if the last configuration reload succeeded (or none was tried), else 0.",
        [],
        _one(lambda s: None if s.daemon.reload is None else float(s.daemon.reload.successful)),
    ),
    (
        GAUGE,
        "config_last_reload_success_timestamp_seconds",
        "When the configuration was last loaded successfully (start or reload), Unix time.",
        [],
        _one(lambda s: None if s.daemon.reload is None else s.daemon.reload.success_at),
    ),
    (
        COUNTER,
        "checkpoints",
        "Checkpoint rounds written.",
        [],
        _one(lambda s: s.daemon.checkpoints if s.daemon.store else None),
    ),
    (
        COUNTER,
        "checkpoint_failures",
        "Checkpoint rounds that failed (retried with backoff).",
        [],
        _one(lambda s: s.daemon.checkpoint_failures if s.daemon.store else None),
    ),
    (
        GAUGE,
        "checkpoint_duration_seconds",
        "Time the last checkpoint round took (snapshot, serialization, store).",
        [],
        _one(lambda s: s.daemon.checkpoint_seconds if s.daemon.store else None),
    ),
    (
        GAUGE,
        "checkpoint_size_bytes",
        "Bytes written by the last checkpoint round.",
        [],
        _one(lambda s: s.daemon.checkpoint_bytes if s.daemon.store else None),
    ),
    (
        GAUGE,
        "checkpoint_timestamp_seconds",
        "When the last checkpoint succeeded (Unix time).",
        [],
        _one(lambda s: s.daemon.checkpoint_at),
    ),
    (
        COUNTER,
        "state_restores",
        "Partition assignments by what their state was restored from.",
        ["result"],
        _by(lambda s: dict(s.daemon.restores), ("restored", "fresh", "failed")),
    ),
    (
        COUNTER,
        "component_restarts",
        "Restarts of a background component that stopped working (sink delivery, learner).",
        ["component"],
        lambda s: (([c.name], c.restarts) for c in s.daemon.components if c.name != "kafka"),
    ),
    (
        GAUGE,
        "component_up",
        "1 while a supervised component works.",
        ["component"],
        lambda s: (([c.name], float(c.error is None)) for c in s.daemon.components),
    ),
    # sinks
    (COUNTER, "alerts_sent", "Alerts delivered.", ["sink"], _sink("sent")),
    (COUNTER, "alert_delivery_retries", "Delivery attempts retried.", ["sink"], _sink("retries")),
    (
        COUNTER,
        "alerts_deduplicated",
        "Alerts not sent again: already delivered with the same id, status, severity.",
        ["sink"],
        _sink("deduplicated"),
    ),
    (GAUGE, "outbox_alerts", "Alerts in the outbox.", ["sink"], _sink("outbox_depth")),
    (
        COUNTER,
        "outbox_dropped",
        "Alerts dropped because the outbox was full.",
        ["sink"],
        _sink("outbox_dropped"),
    ),
    (
        COUNTER,
        "outbox_write_failures",
        "Outbox appends that failed (the alerts stay in memory until the disk works).",
        ["sink"],
        _sink("outbox_write_failures"),
    ),
    (
        COUNTER,
        "alert_delivery_failures",
        "Failed delivery attempts (and alerts dropped from a full outbox: overflow).",
        ["sink", "reason"],
        _sink_failures,
    ),
    (COUNTER, "batches", "Batches processed.", [], _one(lambda s: s.pipeline.batches)),
    (
        COUNTER,
        "batch_processing_seconds",
        "Time spent detecting and alerting.",
        [],
        _one(lambda s: s.pipeline.processing_seconds),
    ),
    (
        COUNTER,
        "commit_failures",
        "Offset commits that failed (retried with the next batch).",
        [],
        _one(lambda s: s.daemon.commit_failures),
    ),
]


class DriftlineCollector(Collector):
    """Every family of :data:`FAMILIES`, read from ``snapshot()`` once per scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        for kind, name, text, labels, samples in FAMILIES:
            family = kind(f"driftline_{name}", text, labels=labels)
            for values, value in samples(snap):
                family.add_metric(values, value)
            yield family
