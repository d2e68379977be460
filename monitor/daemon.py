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
import inspect
import io
import logging
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from sinks.base import Sink

from .backoff import Backoff, retrying
from .checkpointer import Checkpointer
from .config import Config
from .deadletters import DeadLetterQueue
from .errors import EXIT_FAILURE, FatalError, describe
from .http import build_app
from .ledger import PartitionLedger
from .loop import BatchLoop
from .metrics import DriftlineCollector
from .ownership import PartitionOwner
from .pipeline import Pipeline
from .source import DeadLetters, Source
from .status import ComponentStatus, DaemonStatus, Snapshot
from .stores import Store

log = logging.getLogger("driftline.daemon")


class Restartable(Protocol):
    """A background component the supervisor watches: ``check`` says why it stopped
    working (None while it works), ``restart`` starts it again."""

    name: str

    def check(self) -> str | None: ...

    def restart(self) -> Any: ...


@dataclass
class Parts:
    """Everything the daemon runs, built by ``monitor.build`` (or a test)."""

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
        self.connected = False
        self.kafka_error: str | None = None
        self.disconnected_since: float | None = None
        self.restarts: Counter[str] = Counter()
        self.component_errors: dict[str, str] = {}
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
                name_of=self._name_of,
                export=self._export,
                load=self._load,
                run_worker=self._run_worker,
                run_io=self._run_io,
                flush_sinks=self._flush_sinks,
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
        )
        self.owner = PartitionOwner(
            ledger=self.ledger,
            loop=self.loop,
            checkpointer=self.checkpointer,
            forget=self._forget,
            run_worker=self._run_worker,
            on_fatal=self.fatal,
        )
        self.owner.source = self.source
        self.registry = parts.registry if parts.registry is not None else CollectorRegistry()
        self.registry.register(DriftlineCollector(self.snapshot))
        self._runner: web.AppRunner | None = None

    # -- what others may read -----------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The pipeline's last published status and the daemon's own, now (event loop)."""
        return Snapshot(self.pipeline.status, self._daemon_status())

    def _daemon_status(self) -> DaemonStatus:
        cp = self.checkpointer
        components = [
            ComponentStatus(name, self.restarts.get(name, 0), self.component_errors.get(name))
            for name in self._component_names()
        ]
        return DaemonStatus(
            version=self.version,
            ready=self.ready,
            stopping=self.stopping,
            connected=self.connected,
            kafka_error=self.kafka_error or self.loop.fetch_error,
            disconnected_s=None
            if self.disconnected_since is None
            else time.monotonic() - self.disconnected_since,
            topic=self.config.kafka.topic,
            group_id=self.config.kafka.group_id,
            assignment=tuple(f"{t}/{p}" for t, p in self.source.assignment())
            if self.connected
            else (),
            lag=self.source.lag() if self.connected else None,
            partitions=tuple(sorted(self.ledger.owned)),
            restoring=dict(self.owner.waiting),
            positions=dict(self.ledger.position),
            dead_lettered=dict(self.dead_letters.sent),
            dead_letter_failures=self.dead_letters.failures,
            dead_letter_error=self.dead_letters.last_error,
            commit_failures=self.loop.commit_failures,
            offset_resets=dict(getattr(self.source, "resets", {})),
            store=None if self.store is None else self.store.describe(),
            memory_only=self.parts.memory_only,
            checkpoints=0 if cp is None else cp.written,
            checkpoint_failures=0 if cp is None else cp.failures,
            checkpoint_error=None if cp is None else cp.last_error,
            checkpoint_seconds=0.0 if cp is None else cp.last_seconds,
            checkpoint_bytes=0 if cp is None else cp.last_bytes,
            checkpoint_at=None if cp is None else cp.last_success_at,
            restores={} if cp is None else dict(cp.restores),
            sinks={s.name: s.stats() for s in self.sinks},
            components=tuple(components),
        )

    def _component_names(self) -> list[str]:
        return ["kafka", *[c.name for c in self.parts.supervised]]

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

    async def run(self) -> int:
        """Run until stopped; returns the process exit status."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                stack.callback(self._shutdown_executors)
                await self._start_http(stack)
                for sink in self.sinks:
                    await sink.start()  # the outbox: replays its file, starts delivering
                    stack.push_async_callback(self._close_sink, sink)
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
                if not await self._connect(stack):
                    return self.exit_code
                health = asyncio.create_task(self._health(), name="health")
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
            token=None
            if self.config.http.token is None
            else self.config.http.token.get_secret_value(),
            learners=self.parts.learners,
            models=self.config.models,
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
            self.kafka_error = describe(exc)
            self.connected = False

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
        self.connected = True
        self.kafka_error = None
        self.disconnected_since = None
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
        self.connected = False

    async def _close_sink(self, sink: Sink) -> None:
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

    # -- health and supervision ---------------------------------------------------------
    async def _health(self) -> None:
        """Every ``probe_interval_s``: ask the broker (a lost broker shows within seconds),
        and restart any supervised component that stopped working."""
        backoffs: dict[str, Backoff] = {}
        next_try: dict[str, float] = {}
        while True:
            await asyncio.sleep(self.parts.probe_interval_s)
            try:
                await self.source.probe()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = describe(exc)
                if self.connected:
                    self.disconnected_since = time.monotonic()
                    log.error("lost the connection to Kafka (%s); still serving, retrying", error)
                self.connected = False
                self.kafka_error = error
                self.component_errors["kafka"] = error
            else:
                if not self.connected:
                    lost = (
                        0.0
                        if self.disconnected_since is None
                        else time.monotonic() - self.disconnected_since
                    )
                    log.info("connected to Kafka again (after %.1f s)", lost)
                self.connected = True
                self.kafka_error = None
                self.disconnected_since = None
                self.component_errors.pop("kafka", None)
            now = time.monotonic()
            for c in self.parts.supervised:
                why = c.check()
                if why is None:
                    self.component_errors.pop(c.name, None)
                    backoffs.pop(c.name, None)
                    continue
                self.component_errors[c.name] = why
                if now < next_try.get(c.name, 0.0):
                    continue
                backoff = backoffs.setdefault(c.name, Backoff(1.0, 60.0))
                next_try[c.name] = now + backoff.next()
                self.restarts[c.name] += 1
                log.error("%s stopped working (%s): restarting it", c.name, why)
                try:
                    result = c.restart()
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("restarting %s failed", c.name)

    # -- work done for others, in the right thread ---------------------------------------
    async def _run_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def _run_io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _name_of(self, partition: int) -> str:
        from .changelog import ChangelogStore
        from .checkpointer import store_name

        k = self.config.kafka
        return store_name(k.group_id, k.topic, partition, isinstance(self.store, ChangelogStore))

    def _export(self, partition: int) -> dict[str, Any]:
        """The partition's state with its learners' models (worker thread)."""
        state = self.pipeline.export(partition)
        state["learners"] = {
            m: self.parts.learners[m].export_state()
            for m in self.pipeline.models_of(partition)
            if m in self.parts.learners
        }
        return {"pipeline": state}

    def _load(self, partition: int, state: Mapping[str, Any] | None) -> list[str]:
        """Restore a partition (or start it afresh with ``None``) (worker thread)."""
        if state is None:
            self._forget(partition)
            return []
        saved = state["pipeline"]
        models = self.pipeline.restore(partition, saved)
        for m in models:
            learner = self.parts.learners.get(m)
            if learner is not None:
                learner.load_state(saved.get("learners", {}).get(m))
        return models

    def _forget(self, partition: int) -> None:
        for m in self.pipeline.models_of(partition):
            learner = self.parts.learners.get(m)
            if learner is not None:
                learner.load_state(None)
        self.pipeline.drop(partition)

    async def _flush_sinks(self) -> bool:
        """Alerts emitted before a checkpoint must be safe before it is taken: after it, a
        crash would not raise them again."""
        timeout = self.config.state.checkpoint_flush_timeout_s
        ok = True
        for sink in self.sinks:
            if not await sink.flush(timeout):
                log.warning(
                    "sink %s has not made every alert emitted before this checkpoint safe "
                    "within %.0f s",
                    sink.name,
                    timeout,
                )
                ok = False
        return ok
