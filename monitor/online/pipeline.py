"""The one-way flow of a batch: decode -> route by model -> detectors -> alert policy.

:meth:`Pipeline.decode` runs on the event loop and is pure: bytes to per-model columns and
rejections. :meth:`Pipeline.detect` runs in the daemon's one worker thread, the only
writer of the models' state: it counts, detects, joins labels, applies the alert policy
and publishes a fresh :class:`~monitor.serve.snapshot.PipelineStatus`. Sinks are downstream of
this module: the daemon hands them the alerts (tests can call :meth:`Pipeline.process`).

An unexpected error while handling one model's batch does not stop the others: its
records come back as ``internal_error`` rejections (dead-lettered, so nothing is lost),
the error is logged with its traceback (at most every 30 s per kind) and counted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from monitor.alerting.alerts import Alert
from monitor.config.plan import ModelPlan, plan
from monitor.config.schema import PREDICTION, Config
from monitor.ingest.decode import (
    Decoder,
    LabelEvent,
    ModelBatch,
    Rejected,
    decode_labels,
    internal_error,
)
from monitor.ingest.timestamps import MAX_FUTURE_S
from monitor.logs import Throttle
from monitor.online.history import ScoreHistory
from monitor.online.model_monitor import ModelMonitor
from monitor.online.model_state import ModelState
from monitor.online.partitions import PartitionStates
from monitor.online.statuses import model_status
from monitor.serve.snapshot import EMPTY, LearnerStatus, ModelStatus, PipelineStatus
from sinks.base import Sink

log = logging.getLogger("driftline.pipeline")


class Learner(Protocol):
    """The online challenger as the pipeline uses it (see monitor.online.learner)."""

    def submit(self, rows: Any) -> None: ...

    def adapt(self, since: int) -> str: ...

    def status(self) -> LearnerStatus: ...


@dataclass
class Decoded:
    """One fetched batch, decoded (event loop), for :meth:`Pipeline.detect` (worker).
    ``partitions`` are the source partitions of the prediction records, by position."""

    batches: dict[str, ModelBatch] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    partitions: Sequence[int] = ()
    labels: list[LabelEvent] = field(default_factory=list)
    label_rejected: list[Rejected] = field(default_factory=list)
    label_partitions: Sequence[int] = ()


@dataclass
class Detected:
    """What :meth:`Pipeline.detect` made of a batch: its alerts, and prediction records
    whose handling failed (indices into the batch's prediction records)."""

    alerts: list[Alert]
    failed: list[Rejected] = field(default_factory=list)


@dataclass(frozen=True)
class BatchOutcome:
    accepted: int
    rejected: list[Rejected]
    alerts: list[Alert]


class Pipeline:
    """Everything between raw record values and alerts, for every configured model."""

    def __init__(
        self,
        plans: Mapping[str, ModelPlan],
        *,
        learners: Mapping[str, Learner] | None = None,
        max_record_bytes: int = 1_000_000,
        clock: Callable[[], float] = time.time,
        max_future_s: float | None = MAX_FUTURE_S,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self.plans = dict(plans)
        self.clock = clock
        self.max_future_s = max_future_s
        self.max_record_bytes = max_record_bytes
        self.decoder = Decoder(
            self.plans, max_record_bytes=max_record_bytes, clock=clock, max_future_s=max_future_s
        )
        self.learners = dict(learners or {})
        self.states = PartitionStates(self.plans, self.learners)
        self.sinks = list(sinks)  # for process() only: the daemon emits itself
        self.internal_errors = 0
        self.batches = 0
        self.processing_seconds = 0.0
        self._throttle = Throttle(log)
        self._statuses: dict[str, ModelStatus] = {}
        self.history = ScoreHistory()
        self._history_views: dict[str, Any] = {}
        self.status: PipelineStatus = EMPTY
        self.publish()

    @classmethod
    def of(cls, config: Config, sinks: Sequence[Sink] = (), **options: Any) -> Pipeline:
        """A pipeline for every model of a configuration (no online learners)."""
        return cls(
            plan(config), max_record_bytes=config.kafka.max_record_bytes, sinks=sinks, **options
        )

    # -- stage 1: the event loop --------------------------------------------------------
    def decode(
        self,
        values: Sequence[bytes | None],
        partitions: Sequence[int] | None = None,
        record_ts: Sequence[float] | None = None,
        label_values: Sequence[bytes | None] = (),
        label_partitions: Sequence[int] | None = None,
        label_ts: Sequence[float] | None = None,
    ) -> Decoded:
        """Bytes to per-model columns, label events and rejections; changes no state."""
        batches, rejected = self.decoder.decode(values, record_ts)
        labels, label_rejected = (
            decode_labels(
                label_values,
                self.models,
                self.max_record_bytes,
                record_ts=label_ts,
                now=self.clock(),
                max_future_s=self.max_future_s,
            )
            if label_values
            else ([], [])
        )
        return Decoded(
            batches,
            rejected,
            [0] * len(values) if partitions is None else partitions,
            labels,
            label_rejected,
            [0] * len(label_values) if label_partitions is None else label_partitions,
        )

    # -- stage 2: the worker thread -----------------------------------------------------
    def detect(self, decoded: Decoded) -> Detected:
        """Count, detect, join, alert; then publish a fresh status."""
        start = time.perf_counter()
        states = self.states
        for r in decoded.rejected:
            states.count(r, decoded.partitions)
        for r in decoded.label_rejected:
            states.count(r, decoded.label_partitions)
        alerts: list[Alert] = []
        failed: list[Rejected] = []
        pairs: dict[str, list[tuple[Any, Any, float, Any]]] = {}
        for model, batch in decoded.batches.items():
            state = states.models[model]
            try:
                states.claim(state, batch, decoded.partitions)
                alerts += self._observe(state, batch, pairs.setdefault(model, []))
            except Exception as exc:  # a bug: these records are rejected, nothing stops
                self.internal_errors += 1
                self._throttle.exception("internal error processing model %s's batch", model)
                for i in batch.index:
                    failed.append(internal_error(i, exc))
                    states.count(failed[-1], decoded.partitions)
        for lab in decoded.labels:
            found = states.models[lab.model].join.label(lab.id, lab.label, lab.ts)
            if found is not None:
                pairs.setdefault(lab.model, []).append(
                    (found.prediction, lab.label, lab.ts, found.features)
                )
        for model, got in pairs.items():
            if got:
                try:
                    alerts += self._labelled(states.models[model], got)
                except Exception:
                    self.internal_errors += 1
                    self._throttle.exception("internal error scoring model %s's labels", model)
        self.batches += 1
        self.processing_seconds += time.perf_counter() - start
        self.publish(decoded.batches.keys() | pairs.keys())
        return Detected(alerts, failed)

    def _observe(
        self, state: ModelState, batch: ModelBatch, got: list[tuple[Any, Any, float, Any]]
    ) -> list[Alert]:
        """One model's batch: detectors and the policy, then the label join."""
        detections, view = state.monitor.process(batch, on_ready=_announce)
        alerts = [] if view is None else state.policy.features(state.alerts, detections, view)
        last = batch.ts[-1] if batch.ts else math.nan
        if last == last:
            state.last_ts = last
        # Without a labels topic, labels can only come inline: nothing waits for one.
        buffered = state.plan.labels_topic
        learner = self.learners.get(state.name)
        feats = _rows(state.monitor, batch) if learner is not None else [None] * len(batch)
        join = state.join
        for pid, pred, label, ts, x in zip(
            batch.ids, batch.predictions, batch.labels, batch.ts, feats, strict=True
        ):
            if label is not None and pred is not None:
                got.append((pred, label, ts, x))  # labelled at once
            elif buffered and pid is not None and pred is not None:
                # Waiting for its label: keep a copy, not a view into the whole batch.
                early = join.expect(pid, pred, ts, None if x is None else (x[0].copy(), x[1]))
                if early is not None:  # its label came first
                    got.append((pred, early.label, early.ts, x))
        return alerts

    def _labelled(self, state: ModelState, got: list[tuple[Any, Any, float, Any]]) -> list[Alert]:
        perf = state.performance
        known = perf.task
        first = perf.n
        drifts = perf.add([(pred, label, ts) for pred, label, ts, _ in got])
        if known is None and perf.task is not None:
            log.info(
                "model %s: task inferred from its first labels: %s (set models.%s.task to fix it)",
                state.name,
                perf.task,
                state.name,
            )
        learner = self.learners.get(state.name)
        adaptation = None
        if learner is not None:
            rows = [(x, label) for _, label, _, x in got if x is not None]
            if rows:
                learner.submit(
                    (
                        np.array([x[0] for x, _ in rows]),
                        [x[1] for x, _ in rows],
                        [label for _, label in rows],
                    )
                )
            for d in drifts:
                adaptation = learner.adapt(d.change_at)

        def pair_ts(i: int) -> float:
            k = i - first
            return got[k][2] if 0 <= k < len(got) else math.nan

        return state.policy.concept(state.alerts, drifts, perf.n, pair_ts, adaptation)

    # -- state, one partition at a time (worker thread) ------------------------------------
    @property
    def models(self) -> dict[str, ModelState]:
        return self.states.models

    def models_of(self, partition: int) -> list[str]:
        return self.states.models_of(partition)

    def export(self, partition: int) -> dict[str, Any]:
        """The partition's checkpoint state (see ``PartitionStates.export``)."""
        return self.states.export(partition)

    def restore(self, partition: int, state: Mapping[str, Any]) -> list[str]:
        restored = self.states.restore(partition, state)
        self.publish(restored)
        return restored

    def drop(self, partition: int) -> None:
        gone = self.states.drop(partition)
        for m in gone:
            self.history.forget(m)
            self._history_views.pop(m, None)
        self.publish(gone)

    def publish(self, touched: Any = None) -> None:
        """Build and publish the status (models in ``touched`` again, all when None)."""
        names = self.models.keys() if touched is None else touched
        for m in names:
            learner = self.learners.get(m)
            now = self._statuses[m] = model_status(
                self.models[m], None if learner is None else learner.status()
            )
            self.history.add(m, now.events, {s.name: s.detectors for s in now.series})
            self._history_views[m] = self.history.view(m)
        for m, learner in self.learners.items():  # the learners move on by themselves
            status = learner.status()
            if self._statuses[m].learner != status:
                self._statuses[m] = _replace_learner(self._statuses[m], status)
        self.status = PipelineStatus(
            dict(self._statuses),
            dict(self.states.rejected()),
            self.states.misrouted,
            self.batches,
            self.processing_seconds,
            self.internal_errors,
            dict(self._history_views),
        )

    # -- all three stages, for tests and simple embedding ------------------------------------
    async def process(
        self, values: Sequence[bytes | None], label_values: Sequence[bytes | None] = ()
    ) -> BatchOutcome:
        decoded = self.decode(values, label_values=label_values)
        detected = self.detect(decoded)
        for sink in self.sinks:
            await sink.emit(detected.alerts)
        accepted = sum(len(b) for b in decoded.batches.values()) - len(detected.failed)
        return BatchOutcome(
            accepted, decoded.rejected + detected.failed + decoded.label_rejected, detected.alerts
        )


def _replace_learner(status: ModelStatus, learner: LearnerStatus) -> ModelStatus:
    from dataclasses import replace

    return replace(status, learner=learner)


def _rows(mon: ModelMonitor, batch: ModelBatch) -> list[tuple[Any, tuple[Any, ...]]]:
    """Each event's features for the online learner: its numeric feature values (a row of
    the batch's matrix, the prediction left out) and its categorical values."""
    schema = mon.schema
    num_cols = [j for j, n in enumerate(schema.numeric) if n != PREDICTION]
    cat_cols = [k for k, n in enumerate(schema.categorical) if n != PREDICTION]
    num = batch.numeric[:, num_cols]
    cats: list[tuple[Any, ...]] = (
        list(zip(*[batch.categorical[k] for k in cat_cols], strict=True))
        if cat_cols
        else [()] * len(batch)
    )
    return [(num[i], cats[i]) for i in range(len(batch))]


def _announce(mon: ModelMonitor) -> None:
    bank = mon.bank
    skipped = f" ({len(bank.skipped)} series not monitored)" if bank and bank.skipped else ""
    log.info(
        "model %s: reference ready (%d events); detection starts%s",
        mon.model,
        mon.reference_events,
        skipped,
    )
