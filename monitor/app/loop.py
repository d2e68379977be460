"""The batch loop: fetch, decode, detect, finish, commit, checkpoint, in this order.

For each batch: fetch it, decode it on the event loop, hand it to the worker thread
(detectors, label join, alert policy); then *finish* it: alerts to the sinks (the durable
outbox keeps them from there), rejects to the dead-letter topic (awaited), positions to
the ledger, and commit what the ledger says may be committed. Batch k+1 is fetched and
decoded while batch k's detectors run. Each step holds the work lock, so a rebalance or a
checkpoint (:meth:`BatchLoop.idle`) finds the worker idle between steps.

A fetch that fails transiently (the broker away) is retried with backoff while the daemon
keeps serving; one that names credentials or permissions stops the daemon
(:class:`~monitor.errors.FatalError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from monitor.alerting.alerts import Alert
from monitor.app.hooks import CrashPoints
from monitor.backoff import Backoff, retrying
from monitor.errors import FatalError, describe
from monitor.ingest.deadletters import DeadLetterQueue
from monitor.ingest.decode import Rejected, internal_error
from monitor.ingest.source import Offsets, Record, Source
from monitor.logs import Throttle
from monitor.online.commands import Command, has_unsent, take_unsent
from monitor.online.pipeline import Decoded, Detected, Pipeline
from monitor.state.checkpointer import Checkpointer
from monitor.state.ledger import PartitionLedger
from sinks.base import Sink

log = logging.getLogger("driftline.loop")


@dataclass
class _InFlight:
    """A batch whose detection is running in the worker thread."""

    records: list[Record]
    predictions: list[Record]
    dead: list[tuple[Record, Rejected]]
    job: asyncio.Future[Detected]


class BatchLoop:
    def __init__(
        self,
        *,
        source: Source,
        pipeline: Pipeline,
        ledger: PartitionLedger,
        dead_letters: DeadLetterQueue,
        sinks: Sequence[Sink],
        worker: Executor,
        checkpointer: Checkpointer | None = None,
        labels_topic: str | None = None,
        fetch_timeout_ms: int = 500,
        max_records: int = 5000,
        crash: CrashPoints | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        commit_timeout_s: float = 10.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.source = source
        self.pipeline = pipeline
        self.ledger = ledger
        self.dead_letters = dead_letters
        self.sinks = list(sinks)
        self.worker = worker
        self.checkpointer = checkpointer
        self.labels_topic = labels_topic
        self.fetch_timeout_ms = fetch_timeout_ms
        self.max_records = max_records
        self.crash = crash or CrashPoints(None)
        self.sleep = sleep
        self.commit_timeout_s = commit_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.work = asyncio.Lock()  # one of: a batch step, a checkpoint, a rebalance
        self.fetch_error: str | None = None  # the last fetch failure, while it lasts
        self.commit_failures = 0
        self.emit_failures = 0
        self.internal_errors = 0  # batches whose detection failed as a whole
        self.records = 0
        self._inflight: _InFlight | None = None
        self._backoff = Backoff(start=0.5, cap=30.0)
        self._throttle = Throttle(log)

    async def run(self, stopping: Callable[[], bool], wake: asyncio.Event) -> None:
        """Until ``stopping()``: fetch and process; then finish what is in flight, commit
        and take the final checkpoint."""

        def failed(exc: BaseException, _: float) -> None:
            self.fetch_error = describe(exc)

        async def pause(delay: float) -> None:  # a backoff that a stop request cuts short
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)

        while not stopping():
            try:
                records = await retrying(
                    lambda: self.source.fetch(self.fetch_timeout_ms, self.max_records),
                    what="fetching records",
                    backoff=self._backoff,
                    sleep=pause,
                    stopping=stopping,
                    on_failure=failed,
                )
            except FatalError:
                raise
            except Exception:  # a fetch failed as the daemon stops: finish up
                break
            self.fetch_error = None
            self._backoff.reset()
            # As the records arrive, before waiting for the lock: a rebalance that runs
            # meanwhile seeks every partition to where it resumes (see ledger.usable).
            generation = self.ledger.generation
            async with self.work:
                records = self.ledger.usable(records, generation)
                started = self._start(records) if records else None
                if self._inflight is not None:
                    await self._finish(self._inflight)
                self._inflight = started
                if self.checkpointer is not None and self.checkpointer.due(
                    self.ledger.since_checkpoint
                ):
                    await self._drain()
                    await self.checkpoint(self.ledger.owned)
            if has_unsent(self.pipeline):  # e.g. a reference file changed at a restore
                await self.command(take_unsent, self.pipeline)
        try:  # bounded: a broker gone at shutdown must not hold the stop up for ever
            await asyncio.wait_for(self._final(), self.stop_timeout_s)
        except TimeoutError:
            log.error(
                "the final commit and checkpoint did not finish within %.0f s; what they did "
                "not save is read again at the next start",
                self.stop_timeout_s,
            )

    async def _final(self) -> None:
        async with self.work:
            try:
                await self._drain()
            except Exception as exc:  # e.g. the dead-letter topic still away at shutdown
                log.error(
                    "the batch in flight could not be finished at shutdown (%s): it is not "
                    "committed and is read again at the next start",
                    describe(exc),
                )
                return
            await self.commit(self.ledger.to_commit())
            if self.checkpointer is not None:
                await self.checkpoint(self.ledger.owned)

    async def command(self, fn: Callable[..., Command], *args: Any) -> Command:
        """Run ``fn(*args)`` in the worker thread with nothing in flight, as a batch would
        be: its alerts go to the sinks, then the partitions it changed are checkpointed
        (and what became durable committed). ``fn``'s exceptions reach the caller."""
        async with self.idle():
            done = await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)
            await self.emit(done.alerts)
            owned = done.partitions & self.ledger.owned
            if self.checkpointer is not None and owned:
                await self.checkpoint(owned)
        return done

    @contextlib.asynccontextmanager
    async def idle(self) -> AsyncIterator[None]:
        """Hold the work lock with nothing in flight (rebalances, checkpoints, commands)."""
        async with self.work:
            await self._drain()
            yield

    def _start(self, records: list[Record]) -> _InFlight:
        """Decode a batch and hand it to the worker thread."""
        lt = self.labels_topic
        if lt:
            labels = [r for r in records if r.topic == lt]
            preds = [r for r in records if r.topic != lt] if labels else records
        else:
            labels, preds = [], records
        decoded: Decoded = self.pipeline.decode(
            [r.value for r in preds],
            [r.partition for r in preds],
            [r.timestamp for r in preds],
            [r.value for r in labels],
            [r.partition for r in labels],
            [r.timestamp for r in labels],
        )
        dead = [(preds[x.index], x) for x in decoded.rejected]
        dead += [(labels[x.index], x) for x in decoded.label_rejected]
        job = asyncio.get_running_loop().run_in_executor(self.worker, self.pipeline.detect, decoded)
        self.crash.passing("detect")
        return _InFlight(records, preds, dead, job)

    async def _drain(self) -> None:
        """Finish the batch in flight, if any (call with the work lock held)."""
        if self._inflight is not None:
            batch, self._inflight = self._inflight, None
            await self._finish(batch)

    async def _finish(self, batch: _InFlight) -> None:
        try:
            detected = await batch.job
        except Exception as exc:  # a bug outside the per-model guard: never a crash loop
            log.exception("internal error processing a batch: its records are rejected")
            self.internal_errors += 1
            detected = Detected([], [internal_error(i, exc) for i in range(len(batch.predictions))])
        await self.emit(detected.alerts)
        dead = batch.dead + [(batch.predictions[x.index], x) for x in detected.failed]
        await self.dead_letters.send(dead)
        self.crash.passing("emit")
        self.ledger.finished(batch.records)
        self.records += len(batch.records)
        if log.isEnabledFor(logging.DEBUG):
            spans: dict[tuple[str, int], list[int]] = {}
            for r in batch.records:
                spans.setdefault((r.topic, r.partition), []).append(r.offset)
            log.debug("finished %s", {f"{t}/{p}": (o[0], o[-1]) for (t, p), o in spans.items()})
        await self.commit(self.ledger.to_commit())

    async def emit(self, alerts: list[Alert]) -> None:
        """Hand alerts to every sink (each queues them in its outbox at once)."""
        if not alerts:
            return
        for sink in self.sinks:
            try:
                await sink.emit(alerts)
            except Exception:
                self.emit_failures += 1
                self._throttle.exception(
                    "sink %s failed to accept %d alert(s)", sink.name, len(alerts)
                )

    async def commit(self, offsets: Offsets) -> bool:
        if not offsets:
            return True
        try:  # a commit waits for the group coordinator: bounded, then retried later
            await asyncio.wait_for(self.source.commit(offsets), self.commit_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.commit_failures += 1
            log.warning("offset commit failed (%s); will commit with the next batch", describe(exc))
            return False
        self.ledger.committed(offsets)
        return True

    async def checkpoint(self, partitions: set[int]) -> None:
        """Checkpoint ``partitions`` and commit what became durable (work lock held, nothing
        in flight)."""
        assert self.checkpointer is not None and self._inflight is None
        written = self.checkpointer.written
        committable = await self.checkpointer.take(partitions, self.ledger, self.pipeline.models_of)
        if self.checkpointer.written > written:
            self.crash.passing("checkpoint")
        # The group's committed offsets follow the checkpoints: a partition never
        # checkpointed is read again from the start of what its state has not seen.
        await self.commit(committable)
