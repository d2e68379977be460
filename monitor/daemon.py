"""The daemon: consume, process, dead-letter, commit; serve HTTP; stop cleanly.

For each batch, in this order: fetch, decode and detect, hand alerts to the sinks, forward
rejected records to the dead-letter topic (awaiting the broker's acknowledgement), and only
then commit the batch's offsets. With a state store the committed offsets are those of
each checkpoint instead, once it is durable, so that a partition is never committed past
the state that saw it. A crash at any point re-delivers what was not committed, never
loses it.

A broker that is unreachable at start or goes away is retried with exponential backoff
(0.5 s doubling to 30 s), logged once per attempt, while HTTP keeps serving. SIGTERM or
SIGINT stops fetching, finishes the current batch, flushes the sinks, commits and exits 0;
the whole stop takes at most ``shutdown_timeout_s`` (default 10 s) plus one fetch timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from sinks.alertmanager import AlertmanagerSink
from sinks.base import Sink
from sinks.kafka import KafkaSink
from sinks.log import LogSink
from sinks.registry import assemble, plugin
from sinks.webhook import WebhookSink

from .changelog import ChangelogStore
from .checkpoint import CheckpointError, LocalStore, Store, encode
from .config import (
    AlertmanagerSinkConfig,
    Config,
    KafkaSinkConfig,
    LogSinkConfig,
    SinkCommon,
    WebhookSinkConfig,
)
from .decode import Rejected
from .http import build_app
from .metrics import DriftlineCollector
from .pipeline import Pipeline
from .policy import Alert
from .source import KafkaSource, Offsets, Record, Source, client_options, next_offsets

log = logging.getLogger("driftline.daemon")


@dataclass
class _InFlight:
    """A batch whose detection is running in the worker thread."""

    records: list[Record]
    dead: list[tuple[Record, Rejected]]
    job: asyncio.Future[list[Alert]]


BACKOFF_START = 0.5
BACKOFF_CAP = 30.0


def build_store(config: Config) -> Store | None:
    st = config.state
    if st.path is not None:
        return LocalStore(st.path)
    if st.changelog_topic is not None:
        return ChangelogStore(
            st.changelog_topic,
            chunk_bytes=st.changelog_chunk_bytes,
            **client_options(config.kafka),
        )
    return None


def build_sinks(config: Config) -> list[Sink]:
    """Each configured sink: its transport inside the shared delivery wrappers
    (sinks.registry), named by ``name`` or its type (``webhook``, ``webhook-2``, ...)."""
    outbox_dir = config.outbox.path
    if outbox_dir is None and config.state.path is not None:
        outbox_dir = config.state.path / "outbox"
    sinks: list[Sink] = []
    used: Counter[str] = Counter()
    for spec in config.sinks:
        used[spec.type] += 1
        name = spec.name or (
            spec.type if used[spec.type] == 1 else f"{spec.type}-{used[spec.type]}"
        )
        transport: Sink
        if isinstance(spec, WebhookSinkConfig):
            transport = WebhookSink(
                str(spec.url),
                name=name,
                secret=None if spec.secret is None else spec.secret.get_secret_value(),
                headers=spec.headers,
                timeout_s=spec.timeout_s,
                format=spec.format,
            )
        elif isinstance(spec, AlertmanagerSinkConfig):
            transport = AlertmanagerSink(
                str(spec.url),
                name=name,
                directory=outbox_dir,
                resend_interval_s=spec.resend_interval_s,
                timeout_s=spec.timeout_s,
                headers=spec.headers,
            )
        elif isinstance(spec, KafkaSinkConfig):
            options = client_options(config.kafka)
            if spec.bootstrap_servers is not None:
                options["bootstrap_servers"] = spec.bootstrap_servers
            transport = KafkaSink(spec.topic, name=name, **options)
        elif isinstance(spec, LogSinkConfig):
            transport = LogSink(sys.stdout if spec.stream == "stdout" else sys.stderr, name=name)
        else:
            transport = plugin(spec.type)(dict(spec.options), name=name)
        common = spec.model_dump(include=set(SinkCommon.model_fields) - {"name", "outbox"})
        sinks.append(assemble(transport, outbox_dir=outbox_dir if spec.outbox else None, **common))
    return sinks


def dump_tasks() -> None:
    """SIGUSR1: log where every asyncio task and thread is waiting (for a daemon that
    looks stuck)."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        out.write(f"--- task {task.get_name()}\n")
        step: Any = task.get_coro()
        while step is not None:  # follow the chain of awaits down to what blocks
            frame = getattr(step, "cr_frame", None) or getattr(step, "gi_frame", None)
            if frame is None:
                out.write(f"  awaiting {step!r}\n")
                break
            out.write(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}\n")
            step = getattr(step, "cr_await", None) or getattr(step, "gi_yieldfrom", None)
    for ident, frame in sys._current_frames().items():
        out.write(f"--- thread {ident}\n{''.join(traceback.format_stack(frame))}")
    log.warning("SIGUSR1: tasks and threads\n%s", out.getvalue())


