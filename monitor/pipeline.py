"""The one-way flow of a batch: decode -> route by model -> detectors -> alert policy -> sinks."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sinks.base import Sink

from .bank import ModelMonitor
from .config import Config
from .decode import Decoder, ModelBatch, Rejected
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
        self.monitors = {m: ModelMonitor(config, m) for m in config.models}
        self.policy = AlertPolicy(config.alerting, clock)
        self.sinks = list(sinks)
        self.rejected: Counter[str] = Counter()
        self.batches = 0
        self.processing_seconds = 0.0
        self.last_ts: dict[str, float] = {}

    def decode(
        self, values: Sequence[bytes | None]
    ) -> tuple[dict[str, ModelBatch], list[Rejected]]:
        """Stage 1 (event loop): bytes to per-model columns; rejections are counted."""
        batches, rejected = self.decoder.decode(values)
        for r in rejected:
            self.rejected[r.reason] += 1
        return batches, rejected

    def detect(self, batches: dict[str, ModelBatch]) -> list[Alert]:
        """Stage 2: detectors and the alert policy. The daemon runs it in one worker thread
        (the numba kernels release the GIL) while the event loop decodes the next batch;
        it is the only writer of the monitors' and the policy's state."""
        start = time.perf_counter()
        alerts: list[Alert] = []
        for model, batch in batches.items():
            mon = self.monitors[model]
            first = mon.events
            detections = mon.process(batch, on_ready=_announce)
            alerts += self.policy.process(mon, detections, first, batch.ts)
            if batch.ts and batch.ts[-1] == batch.ts[-1]:  # not NaN
                self.last_ts[model] = batch.ts[-1]
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

    async def process(self, values: Sequence[bytes | None]) -> BatchOutcome:
        """All three stages, one after the other (for tests and simple embedding)."""
        batches, rejected = self.decode(values)
        alerts = self.detect(batches)
        await self.emit(alerts)
        return BatchOutcome(sum(len(b) for b in batches.values()), rejected, alerts)


def _announce(mon: ModelMonitor) -> None:
    bank = mon.bank
    skipped = f"; not monitored: {bank.skipped}" if bank and bank.skipped else ""
    log.info(
        "model %s: reference ready (%d events); detection starts%s",
        mon.model,
        mon.reference_events,
        skipped,
    )
