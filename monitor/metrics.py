"""Prometheus metrics, pull-model: a collector reads the daemon's state at scrape time.

Labels are bounded: ``model`` and ``feature`` come from the configuration (never from
events), ``detector``, ``reason`` and ``severity`` from fixed sets.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sinks.base import REASONS

from .decode import REJECT_REASONS

if TYPE_CHECKING:
    from .daemon import Daemon


class DriftlineCollector(Collector):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        p = d.pipeline
        events = CounterMetricFamily(
            "driftline_events", "Prediction events accepted, per model.", labels=["model"]
        )
        ref_ready = GaugeMetricFamily(
            "driftline_reference_ready",
            "1 once the model's reference is complete.",
            labels=["model"],
        )
        ref_events = GaugeMetricFamily(
            "driftline_reference_events", "Events in the model's reference.", labels=["model"]
        )
        last_ts = GaugeMetricFamily(
            "driftline_last_event_timestamp_seconds",
            "Event time (ts) of the newest event seen, per model.",
            labels=["model"],
        )
        schema = CounterMetricFamily(
            "driftline_schema_violations",
            "Events carrying feature keys the model does not declare.",
            labels=["model"],
        )
        missing = CounterMetricFamily(
            "driftline_feature_missing",
            "Missing (null or absent) values per series.",
            labels=["model", "feature"],
        )
        wrong = CounterMetricFamily(
            "driftline_feature_wrong_type",
            "Values of the wrong type per series (treated as missing).",
            labels=["model", "feature"],
        )
        out_of_range = CounterMetricFamily(
            "driftline_feature_out_of_range",
            "Values beyond float64 (Infinity, 1e400) per series (treated as missing).",
            labels=["model", "feature"],
        )
        outliers = CounterMetricFamily(
            "driftline_feature_outliers",
            "Values beyond the series' reference fences (ADWIN sees them clipped).",
            labels=["model", "feature"],
        )
        unseen = CounterMetricFamily(
            "driftline_feature_unseen_category",
            "Categorical values absent from the reference, per series.",
            labels=["model", "feature"],
        )
        score = GaugeMetricFamily(
            "driftline_drift_score",
            "Drift statistic at the detector's most recent check.",
            labels=["model", "feature", "detector"],
        )
        threshold = GaugeMetricFamily(
            "driftline_drift_threshold",
            "Value of the score at which the detector signals.",
            labels=["model", "feature", "detector"],
        )
        active = GaugeMetricFamily(
            "driftline_drift_active",
            "1 while a drift alert is firing for the series.",
            labels=["model", "feature", "detector"],
        )
        alerts = CounterMetricFamily(
            "driftline_alerts", "Alert episodes started.", labels=["model", "detector", "severity"]
        )
        for model, mon in p.monitors.items():
            events.add_metric([model], mon.events)
            ref_ready.add_metric([model], 1.0 if mon.ready else 0.0)
            ref_events.add_metric([model], mon.reference_events)
            if model in p.last_ts:
                last_ts.add_metric([model], p.last_ts[model])
            schema.add_metric([model], mon.schema_violations)
            for j, name in enumerate(mon.schema.series):
                missing.add_metric([model, name], int(mon.missing[j]))
                wrong.add_metric([model, name], int(mon.wrong_type[j]))
                out_of_range.add_metric([model, name], int(mon.out_of_range[j]))
            bank = mon.bank
            if bank is not None:
                for j, name in enumerate(mon.schema.categorical):
                    unseen.add_metric([model, name], int(bank.unseen[j]))
                for j, name in enumerate(mon.schema.numeric):
                    outliers.add_metric([model, name], int(bank.outliers[j]))
                for (feature, det), st in bank.status.items():
                    labels = [model, feature, det]
                    if math.isfinite(st.score):
                        score.add_metric(labels, st.score)
                    if math.isfinite(st.threshold):
                        threshold.add_metric(labels, st.threshold)
                    active.add_metric(labels, 1.0 if p.policy.active(model, feature, det) else 0.0)
            for (det, severity), n in sorted(list(p.policy.state(model).fired_total.items())):
                alerts.add_metric([model, det, severity], n)
        yield from (
            events,
            ref_ready,
            ref_events,
            last_ts,
            schema,
            missing,
            wrong,
            out_of_range,
            outliers,
            unseen,
            score,
            threshold,
            active,
            alerts,
        )
        yield from self._performance()

        rejected = CounterMetricFamily(
            "driftline_events_rejected", "Records rejected, by reason.", labels=["reason"]
        )
        for reason in REJECT_REASONS:
            rejected.add_metric([reason], p.rejected.get(reason, 0))
        yield rejected
        dead = CounterMetricFamily(
            "driftline_dead_letters",
            "Rejected records forwarded to the dead-letter topic.",
            labels=["reason"],
        )
        for reason in REJECT_REASONS:
            dead.add_metric([reason], d.dead_lettered.get(reason, 0))
        yield dead
        lag = d.source.lag() if d.source_started else None
        if lag is not None:
            yield GaugeMetricFamily(
                "driftline_consumer_lag_records",
                "Records between the consumer and the assigned partitions' high watermarks.",
                value=lag,
            )
        yield GaugeMetricFamily(
            "driftline_kafka_connected",
            "1 while the Kafka consumer is connected.",
            value=1.0 if d.source_started else 0.0,
        )
        owned = GaugeMetricFamily(
            "driftline_partition_owned",
            "1 for each partition whose state this instance holds (of the prediction topic "
            "and, co-partitioned, of the labels topic).",
            labels=["partition"],
        )
        for part in sorted(d.owned):
            owned.add_metric([str(part)], 1.0)
        yield owned
        model_owned = GaugeMetricFamily(
            "driftline_model_owned",
            "1 for the models whose state this instance holds (filter per-model series of "
            "a group by it).",
            labels=["model"],
        )
        for model in sorted(p.owner):
            model_owned.add_metric([model], 1.0)
        yield model_owned
        yield CounterMetricFamily(
            "driftline_misrouted_events",
            "Events read from another partition than their model's (key events by model).",
            value=p.misrouted,
        )
        if d.store is not None:
            yield CounterMetricFamily(
                "driftline_checkpoints", "Checkpoint rounds written.", value=d.checkpoints
            )
            yield GaugeMetricFamily(
                "driftline_checkpoint_duration_seconds",
                "Time the last checkpoint round took (snapshot, serialization, store).",
                value=d.checkpoint_seconds,
            )
            yield GaugeMetricFamily(
                "driftline_checkpoint_size_bytes",
                "Bytes written by the last checkpoint round.",
                value=d.checkpoint_bytes,
            )
            restores = CounterMetricFamily(
                "driftline_state_restores",
                "Partition assignments by what their state was restored from.",
                labels=["result"],
            )
            for result in ("restored", "fresh", "failed"):
                restores.add_metric([result], d.restores.get(result, 0))
            yield restores
        yield from self._sinks()
        yield CounterMetricFamily("driftline_batches", "Batches processed.", value=p.batches)
        yield CounterMetricFamily(
            "driftline_batch_processing_seconds",
            "Time spent decoding, detecting and alerting.",
            value=p.processing_seconds,
        )
        yield CounterMetricFamily(
            "driftline_commit_failures",
            "Offset commits that failed (retried with the next batch).",
            value=d.commit_failures,
        )

    def _sinks(self) -> Iterator[Metric]:
        """Alert delivery, per configured sink."""
        per_sink = [
            (CounterMetricFamily, "driftline_alerts_sent", "Alerts delivered.", "sent"),
            (
                CounterMetricFamily,
                "driftline_alert_delivery_retries",
                "Delivery attempts retried.",
                "retries",
            ),
            (
                CounterMetricFamily,
                "driftline_alerts_deduplicated",
                "Alerts not sent again: already delivered with the same id, status, severity.",
                "deduplicated",
            ),
            (GaugeMetricFamily, "driftline_outbox_alerts", "Alerts in the outbox.", "outbox_depth"),
            (
                CounterMetricFamily,
                "driftline_outbox_dropped",
                "Alerts dropped because the outbox was full.",
                "outbox_dropped",
            ),
        ]
        families = [
            (kind(name, text, labels=["sink"]), attr) for kind, name, text, attr in per_sink
        ]
        failures = CounterMetricFamily(
            "driftline_alert_delivery_failures",
            "Failed delivery attempts (and alerts dropped from a full outbox: overflow).",
            labels=["sink", "reason"],
        )
        for sink in self.daemon.pipeline.sinks:
            st = sink.stats()
            for family, attr in families:
                family.add_metric([sink.name], getattr(st, attr))
            for reason in REASONS:
                failures.add_metric([sink.name, reason], st.failures.get(reason, 0))
        yield failures
        yield from (family for family, _ in families)

    def _performance(self) -> Iterator[Metric]:
        """The label join and the production model's prequential metrics, per model."""
        p = self.daemon.pipeline
        joined = CounterMetricFamily(
            "driftline_labels_joined", "Labels joined to their prediction.", labels=["model"]
        )
        expired = CounterMetricFamily(
            "driftline_predictions_expired",
            "Predictions that left the join buffer without a label.",
            labels=["model"],
        )
        orphan = CounterMetricFamily(
            "driftline_labels_orphan", "Labels without a known prediction.", labels=["model"]
        )
        pending = GaugeMetricFamily(
            "driftline_predictions_awaiting_label",
            "Predictions in the join buffer.",
            labels=["model"],
        )
        pairs = CounterMetricFamily(
            "driftline_labelled_predictions", "Prediction-label pairs scored.", labels=["model"]
        )
        concept = GaugeMetricFamily(
            "driftline_concept_drift_active",
            "1 while a concept drift alert is firing.",
            labels=["model"],
        )
        gauges = {
            name: GaugeMetricFamily(f"driftline_production_{name}", text, labels=["model"])
            for name, text in (
                ("accuracy", "Accuracy of the model's own predictions, sliding window."),
                ("log_loss", "Log-loss of the model's probabilities, sliding window."),
                ("f1", "F1 of the positive class, sliding window."),
                ("decayed_error_rate", "Exponentially decayed error rate."),
                ("mae", "Mean absolute error, sliding window."),
                ("rmse", "Root mean squared error, sliding window."),
                ("decayed_mae", "Exponentially decayed absolute error."),
            )
        }
        for model, join in p.joins.items():
            joined.add_metric([model], join.counts.joined)
            expired.add_metric([model], join.counts.expired)
            orphan.add_metric([model], join.counts.orphan)
            pending.add_metric([model], len(join.pending))
            perf = p.performance[model]
            pairs.add_metric([model], perf.n)
            concept.add_metric([model], 1.0 if p.policy.concept_active(model) else 0.0)
            for name, value in perf.metrics().items():
                if value is not None and name in gauges:
                    gauges[name].add_metric([model], value)
        yield from (joined, expired, orphan, pending, pairs, concept, *gauges.values())
        learned = CounterMetricFamily(
            "driftline_learner_learned",
            "Pairs the online learner learned (test-then-train).",
            labels=["model"],
        )
        dropped = CounterMetricFamily(
            "driftline_learner_dropped",
            "Pairs dropped because the learner's queue was full.",
            labels=["model"],
        )
        lag = GaugeMetricFamily(
            "driftline_learner_lag_pairs", "Pairs waiting for the online learner.", labels=["model"]
        )
        adapted = CounterMetricFamily(
            "driftline_learner_adaptations",
            "Learner replacements after concept drift.",
            labels=["model"],
        )
        online = {
            name: GaugeMetricFamily(
                f"driftline_online_{name}",
                f"The online learner's {name.replace('_', ' ')}, prequential.",
                labels=["model"],
            )
            for name in (
                "accuracy",
                "log_loss",
                "f1",
                "decayed_error_rate",
                "mae",
                "rmse",
                "decayed_mae",
            )
        }
        for model, learner in p.learners.items():
            learned.add_metric([model], learner.learned)
            dropped.add_metric([model], learner.dropped)
            lag.add_metric([model], learner.lag)
            adapted.add_metric([model], learner.adaptations)
            for name, value in learner.metrics().items():
                if value is not None and name in online:
                    online[name].add_metric([model], value)
        yield from (learned, dropped, lag, adapted, *online.values())