class CrashPoints:
    """Fault injection for the crash tests: ``DRIFTLINE_CRASH_AT=<point>:<n>`` makes the
    process SIGKILL itself the n-th time it passes ``point``: ``detect`` (a batch handed to
    the worker, not finished), ``emit`` (alerts handed to the sinks, offsets not yet
    committed) or ``checkpoint`` (a checkpoint durable, the next commit not yet made).
    Unset, it costs one dictionary lookup per batch."""

    def __init__(self, spec: str | None) -> None:
        self.point, self.left = None, 0
        if spec:
            point, _, n = spec.partition(":")
            self.point, self.left = point, int(n or 1)

    def passing(self, point: str) -> None:
        if point == self.point:
            self.left -= 1
            if self.left <= 0:
                log.warning("DRIFTLINE_CRASH_AT=%s: killing this process", point)
                os.kill(os.getpid(), signal.SIGKILL)


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
        self.exit_code = 0
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
        self.store = build_store(config)
        self.checkpoints = 0
        self.checkpoint_seconds = 0.0  # the last one, all partitions
        self.checkpoint_bytes = 0
        self.restores: Counter[str] = Counter()  # restored / fresh / failed
        self.owned: set[int] = set()  # partition numbers whose state this instance holds
        self._kept: set[int] = set()  # revoked in the rebalance under way, state still here
        self._work = asyncio.Lock()  # one of: a batch step, a checkpoint, a rebalance
        self._generation = 0  # bumped by every rebalance callback
        self._inflight: _InFlight | None = None
        self._pending: Offsets = {}  # processed, not yet committed
        self._position: Offsets = {}  # next offsets of finished batches
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._store_started = False
        self._crash = CrashPoints(os.environ.get("DRIFTLINE_CRASH_AT"))

    # -- lifecycle ---------------------------------------------------------------------
    def request_stop(self) -> None:
        if not self.stopping:
            log.info("stop requested: finishing the current batch")
        self.stopping = True
        self.ready = False
        self._stop.set()

    def fatal(self, reason: str) -> None:
        """Stop with exit status 1: something the daemon cannot work around (a supervisor
        restarts it)."""
        log.error("stopping: %s", reason)
        self.exit_code = 1
        self.request_stop()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGUSR1, dump_tasks)

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
        self.ready = True
        try:
            await self._connect()
            if self.source_started:
                await self._consume()
        finally:
            await self._shutdown()
        return self.exit_code

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _connect(self) -> None:
        delay = BACKOFF_START
        k = self.config.kafka
        while not self.stopping:
            try:
                if self.store is not None and not self._store_started:
                    await self.store.start()
                    self._store_started = True
                await self.source.start(self)
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
        then finish batch k (alerts to sinks, dead letters, commit) in order. Each step
        holds ``_work``, so a rebalance or a checkpoint finds the worker idle between steps."""
        k = self.config.kafka
        delay = BACKOFF_START
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
            generation = self._generation  # as the records arrive, before waiting for _work
            async with self._work:
                if generation != self._generation:
                    # Fetched before a rebalance that sought every partition to where it
                    # resumes: they are read again from there (or by their new owner).
                    records = []
                records = [r for r in records if r.partition in self.owned]
                started = self._start(records) if records else None
                if self._inflight is not None:
                    await self._finish(self._inflight)
                self._inflight = started
                if self._checkpoint_due():
                    await self._drain()
                    await self._checkpoint(self.owned)
        async with self._work:
            await self._drain()
            if self._pending:
                await self._commit(self._pending)
            if self.store is not None:
                await self._checkpoint(self.owned)

    def _start(self, records: list[Record]) -> _InFlight:
        """Decode a batch and hand it to the worker thread."""
        lt = self.config.kafka.labels_topic
        labs = [r for r in records if lt and r.topic == lt]
        preds = [r for r in records if not (lt and r.topic == lt)]
        batches, rejected = self.pipeline.decode(
            [r.value for r in preds], [r.partition for r in preds]
        )
        labels, rejected_labels = self.pipeline.decode_labels(
            [r.value for r in labs], [r.partition for r in labs]
        )
        dead = [(preds[x.index], x) for x in rejected]
        dead += [(labs[x.index], x) for x in rejected_labels]
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._executor, self.pipeline.detect, batches, labels)
        self._crash.passing("detect")
        return _InFlight(records, dead, job)

    async def _drain(self) -> None:
        """Finish the batch in flight, if any (call with ``_work`` held)."""
        if self._inflight is not None:
            batch, self._inflight = self._inflight, None
            await self._finish(batch)

    # -- ownership: Kafka's rebalance callbacks ------------------------------------------------
    async def revoked(self, partitions: list[tuple[str, int]]) -> None:
        """Before partitions are given up: finish what is in flight, commit, and checkpoint
        them, so that their next owner continues exactly from here."""
        parts = {p for _, p in partitions} & self.owned
        async with self._work:
            await self._drain()
            if self._pending:
                await self._commit(self._pending)
            if self.store is not None and parts:
                await self._checkpoint(parts)
            self.owned -= parts
            self._kept |= parts
            self._generation += 1
        log.info("partitions %s revoked (checkpointed)", sorted(parts))

    async def assigned(self, partitions: list[tuple[str, int]]) -> Offsets:
        """Before the first record of the new assignment: partitions this instance held
        until this rebalance continue from memory; others are restored from the store
        and read from their checkpoint's offsets."""
        parts = sorted({p for _, p in partitions})
        offsets: Offsets = {}
        async with self._work:
            await self._drain()
            for p in self._kept - set(parts):
                self._forget(p)
            refresh = True  # the store reads what others wrote once per assignment
            for p in parts:
                if p in self._kept or p in self.owned:
                    offsets.update(self._offsets_of(p))
                else:
                    offsets.update(await self._restore(p, refresh))
                    refresh = False
            self._kept = set()
            self.owned = set(parts)
            self._generation += 1
        wanted = set(partitions)
        return {tp: o for tp, o in offsets.items() if tp in wanted}

    def _forget(self, partition: int) -> None:
        self.pipeline.drop(partition)
        for tp in [tp for tp in self._position if tp[1] == partition]:
            del self._position[tp]
        for tp in [tp for tp in self._pending if tp[1] == partition]:
            del self._pending[tp]

    def _offsets_of(self, partition: int) -> Offsets:
        return {tp: o for tp, o in self._position.items() if tp[1] == partition}

    # -- checkpoints -----------------------------------------------------------------------
    def checkpoint_name(self, partition: int) -> str:
        """The partition's key in the store: ``group/topic/partition`` in a changelog, the
        same with dots (and anything unsafe replaced) as a local file name."""
        k = self.config.kafka
        if isinstance(self.store, ChangelogStore):
            return f"{k.group_id}/{k.topic}/{partition}"
        return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{k.group_id}.{k.topic}.{partition}")

    async def _restore(self, partition: int, refresh: bool = True) -> Offsets:
        """The partition's newest usable checkpoint, loaded; its next offsets returned.
        Fallback when there is none or it cannot be used (another format version or
        configuration): the partition starts afresh, its references warm up again, and
        the log says so. A store that cannot be reached is retried: starting afresh then
        would silently lose the partition's state."""
        self.pipeline.drop(partition)
        if self.store is None:
            return {}
        name = self.checkpoint_name(partition)
        delay = BACKOFF_START
        while True:
            try:
                found = await self.store.get(name, refresh=refresh)
                break
            except CheckpointError as exc:
                log.error(
                    "%s; partition %d starts afresh (references warm up again)", exc, partition
                )
                self.restores["failed"] += 1
                return {}
            except (KafkaError, OSError) as exc:
                if self.stopping:
                    raise
                log.error("cannot read checkpoint %s (%s); retrying in %.1f s", name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(BACKOFF_CAP, delay * 2)
        if found is None:
            log.info("no checkpoint for partition %d (%s): starting afresh", partition, name)
            self.restores["fresh"] += 1
            return {}
        state, where = found
        try:
            self.pipeline.restore(partition, state["pipeline"])
        except CheckpointError as exc:  # refused before anything was loaded
            log.error("%s: %s; partition %d starts afresh", where, exc, partition)
            self.restores["failed"] += 1
            return {}
        offsets: Offsets = dict(state["offsets"])
        self._position.update(offsets)
        self.restores["restored"] += 1
        log.info(
            "restored partition %d from %s (models: %s): resuming at %s",
            partition,
            where,
            ", ".join(self.pipeline.models_of(partition)) or "none yet",
            ", ".join(f"{t}/{p}@{o}" for (t, p), o in sorted(offsets.items())) or "-",
        )
        return offsets

    def _checkpoint_due(self) -> bool:
        if self.store is None:
            return False
        st = self.config.state
        return self._since_checkpoint >= st.checkpoint_every_events or (
            self._since_checkpoint > 0
            and time.monotonic() - self._last_checkpoint >= st.checkpoint_every_s
        )

    async def _checkpoint(self, partitions: set[int]) -> None:
        """One checkpoint per partition: its state and next offsets from the same point of
        the stream (call with ``_work`` held and nothing in flight)."""
        assert self.store is not None and self._inflight is None
        start = time.perf_counter()
        await self._flush_sinks()
        size = 0
        committed: Offsets = {}
        for p in sorted(partitions):
            offsets = self._offsets_of(p)
            if not offsets and not self.pipeline.models_of(p):
                continue  # nothing read yet: nothing to continue from
            learners = {}
            if any(m in self.pipeline.learners for m in self.pipeline.models_of(p)):
                learners = await asyncio.to_thread(self.pipeline.export_learners, p)
            # Serialized here, while the worker is idle (the pickle is the consistent copy).
            data = encode({"pipeline": self.pipeline.snapshot(p, learners), "offsets": offsets})
            await self.store.put(self.checkpoint_name(p), data)
            size += len(data)
            committed.update(offsets)
        self.checkpoints += 1
        self._crash.passing("checkpoint")
        # The group's committed offsets follow the checkpoints: a partition never
        # checkpointed is read again from the start of what its state has not seen.
        if committed:
            await self._commit(committed)
        self.checkpoint_seconds = time.perf_counter() - start
        self.checkpoint_bytes = size
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()

    async def _flush_sinks(self) -> None:
        """Alerts emitted before a checkpoint must be out before it is taken: after it, a
        crash would not raise them again. A sink that cannot deliver in time is waited for
        at most ``checkpoint_flush_timeout_s``, and the risk is logged."""
        timeout = self.config.state.checkpoint_flush_timeout_s
        for sink in self.pipeline.sinks:
            if not await sink.flush(timeout):
                log.warning(
                    "sink %s has not delivered every alert emitted before this checkpoint "
                    "within %.0f s; were the process killed now, those would not be raised "
                    "again",
                    sink.name,
                    timeout,
                )

    async def _finish(self, batch: _InFlight) -> None:
        alerts = await batch.job
        await self.pipeline.emit(alerts)
        for record, rej in batch.dead:
            await self._dead_letter(record, rej.reason, rej.detail)
        self._crash.passing("emit")
        done = next_offsets(batch.records)
        self._position.update(done)
        self._since_checkpoint += len(batch.records)
        if self.store is None:
            self._pending.update(done)
            if await self._commit(self._pending):
                self._pending = {}
        # With a store, offsets are committed with each checkpoint (see _checkpoint).

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
        if self.store is not None and self._store_started:
            await self.store.stop()
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
