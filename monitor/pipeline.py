"""The one-way flow of a batch: decode -> route by model -> detectors -> alert policy -> sinks."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sinks.base import Sink

from .bank import ModelMonitor
from .checkpoint import CheckpointError
from .config import PREDICTION, Config
from .decode import Decoder, LabelEvent, ModelBatch, Rejected, decode_labels
from .labels import LabelJoin, Performance
from .learner import OnlineLearner
from .policy import Alert, AlertPolicy

log = logging.getLogger("driftline.pipeline")


@dataclass(frozen=True)
class BatchOutcome:
    accepted: int
    rejected: list[Rejected]
    alerts: list[Alert]


class Pipeline:
    """Everything between raw record values and the sinks. No Kafka, no HTTP: the daemon
    feeds it, tests can too."""

    def __init__(
        self, config: Config, sinks: Sequence[Sink], clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.decoder = Decoder(config)
        self.policy = AlertPolicy(config.alerting, clock)
        self.sinks = list(sinks)
        self.monitors: dict[str, ModelMonitor] = {}
        self.joins: dict[str, LabelJoin] = {}
        self.performance: dict[str, Performance] = {}
        for m in config.models:
            self._fresh(m)
        lc = config.labels
        self.learners: dict[str, OnlineLearner] = {}
        for m, mc in config.models.items():
            if mc.online_model is not None and mc.task is not None:
                om = mc.online_model
                self.learners[m] = OnlineLearner(
                    om.learner,
                    mc.task,
                    om.params,
                    numeric=[n for n in self.monitors[m].schema.numeric if n != PREDICTION],
                    categorical=[n for n in self.monitors[m].schema.categorical if n != PREDICTION],
                    queue_size=om.queue_size,
                    retrain_max=om.retrain_max,
                    window=lc.window,
                    decay=lc.decay,
                )
        self.rejected_by: dict[int, Counter[str]] = {}  # partition -> reason -> count
        self.owner: dict[str, int] = {}  # model -> the partition whose state holds it
        self.misrouted = 0  # events of a model read from another partition than its own
        self._warned: set[tuple[str, int]] = set()
        self.batches = 0
        self.processing_seconds = 0.0
        self.last_ts: dict[str, float] = {}

    @property
    def rejected(self) -> Counter[str]:
        """Rejected records by reason, over the partitions this instance holds."""
        total: Counter[str] = Counter()
        for counts in self.rejected_by.values():
            total.update(counts)
        return total

    def fingerprint(self) -> str:
        """A hash of the configuration that shapes the state (models, defaults, alerting,
        labels): a checkpoint made under another one is refused."""
        doc = self.config.model_dump_json(include={"models", "defaults", "alerting", "labels"})
        return hashlib.sha256(doc.encode()).hexdigest()[:16]

    # -- state, one partition at a time ------------------------------------------------------
    def models_of(self, partition: int) -> list[str]:
        return sorted(m for m, p in self.owner.items() if p == partition)

    def export_learners(self, partition: int) -> dict[str, Any]:
        """The online learners' states of the partition's models (blocking: each waits for
        its learning backlog; run it off the event loop, with no batch in flight)."""
        return {
            m: self.learners[m].export_state()
            for m in self.models_of(partition)
            if m in self.learners
        }

    def snapshot(self, partition: int, learners: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything that determines the partition's future output, for a checkpoint: its
        models (detectors, references, data quality, alert episodes, label join,
        performance, ``learners`` from :meth:`export_learners`) and its rejection counts.
        It refers to live state: serialize it (``checkpoint.encode``) before the pipeline
        processes again."""
        models = {}
        for m in self.models_of(partition):
            models[m] = {
                "monitor": self.monitors[m].export_state(),
                "alerts": self.policy.models.get(m),
                "join": self.joins[m],
                "performance": self.performance[m],
                "last_ts": self.last_ts.get(m),
                "learner": (learners or {}).get(m),
            }
        return {
            "fingerprint": self.fingerprint(),
            "partition": partition,
            "models": models,
            "rejected": dict(self.rejected_by.get(partition, {})),
        }

    def restore(self, partition: int, state: dict[str, Any]) -> None:
        """Continue the partition from a :meth:`snapshot` as if never stopped: its models
        become exactly those of the snapshot."""
        if state.get("fingerprint") != self.fingerprint():
            raise CheckpointError(
                "the checkpoint was made under another configuration of models, defaults, "
                "alerting or labels; remove it (state.path or the changelog topic) to start "
                "afresh"
            )
        unknown = sorted(set(state["models"]) - set(self.monitors))
        if unknown:
            raise CheckpointError(f"the checkpoint holds models not configured: {unknown}")
        self.drop(partition)
        for m, ms in state["models"].items():
            self.owner[m] = partition
            self.monitors[m].load_state(ms["monitor"])
            if ms["alerts"] is not None:
                self.policy.models[m] = ms["alerts"]
            self.joins[m] = ms["join"]
            self.performance[m] = ms["performance"]
            if ms["last_ts"] is not None:
                self.last_ts[m] = ms["last_ts"]
            if m in self.learners and ms["learner"] is not None:
                self.learners[m].load_state(ms["learner"])
        self.rejected_by[partition] = Counter(state["rejected"])

    def drop(self, partition: int) -> None:
        """Forget the partition (given up, or about to be restored): its models start
        afresh, as if never seen."""
        for m in self.models_of(partition):
            del self.owner[m]
            self._fresh(m)
            self.policy.models.pop(m, None)
            self.last_ts.pop(m, None)
            if m in self.learners:
                self.learners[m].load_state(None)
        self.rejected_by.pop(partition, None)

    def _fresh(self, model: str) -> None:
        """The model's state as before its first event: monitor, label join, performance."""
        lc = self.config.labels
        self.monitors[model] = ModelMonitor(self.config, model)
        self.joins[model] = LabelJoin(lc.max_pending, lc.max_age_s)
        self.performance[model] = Performance(
            self.config.models[model].task, lc.window, lc.decay, lc.delta
        )

    def claim(self, model: str, partition: int, events: int = 1) -> None:
        """Note where a model's events come from: its state belongs to the first partition
        it is seen on. Producers must key events by model (one model, one partition);
        events of a model read from another partition are still processed but counted and
        warned about once, since in a group they may reach another instance."""
        owner = self.owner.setdefault(model, partition)
        if owner != partition:
            self.misrouted += events
            if (model, partition) not in self._warned:
                self._warned.add((model, partition))
                log.warning(
                    "model %s: events on partition %d, but its state lives with partition %d; "
                    "key events (and labels) by model so that each model stays on one "
                    "partition",
                    model,
                    partition,
                    owner,
                )

    def start(self) -> None:
        """Start the online learners' threads."""
        for learner in self.learners.values():
            learner.start()

    def stop(self) -> None:
        for learner in self.learners.values():
            learner.stop()

    def decode(
        self, values: Sequence[bytes | None], partitions: Sequence[int] | None = None
    ) -> tuple[dict[str, ModelBatch], list[Rejected]]:
        """Stage 1 (event loop): bytes to per-model columns; rejections are counted, and
        each model is claimed by the partition its events come from (``partitions[i]`` is
        the partition of ``values[i]``; all 0 when not given)."""
        batches, rejected = self.decoder.decode(values)
        for r in rejected:
            self._count(r, partitions)
        for model, batch in batches.items():
            if partitions is None:
                self.claim(model, 0)
            else:
                for p, n in Counter(partitions[i] for i in batch.index).items():
                    self.claim(model, p, n)
        return batches, rejected

    def decode_labels(
        self, values: Sequence[bytes | None], partitions: Sequence[int] | None = None
    ) -> tuple[list[LabelEvent], list[Rejected]]:
        """Stage 1 for the labels topic."""
        labels, rejected = decode_labels(values, self.monitors, self.config.kafka.max_record_bytes)
        for r in rejected:
            self._count(r, partitions)
        return labels, rejected

    def _count(self, rejected: Rejected, partitions: Sequence[int] | None) -> None:
        p = 0 if partitions is None else partitions[rejected.index]
        self.rejected_by.setdefault(p, Counter())[rejected.reason] += 1

    def detect(
        self, batches: dict[str, ModelBatch], labels: Sequence[LabelEvent] = ()
    ) -> list[Alert]:
        """Stage 2: detectors, the label join, performance and the alert policy. The daemon
        runs it in one worker thread (the numba kernels release the GIL) while the event
        loop decodes the next batch; it is the only writer of all this state."""
        start = time.perf_counter()
        alerts: list[Alert] = []
        pairs: dict[str, list[tuple[Any, Any, float, Any]]] = {}
        # Without a labels topic, labels can only come inline: nothing waits for one.
        buffered = self.config.kafka.labels_topic is not None
        for model, batch in batches.items():
            mon = self.monitors[model]
            first = mon.events
            detections = mon.process(batch, on_ready=_announce)
            alerts += self.policy.process(mon, detections, first, batch.ts)
            if batch.ts and batch.ts[-1] == batch.ts[-1]:  # not NaN
                self.last_ts[model] = batch.ts[-1]
            join, got = self.joins[model], pairs.setdefault(model, [])
            feats = _rows(mon, batch) if model in self.learners else [None] * len(batch)
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
        for lab in labels:
            found = self.joins[lab.model].label(lab.id, lab.label, lab.ts)
            if found is not None:
                pairs.setdefault(lab.model, []).append(
                    (found.prediction, lab.label, lab.ts, found.features)
                )
        for model, got in pairs.items():
            perf = self.performance[model]
            known = perf.task
            drifts = perf.add([(pred, label, ts) for pred, label, ts, _ in got])
            if known is None and perf.task is not None:
                log.info(
                    "model %s: task inferred from its first labels: %s (set "
                    "models.%s.task to fix it)",
                    model,
                    perf.task,
                    model,
                )
            learner = self.learners.get(model)
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
            alerts += self.policy.concept(self.monitors[model], perf, drifts, adaptation)
        self.batches += 1
        self.processing_seconds += time.perf_counter() - start
        return alerts

    async def emit(self, alerts: list[Alert]) -> None:
        """Stage 3 (event loop): hand alerts to every sink; a broken sink stops nothing."""
        if not alerts:
            return
        for sink in self.sinks:
            try:
                await sink.emit(alerts)
            except Exception:
                log.exception("sink %s failed to accept %d alert(s)", sink.name, len(alerts))

    async def process(
        self, values: Sequence[bytes | None], label_values: Sequence[bytes | None] = ()
    ) -> BatchOutcome:
        """All three stages, one after the other (for tests and simple embedding)."""
        batches, rejected = self.decode(values)
        labels, label_rejected = self.decode_labels(label_values)
        alerts = self.detect(batches, labels)
        await self.emit(alerts)
        return BatchOutcome(
            sum(len(b) for b in batches.values()), rejected + label_rejected, alerts
        )


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
    skipped = f"; not monitored: {bank.skipped}" if bank and bank.skipped else ""
    log.info(
        "model %s: reference ready (%d events); detection starts%s",
        mon.model,
        mon.reference_events,
        skipped,
    )
