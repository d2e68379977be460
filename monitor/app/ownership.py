"""Partitions changing hands: Kafka's rebalance callbacks, and restores that must wait.

**Revoked** (before partitions are given up): finish the batch in flight, commit, and
checkpoint the partitions (with a store), so that their next owner continues exactly from
here. **Assigned** (before the first record of the new assignment): partitions this
instance held until this rebalance continue from memory; new ones are restored from the
store and sought to their checkpoint's offsets.

A store that cannot be read at assignment (a broker or disk away) must not make the
partition start afresh (that would silently re-baseline it) nor hold the rebalance up:
the partition is **paused** (not consumed) and its restore retried in the background with
backoff (0.5 s doubling to 30 s, visible in ``/status``); once restored it is sought to
its checkpoint and resumed. Only an error that cannot be retried stops the daemon
(exit 1: its supervisor restarts it, and the state is still in the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from monitor.app.loop import BatchLoop
from monitor.backoff import Backoff, Sleep
from monitor.errors import classify, describe
from monitor.ingest.source import TP, Resume, Source
from monitor.state.checkpointer import Checkpointer, Restored
from monitor.state.ledger import PartitionLedger

log = logging.getLogger("driftline.ownership")


class PartitionOwner:
    """The :class:`~monitor.ingest.source.Ownership` of the daemon; owns the background restore
    tasks (cancelled by :meth:`stop`)."""

    def __init__(
        self,
        *,
        ledger: PartitionLedger,
        loop: BatchLoop,
        checkpointer: Checkpointer | None,
        forget: Callable[[int], Any],  # drop a partition's state (in the worker)
        run_worker: Callable[..., Any],
        on_fatal: Callable[[str, int], None],
        sleep: Sleep = asyncio.sleep,
        first_try_s: float = 10.0,
    ) -> None:
        self.ledger = ledger
        self.loop = loop
        self.checkpointer = checkpointer
        self.forget = forget
        self.run_worker = run_worker
        self.on_fatal = on_fatal
        self.sleep = sleep
        self.first_try_s = first_try_s
        self.source: Source | None = None  # set by the daemon once the source exists
        self.waiting: dict[int, str] = {}  # partitions paused for a restore -> last error
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._assigned: dict[int, list[TP]] = {}

    def fatal(self, reason: str, exit_code: int = 1) -> None:
        self.on_fatal(reason, exit_code)

    async def revoked(self, partitions: list[TP]) -> None:
        parts = {p for _, p in partitions}
        for p in parts:
            self._cancel(p)
        async with self.loop.idle():
            await self.loop.commit(self.ledger.to_commit())
            held = parts & self.ledger.owned
            if self.checkpointer is not None and held:
                await self.loop.checkpoint(held)
            self.ledger.revoke(parts)
        log.info("partitions %s revoked", sorted(parts))

    async def assigned(self, partitions: list[TP]) -> tuple[dict[TP, Resume], set[TP]]:
        by_partition: dict[int, list[TP]] = {}
        for tp in partitions:
            by_partition.setdefault(tp[1], []).append(tp)
        self._assigned = by_partition
        starts: dict[TP, Resume] = {}
        paused: set[TP] = set()
        async with self.loop.idle():
            a = self.ledger.assign(set(by_partition))
            for p in a.forget:
                await self.run_worker(self.forget, p)
            for p in sorted(a.keep):
                starts.update(self.ledger.resume_of(p))
            refresh = True  # the store reads what others wrote once per assignment
            for p in sorted(a.restore):
                if self.checkpointer is None:
                    await self.run_worker(self.forget, p)
                    self.ledger.restored(p, {}, {})
                    continue
                try:
                    restored = await asyncio.wait_for(
                        self.checkpointer.restore(p, refresh=refresh), self.first_try_s
                    )
                    refresh = False
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    fault = classify(exc)
                    if not fault.transient:
                        raise
                    self.waiting[p] = describe(exc)
                    log.error(
                        "cannot read partition %d's checkpoint (%s): it is paused, and its "
                        "restore is retried in the background",
                        p,
                        self.waiting[p],
                    )
                    paused.update(by_partition[p])
                    self._tasks[p] = asyncio.create_task(
                        self._retry(p), name=f"restore-partition-{p}"
                    )
                    continue
                self.ledger.restored(p, restored.offsets, restored.fingerprints)
                starts.update(_resumes(restored))
            # The caller seeks right after this returns, with no await in between.
            self.ledger.settled()
        return starts, paused

    async def _retry(self, p: int) -> None:
        backoff = Backoff(start=0.5, cap=30.0)
        assert self.checkpointer is not None
        while True:
            await self.sleep(backoff.next())
            try:
                restored = await self.checkpointer.restore(p)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                fault = classify(exc)
                if not fault.transient:
                    self.fatal(f"cannot restore partition {p}: {describe(exc)}", fault.exit_code)
                    return
                self.waiting[p] = describe(exc)
                log.error("restoring partition %d failed again (%s)", p, self.waiting[p])
        async with self.loop.idle():
            if p not in self.ledger.restoring:
                return  # revoked meanwhile
            self.ledger.restored(p, restored.offsets, restored.fingerprints)
            self.waiting.pop(p, None)
            tps = self._assigned.get(p, [])
            if self.source is not None:
                for tp, resume in _resumes(restored).items():
                    self.source.seek(tp, resume)
                self.source.resume(tps)
            self.ledger.settled()
        log.info("partition %d restored after a wait: consuming it again", p)

    def _cancel(self, p: int) -> None:
        task = self._tasks.pop(p, None)
        if task is not None:
            task.cancel()
        self.waiting.pop(p, None)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _resumes(restored: Restored) -> dict[TP, Resume]:
    return {tp: Resume(o, restored.fingerprints.get(tp)) for tp, o in restored.offsets.items()}
