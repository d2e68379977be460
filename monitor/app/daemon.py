"""The daemon: a supervisor that owns every task, thread and process, and one lifespan.

What runs where, who stops it, and where its errors go:

==========================  =====================  ==================  ==========================
what                        runs in                stopped by          its errors
==========================  =====================  ==================  ==========================
batch loop (fetch, decode,  event loop (task)      stop request, then  transient: retried with
finish, commit, checkpoint)                        final checkpoint    backoff; fatal: exit 1/2
detection (pipeline state)  ``driftline-detect``   lifespan exit       per model batch: records
                            thread (1)                                 become ``internal_error``
encoding, stores, learner   ``driftline-io``       lifespan exit       checkpoint fails, retried
hand-over                   threads (2)                                (nothing committed past)
health (broker probe,       event loop (task)      lifespan exit       logged, in /status and
component supervision)                                                 metrics
restores that must wait     event loop (tasks)     revocation, exit    retried with backoff
sink delivery (per sink)    event loop (task in    lifespan exit       retried; a dead task is
                            its outbox)                                restarted (counted)
online learner (per model)  its own process +      lifespan exit       a dead process is
                            a reader thread                            restarted (counted)
HTTP (/metrics, /status..)  event loop (aiohttp)   lifespan exit       per request
Kafka clients               aiokafka's tasks       lifespan exit       raised to their caller
==========================  =====================  ==================  ==========================

Start is transactional: each component is entered into one ``AsyncExitStack`` as it
starts, so a failure part way unwinds what already started. A broker that cannot be
reached at start is retried (HTTP answers meanwhile, ``/readyz`` says ``starting``);
one that refuses our credentials stops the daemon with exit status 2. SIGTERM or SIGINT
stops fetching, finishes the batch in flight, commits (and checkpoints), lets the sinks
deliver for at most ``shutdown_timeout_s`` and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from detectors.warmup import warm
from monitor.app.health import Health, Restartable
from monitor.app.loop import BatchLoop
from monitor.app.ownership import PartitionOwner
from monitor.app.reloader import Reloader
from monitor.backoff import Backoff, retrying
from monitor.config.schema import Config
from monitor.errors import EXIT_FAILURE, FatalError
from monitor.ingest.deadletters import DeadLetterQueue
from monitor.ingest.source import DeadLetters, Source
from monitor.online import commands
from monitor.online.model_monitor import RebaselineError
from monitor.online.pipeline import Pipeline
from monitor.serve.http import build_app
from monitor.serve.metrics import DriftlineCollector
from monitor.serve.status import ComponentStatus, DaemonStatus, Snapshot
from monitor.state.checkpointer import Checkpointer
from monitor.state.ledger import PartitionLedger
from monitor.state.stores import Store
from sinks.base import Sink

log = logging.getLogger("driftline.daemon")


@dataclass
class Parts:
    """Everything the daemon runs, built by ``monitor.app.build`` (or a test)."""

    config: Config
    pipeline: Pipeline
    source: Source
    dead_letters: DeadLetters
    sinks: Sequence[Sink]
    store: Store | None
    learners: dict[str, Any] = field(default_factory=dict)
    supervised: Sequence[Restartable] = ()
    registry: CollectorRegistry | None = None
    worker: Executor | None = None
    io: Executor | None = None
    crash: Any = None
    version: str = "unknown"
    probe_interval_s: float = 2.0
    memory_only: bool = False
    config_path: Path | None = None  # what a reload reads again (None: no reloads)
    make_sink: Callable[[Config, str, Any], Sink] | None = None  # a sink a reload adds
    supervise_sink: Callable[[Sink], Restartable | None] = lambda _: None


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


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Daemon:
    """The supervisor (see the module doc)."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.config = parts.config
        self.version = parts.version
        self.pipeline = parts.pipeline
        self.source = parts.source
        self.sinks = list(parts.sinks)
        self.store = parts.store
        self.ready = False
        self.stopping = False
        self.exit_code = 0
        self.http_port: int | None = None
        self.health = Health(self.source, parts.supervised, parts.probe_interval_s)
        self._stop = asyncio.Event()
        self._worker = parts.worker or ThreadPoolExecutor(1, thread_name_prefix="driftline-detect")
        self._io = parts.io or ThreadPoolExecutor(2, thread_name_prefix="driftline-io")
        k = self.config.kafka
        self.ledger = PartitionLedger(store=self.store is not None)
        self.dead_letters = DeadLetterQueue(
            parts.dead_letters,
            enabled=k.dead_letter_topic is not None,
            give_up=lambda: self.stopping,
        )
        st = self.config.state
        self.checkpointer = (
            None
            if self.store is None
            else Checkpointer(
                self.store,
                name_of=lambda p: checkpoint_name(self.config, self.store, p),
                export=lambda p: {"pipeline": self.pipeline.export(p)},
                load=self._load,
                run_worker=self._run_worker,
                run_io=self._run_io,
                flush_sinks=lambda: flush_all(self.sinks, st.checkpoint_flush_timeout_s),
                every_events=st.checkpoint_every_events,
                every_s=st.checkpoint_every_s,
            )
        )
        self.loop = BatchLoop(
            source=self.source,
            pipeline=self.pipeline,
            ledger=self.ledger,
            dead_letters=self.dead_letters,
            sinks=self.sinks,
            worker=self._worker,
            checkpointer=self.checkpointer,
            labels_topic=k.labels_topic,
            fetch_timeout_ms=k.fetch_timeout_ms,
            max_records=k.max_batch_records,
            crash=parts.crash,
            stop_timeout_s=self.config.shutdown_timeout_s,
        )
        self.owner = PartitionOwner(
            ledger=self.ledger,
            loop=self.loop,
            checkpointer=self.checkpointer,
            forget=self.pipeline.drop,
            run_worker=self._run_worker,
            on_fatal=self.fatal,
        )
        self.owner.source = self.source
        self.reloader = Reloader(self, parts.config_path, parts.make_sink, parts.supervise_sink)
        self.token: str | None = (
            None if self.config.http.token is None else self.config.http.token.get_secret_value()
        )
        self.registry = parts.registry if parts.registry is not None else CollectorRegistry()
        self.registry.register(DriftlineCollector(self.snapshot))
        self._runner: web.AppRunner | None = None

    # -- what others may read -----------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The pipeline's last published status and the daemon's own, now (event loop)."""
        return Snapshot(self.pipeline.status, daemon_status(self))

    @property
    def connected(self) -> bool:
        return self.health.connected

    # -- lifecycle ---------------------------------------------------------------------
    def request_stop(self) -> None:
        if not self.stopping:
            log.info("stop requested: finishing the current batch")
        self.stopping = True
        self.ready = False
        self._stop.set()

    def fatal(self, reason: str, exit_code: int = EXIT_FAILURE) -> None:
        """Stop with ``exit_code``: something the daemon cannot work around."""
        log.error("stopping: %s", reason)
        self.exit_code = max(self.exit_code, exit_code)
        self.request_stop()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
        loop.add_signal_handler(signal.SIGHUP, self.reloader.reload_soon)

    async def run(self) -> int:
        """Run until stopped; returns the process exit status."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                stack.callback(self._shutdown_executors)
                await self._start_http(stack)
                stack.push_async_callback(self._close_sinks)  # those running then
                for sink in self.sinks:
                    await sink.start()  # the outbox: replays its file, starts delivering
                for learner in self.parts.learners.values():
                    learner.start()
                    stack.callback(learner.stop)
                if self.parts.memory_only:
                    log.warning(
                        "state.memory_only: checkpoints and undelivered alerts are kept in "
                        "memory only; a restart re-warms every reference and forgets the "
                        "firing alerts"
                    )
                self.ready = True
                await self._run_worker(warm, False)  # kernels loaded before any rebalance
                if not await self._connect(stack):
                    return self.exit_code
                health = asyncio.create_task(self.health.watch(), name="health")
                stack.push_async_callback(_cancel, health)
                await self.loop.run(lambda: self.stopping, self._stop)
        except FatalError as exc:
            self.fatal(str(exc), exc.exit_code)
        finally:
            self.ready = False
            log.info("stopped")
        return self.exit_code

    async def _start_http(self, stack: contextlib.AsyncExitStack) -> None:
        app = build_app(
            self.snapshot,
            registry=self.registry,
            token=lambda: self.token,
            learners=self.parts.learners,
            models=self.config.models,
            rebaseline=self.rebaseline,
            reload=self.reloader.reload,
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, self.config.http.host, self.config.http.port)
        await site.start()
        self._runner = runner
        self.http_port = int(runner.addresses[0][1])
        log.info(
            "serving /metrics /healthz /readyz /status on http://%s:%s",
            self.config.http.host,
            self.http_port,
        )

    async def _connect(self, stack: contextlib.AsyncExitStack) -> bool:
        """Store, dead-letter producer and consumer, each retried until it starts (or the
        daemon is stopped, or a fatal error). Returns whether it connected."""
        k = self.config.kafka

        def failed(exc: BaseException, _: float) -> None:
            self.health.connecting_failed(exc)

        async def attempt() -> None:
            if self.store is not None:
                await self.store.start()
            await self.parts.dead_letters.start()
            await self.source.start(self.owner)

        try:
            await retrying(
                attempt,
                what=f"connecting to Kafka at {k.bootstrap_servers}",
                backoff=Backoff(0.5, 30.0),
                sleep=self._sleep_or_stop,
                stopping=lambda: self.stopping,
                on_failure=failed,
            )
        except FatalError:
            raise
        except Exception:
            if self.stopping:
                return False
            raise
        if self.stopping:
            await self._close_clients()
            return False
        stack.push_async_callback(self._close_clients)
        stack.push_async_callback(self.owner.stop)
        self.health.connected_now()
        log.info("consuming %s as group %s from %s", k.topic, k.group_id, k.bootstrap_servers)
        return True

    async def _close_clients(self) -> None:
        timeout = self.config.shutdown_timeout_s / 2
        for what, stop in (
            ("the Kafka consumer", self.source.stop),
            ("the dead-letter producer", self.parts.dead_letters.stop),
            ("the checkpoint store", self.store.stop if self.store is not None else None),
        ):
            if stop is None:
                continue
            try:
                await asyncio.wait_for(stop(), timeout)
            except TimeoutError:
                log.error("%s did not stop within %.1f s", what, timeout)
            except Exception:
                log.exception("%s did not stop cleanly", what)
        self.health.connected = False

    async def _close_sinks(self) -> None:
        for sink in reversed(self.sinks):
            await self.close_sink(sink)

    async def close_sink(self, sink: Sink) -> None:
        timeout = self.config.shutdown_timeout_s
        try:
            await asyncio.wait_for(sink.close(timeout / 2), timeout)
        except (TimeoutError, Exception):
            log.exception("sink %s did not close cleanly", sink.name)

    def _shutdown_executors(self) -> None:
        self._worker.shutdown(wait=True)
        self._io.shutdown(wait=True)

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def rebaseline(
        self, model: str, source: str, events: int, features: list[str] | None
    ) -> tuple[int, dict[str, Any]]:
        """Re-baseline a model as a batch would be processed (see ``BatchLoop.command``):
        200 (from recent) or 202 (from next, under way) with the model's reference, or
        the HTTP status of a RebaselineError with its message."""
        try:
            done = await self.loop.command(
                commands.rebaseline, self.pipeline, model, source, events, features
            )
        except RebaselineError as exc:
            return exc.status, {"error": str(exc)}
        return (200 if source == "recent" else 202), done.answer

    # -- work done for others, in the right thread ---------------------------------------
    async def _run_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def _run_io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _load(self, partition: int, state: Mapping[str, Any] | None) -> list[str]:
        """Restore a partition (or start it afresh with ``None``) (worker thread)."""
        if state is None:
            self.pipeline.drop(partition)
            return []
        return self.pipeline.restore(partition, state["pipeline"])


def daemon_status(d: Daemon) -> DaemonStatus:
    """What the event loop owns, now (call it on the event loop)."""
    cp = d.checkpointer
    h = d.health
    names = ["kafka", *[c.name for c in h.components]]
    connected = h.connected
    return DaemonStatus(
        version=d.version,
        ready=d.ready,
        stopping=d.stopping,
        connected=connected,
        kafka_error=h.kafka_error or d.loop.fetch_error,
        disconnected_s=h.disconnected_s(),
        topic=d.config.kafka.topic,
        group_id=d.config.kafka.group_id,
        assignment=tuple(f"{t}/{p}" for t, p in d.source.assignment()) if connected else (),
        lag=d.source.lag() if connected else None,
        lags=d.source.lags() if connected else {},
        wall_clock=time.time(),
        partitions=tuple(sorted(d.ledger.owned)),
        restoring=dict(d.owner.waiting),
        positions=dict(d.ledger.position),
        dead_lettered=dict(d.dead_letters.sent),
        dead_letter_failures=d.dead_letters.failures,
        dead_letter_error=d.dead_letters.last_error,
        commit_failures=d.loop.commit_failures,
        internal_errors=d.loop.internal_errors,
        offset_resets=dict(getattr(d.source, "resets", {})),
        store=None if d.store is None else d.store.describe(),
        memory_only=d.parts.memory_only,
        checkpoints=0 if cp is None else cp.written,
        checkpoint_failures=0 if cp is None else cp.failures,
        checkpoint_error=None if cp is None else cp.last_error,
        checkpoint_seconds=0.0 if cp is None else cp.last_seconds,
        checkpoint_bytes=0 if cp is None else cp.last_bytes,
        checkpoint_at=None if cp is None else cp.last_success_at,
        restores={} if cp is None else dict(cp.restores),
        sinks={s.name: s.stats() for s in d.sinks},
        components=tuple(ComponentStatus(n, h.restarts.get(n, 0), h.errors.get(n)) for n in names),
        reload=d.reloader.status,
    )


def checkpoint_name(config: Config, store: Store | None, partition: int) -> str:
    from monitor.state.changelog import ChangelogStore
    from monitor.state.checkpointer import store_name

    k = config.kafka
    return store_name(k.group_id, k.topic, partition, isinstance(store, ChangelogStore))


async def flush_all(sinks: Sequence[Sink], timeout: float) -> bool:
    """Alerts emitted before a checkpoint must be safe before it is taken: after it, a
    crash would not raise them again."""
    ok = True
    for sink in sinks:
        if not await sink.flush(timeout):
            log.warning(
                "sink %s has not made every alert emitted before this checkpoint safe "
                "within %.0f s",
                sink.name,
                timeout,
            )
            ok = False
    return ok
