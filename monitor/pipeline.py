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
from .decode import Decoder, Rejected
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

    async def process(self, values: Sequence[bytes | None]) -> BatchOutcome:
        start = time.perf_counter()
        batches, rejected = self.decoder.decode(values)
        alerts: list[Alert] = []
        accepted = 0
        for model, batch in batches.items():
            mon = self.monitors[model]
            first = mon.events
            detections = mon.process(batch, on_ready=_announce)
            alerts += self.policy.process(mon, detections, first, batch.ts)
            accepted += len(batch)
            if batch.ts and batch.ts[-1] == batch.ts[-1]:  # not NaN
                self.last_ts[model] = batch.ts[-1]
        for r in rejected:
            self.rejected[r.reason] += 1
        if alerts:
            for sink in self.sinks:
                try:
                    await sink.emit(alerts)
                except Exception:  # a broken sink must not stop the others or consumption
                    log.exception("sink %s failed to accept %d alert(s)", sink.name, len(alerts))
        self.batches += 1
        self.processing_seconds += time.perf_counter() - start
        return BatchOutcome(accepted, rejected, alerts)


def _announce(mon: ModelMonitor) -> None:
    bank = mon.bank
    skipped = f"; not monitored: {bank.skipped}" if bank and bank.skipped else ""
    log.info(
        "model %s: reference ready (%d events); detection starts%s",
        mon.model,
        mon.reference_events,
        skipped,
    )
