"""The daemon: consume, process, dead-letter, commit; serve HTTP; stop cleanly.

For each batch, in this order: fetch, decode and detect, hand alerts to the sinks, forward
rejected records to the dead-letter topic (awaiting the broker's acknowledgement), and only
then commit the batch's offsets. A crash at any point re-delivers the uncommitted batch,
never loses it.

A broker that is unreachable at start or goes away is retried with exponential backoff
(0.5 s doubling to 30 s), logged once per attempt, while HTTP keeps serving. SIGTERM or
SIGINT stops fetching, finishes the current batch, flushes the sinks, commits and exits 0;
the whole stop takes at most ``shutdown_timeout_s`` (default 10 s) plus one fetch timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from sinks.base import Sink
from sinks.log import LogSink
from sinks.webhook import WebhookSink

from .checkpoint import CheckpointError, LocalStore, encode
from .config import Config, LogSinkConfig, WebhookSinkConfig
from .decode import Rejected
from .http import build_app
from .metrics import DriftlineCollector
from .pipeline import Pipeline
from .policy import Alert
from .source import KafkaSource, Record, Source, next_offsets

log = logging.getLogger("driftline.daemon")


@dataclass
class _InFlight:
    """A batch whose detection is running in the worker thread."""

    records: list[Record]
    dead: list[tuple[Record, Rejected]]
    job: asyncio.Future[list[Alert]]


BACKOFF_START = 0.5
BACKOFF_CAP = 30.0


def build_sinks(config: Config) -> list[Sink]:
    sinks: list[Sink] = []
    for spec in config.sinks:
        if isinstance(spec, WebhookSinkConfig):
            sinks.append(
                WebhookSink(
                    str(spec.url),
                    timeout_s=spec.timeout_s,
                    retries=spec.retries,
                    headers=spec.headers,
                    queue_size=spec.queue_size,
                )
            )
        elif isinstance(spec, LogSinkConfig):
            sinks.append(LogSink(sys.stdout if spec.stream == "stdout" else sys.stderr))
    return sinks


class Daemon:
    """Owns the source, the pipeline, the sinks and the HTTP server, and every task."""

    def __init__(
        self,
        config: Config,
        *,
        source: Source | None = None,
        sinks: Sequence[Sink] | None = None,
        registry: CollectorRegistry | None = None,
        version: str = "unknown",
    ) -> None:
        self.config = config
        self.version = version
        self.source: Source = source if source is not None else KafkaSource(config.kafka)
        self.pipeline = Pipeline(config, build_sinks(config) if sinks is None else sinks)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(DriftlineCollector(self))
        self.ready = False
        self.stopping = False
        self.source_started = False
        self.last_kafka_error: str | None = None
        self.commit_failures = 0
        self.dead_lettered: Counter[str] = Counter()
        self.http_port: int | None = None
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        # One worker keeps batches in order; numba kernels release the GIL, so detection
        # overlaps with fetching and decoding on the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="driftline-detect")
        st = config.state
        self.store = LocalStore(st.path) if st.path is not None else None
        self.checkpoint_name = re.sub(
            r"[^A-Za-z0-9_.-]", "_", f"{config.kafka.group_id}.{config.kafka.topic}"
        )
        self.checkpoints = 0
        self._position: dict[tuple[str, int], int] = {}  # next offsets of finished batches
        self._resume: dict[tuple[str, int], int] = {}
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------
    def request_stop(self) -> None:
        if not self.stopping:
            log.info("stop requested: finishing the current batch")
        self.stopping = True
        self.ready = False
        self._stop.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    async def start_http(self) -> None:
        self._runner = web.AppRunner(build_app(self), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.http.host, self.config.http.port)
        await site.start()
        self.http_port = int(self._runner.addresses[0][1])
        log.info(
            "serving /metrics /healthz /readyz /status on http://%s:%s",
            self.config.http.host,
            self.http_port,
        )

    async def run(self) -> int:
        """Run until stopped; returns the process exit status."""
        await self.start_http()
        for sink in self.pipeline.sinks:
            await sink.start()
        self.pipeline.start()
        self._restore()
        self.ready = True
        try:
            await self._connect()
            if self.source_started:
                await self._consume()
        finally:
            await self._shutdown()
        return 0

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _connect(self) -> None:
        delay = BACKOFF_START
        k = self.config.kafka
        while not self.stopping:
            try:
                await self.source.start(self._resume)
            except (KafkaError, OSError) as exc:
                self.last_kafka_error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "cannot reach Kafka at %s (%s); retrying in %.1f s",
                    k.bootstrap_servers,
                    self.last_kafka_error,
                    delay,
                )
                await self._sleep_or_stop(delay)
                delay = min(BACKOFF_CAP, delay * 2)
                continue
            self.source_started = True
            self.last_kafka_error = None
            log.info("consuming %s as group %s from %s", k.topic, k.group_id, k.bootstrap_servers)
            return

    async def _consume(self) -> None:
        """Fetch and decode batch k+1 while batch k's detectors run in the worker thread;
        then finish batch k (alerts to sinks, dead letters, commit) in order."""
        k = self.config.kafka
        loop = asyncio.get_running_loop()
        delay = BACKOFF_START
        inflight: _InFlight | None = None
        pending: dict[tuple[str, int], int] = {}
        while not self.stopping:
            try:
                records = await self.source.fetch(k.fetch_timeout_ms, k.max_batch_records)
            except KafkaError as exc:
                self.last_kafka_error = f"{type(exc).__name__}: {exc}"
                log.error("fetch failed (%s); retrying in %.1f s", self.last_kafka_error, delay)
                await self._sleep_or_stop(delay)
                delay = min(BACKOFF_CAP, delay * 2)
                continue
            delay = BACKOFF_START
            started: _InFlight | None = None
            if records:
                labs = [r for r in records if k.labels_topic and r.topic == k.labels_topic]
                preds = [r for r in records if not (k.labels_topic and r.topic == k.labels_topic)]
                batches, rejected = self.pipeline.decode([r.value for r in preds])
                labels, rejected_labels = self.pipeline.decode_labels([r.value for r in labs])
                dead = [(preds[x.index], x) for x in rejected]
                dead += [(labs[x.index], x) for x in rejected_labels]
                if self._checkpoint_due():
                    # A checkpoint needs the worker idle: finish the batch in flight first.
                    if inflight is not None:
                        pending = await self._finish(inflight, pending)
                        inflight = None
                    await self._checkpoint()
                job = loop.run_in_executor(self._executor, self.pipeline.detect, batches, labels)
                started = _InFlight(records, dead, job)
            if inflight is not None:
                pending = await self._finish(inflight, pending)
            inflight = started
        if inflight is not None:
            pending = await self._finish(inflight, pending)
        if pending:
            await self._commit(pending)
        if self.store is not None:
            await self._checkpoint()

    # -- checkpoints -----------------------------------------------------------------------
    def _restore(self) -> None:
        """Continue from the newest usable checkpoint. Fallback when there is none or it
        cannot be used (another format version or configuration): start afresh, warming
        up new references, and say so."""
        if self.store is None:
            return
        try:
            loaded = self.store.load(self.checkpoint_name)
            if loaded is None:
                log.info("no checkpoint in %s: starting afresh", self.store.path)
                return
            state, path = loaded
            self.pipeline.restore(state["pipeline"])
        except CheckpointError as exc:
            log.error("%s; starting afresh (references warm up again)", exc)
            return
        self._resume = dict(state["offsets"])
        self._position = dict(state["offsets"])
        log.info(
            "restored %s: resuming at %s",
            path.name,
            ", ".join(f"{t}/{p}@{o}" for (t, p), o in sorted(self._resume.items())),
        )

    def _checkpoint_due(self) -> bool:
        if self.store is None:
            return False
        st = self.config.state
        return self._since_checkpoint >= st.checkpoint_every_events or (
            self._since_checkpoint > 0
            and time.monotonic() - self._last_checkpoint >= st.checkpoint_every_s
        )

    async def _checkpoint(self) -> None:
        """State and next offsets from the same point of the stream (no batch in flight)."""
        assert self.store is not None
        # Serialized here, while the worker is idle (the pickle is the consistent copy);
        # only the file write leaves the event loop.
        data = encode({"pipeline": self.pipeline.snapshot(), "offsets": dict(self._position)})
        await asyncio.to_thread(self.store.save_bytes, self.checkpoint_name, data)
        self.checkpoints += 1
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()

    async def _finish(
        self, batch: _InFlight, pending: dict[tuple[str, int], int]
    ) -> dict[tuple[str, int], int]:
        alerts = await batch.job
        await self.pipeline.emit(alerts)
        for record, rej in batch.dead:
            await self._dead_letter(record, rej.reason, rej.detail)
        done = next_offsets(batch.records)
        pending.update(done)
        self._position.update(done)
        self._since_checkpoint += len(batch.records)
        return {} if await self._commit(pending) else pending

    async def _dead_letter(self, record: Record, reason: str, detail: str) -> None:
        if not self.config.kafka.dead_letter_topic:
            return
        delay = BACKOFF_START
        while True:  # nothing is lost: the batch is not committed before this succeeds
            try:
                await self.source.dead_letter(record, reason, detail)
                self.dead_lettered[reason] += 1
                return
            except KafkaError as exc:
                log.error(
                    "dead-lettering %s/%d/%d failed (%s); retrying in %.1f s",
                    record.topic,
                    record.partition,
                    record.offset,
                    exc,
                    delay,
                )
                if self.stopping and delay >= BACKOFF_CAP:
                    raise
                await asyncio.sleep(delay)
                delay = min(BACKOFF_CAP, delay * 2)

    async def _commit(self, offsets: dict[tuple[str, int], int]) -> bool:
        try:
            await self.source.commit(offsets)
            return True
        except KafkaError as exc:
            self.commit_failures += 1
            log.warning("offset commit failed (%s); will commit with the next batch", exc)
            return False

    async def _shutdown(self) -> None:
        self.ready = False
        self.stopping = True
        timeout = self.config.shutdown_timeout_s
        for sink in self.pipeline.sinks:
            try:
                await asyncio.wait_for(sink.close(timeout / 2), timeout)
            except (TimeoutError, Exception):
                log.exception("sink %s did not close cleanly", sink.name)
        if self.source_started:
            try:
                await asyncio.wait_for(self.source.stop(), timeout / 2)
            except TimeoutError:
                log.error("Kafka client did not stop within %.1f s", timeout / 2)
            except Exception:
                log.exception("Kafka client did not stop cleanly")
            self.source_started = False
        if self._runner is not None:
            await self._runner.cleanup()
        self._executor.shutdown(wait=True)
        self.pipeline.stop()
        log.info("stopped")
