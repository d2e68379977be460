"""Checkpoints: when to take them, taking them, and restoring a partition from one.

A checkpoint of a partition holds everything its future output depends on (the models'
states as plain data, the online learners' models, rejection counts) and the positions
it was taken at (the next offsets, with the fingerprint of the last record). It is taken
every ``checkpoint_every_events`` processed records or ``checkpoint_every_s`` seconds,
whichever comes first, when partitions are given up, and at a clean stop.

Order of a checkpoint: the sinks flush (alerts emitted before it must be safe first: after
it, a crash would not raise them again), the worker exports each partition's state, the io
thread encodes it, the store makes it durable, and only then may its offsets be committed.

**Failures.** A store that cannot be written (a full disk, a broker away) or sinks that
cannot flush make that round fail: logged, counted, shown in ``/status``, retried after a
backoff (0.5 s doubling to 60 s), and nothing is committed past the last checkpoint that
succeeded, so a crash in between replays from there. Consumption goes on meanwhile.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from monitor.backoff import Backoff
from monitor.errors import CheckpointError, describe
from monitor.ingest.source import TP, Offsets
from monitor.state import codec
from monitor.state.ledger import PartitionLedger
from monitor.state.stores import Store

log = logging.getLogger("driftline.checkpoint")

T = TypeVar("T")
Run = Callable[..., Awaitable[Any]]  # run(fn, *args) in a named executor


@dataclass(frozen=True)
class Restored:
    """What a restore gave: the positions to resume at (empty: start afresh) and how
    (``restored``, ``fresh``: no checkpoint, ``failed``: an unusable one)."""

    offsets: Offsets
    fingerprints: dict[TP, int]
    result: str
    models: tuple[str, ...] = ()


def store_name(group: str, topic: str, partition: int, changelog: bool) -> str:
    """A partition's key in the store: ``group/topic/partition`` in a changelog, the
    same with dots (and anything unsafe replaced) as a local file name.

    >>> store_name("g", "loans", 3, changelog=False)
    'g.loans.3'
    """
    if changelog:
        return f"{group}/{topic}/{partition}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{group}.{topic}.{partition}")


class Checkpointer:
    """See the module doc. ``export(p)`` / ``load(p, state)`` read and write the
    partition's state (run in the worker thread, its owner, by ``run_worker``);
    ``run_io`` runs encoding, decoding and the learners' hand-over off the event loop."""

    def __init__(
        self,
        store: Store,
        *,
        name_of: Callable[[int], str],
        export: Callable[[int], dict[str, Any]],
        load: Callable[[int, Mapping[str, Any] | None], Any],
        run_worker: Run,
        run_io: Run,
        flush_sinks: Callable[[], Awaitable[bool]],
        every_events: int = 50_000,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.name_of = name_of
        self.export = export
        self.load = load
        self.run_worker = run_worker
        self.run_io = run_io
        self.flush_sinks = flush_sinks
        self.every_events = every_events
        self.every_s = every_s
        self.clock = clock
        self.wall = wall
        self.written = 0  # rounds that succeeded
        self.failures = 0  # rounds that failed
        self.last_error: str | None = None
        self.last_seconds = 0.0
        self.last_bytes = 0
        self.last_success_at: float | None = None  # wall clock
        self.restores: Counter[str] = Counter()
        self._last = clock()
        self._retry_at = 0.0
        self._backoff = Backoff(start=0.5, cap=60.0)

    def due(self, since_events: int) -> bool:
        if since_events <= 0:
            return False
        now = self.clock()
        if now < self._retry_at:
            return False
        return since_events >= self.every_events or now - self._last >= self.every_s

    async def take(
        self, partitions: set[int], ledger: PartitionLedger, models_of: Callable[[int], list[str]]
    ) -> Offsets:
        """One checkpoint per partition (call with the worker idle); returns the offsets
        that may now be committed (those of the checkpoints made durable)."""
        start = time.perf_counter()
        committable: Offsets = {}
        size = 0
        try:
            if not await self.flush_sinks():
                raise CheckpointError(
                    "a sink could not make the alerts emitted before this checkpoint safe in time"
                )
            for p in sorted(partitions):
                offsets, fps = ledger.checkpoint_of(p)
                if not offsets and not models_of(p):
                    continue  # nothing read yet: nothing to continue from
                state = await self.run_worker(self.export, p)
                state["offsets"] = sorted(offsets.items())
                state["fingerprints"] = sorted(fps.items())
                state["written_at"] = self.wall()
                data = await self.run_io(codec.encode, state)
                await self.store.put(self.name_of(p), data)
                size += len(data)
                committable.update(offsets)
        except Exception as exc:
            self.failures += 1
            self.last_error = describe(exc)
            delay = self._backoff.next()
            self._retry_at = self.clock() + delay
            log.error(
                "checkpoint failed (%s); nothing is committed past the last checkpoint; "
                "next attempt in %.1f s",
                self.last_error,
                delay,
            )
            return committable
        self._backoff.reset()
        self._retry_at = 0.0
        self.written += 1
        self.last_error = None
        self.last_seconds = time.perf_counter() - start
        self.last_bytes = size
        self.last_success_at = self.wall()
        self._last = self.clock()
        ledger.checkpointed()
        return committable

    async def restore(self, partition: int, *, refresh: bool = True) -> Restored:
        """The partition's newest usable checkpoint, loaded. An unusable one (corrupt,
        another format, another configuration) means starting afresh, logged and counted;
        a store that cannot be reached raises (the caller retries: starting afresh then
        would silently lose the partition's state)."""
        name = self.name_of(partition)
        candidates = await self.store.get(name, refresh=refresh)
        try:
            found = await self.run_io(codec.decode_first, candidates)
        except CheckpointError as exc:
            log.error(
                "%s; partition %d starts afresh (its references warm up again)", exc, partition
            )
            self.restores["failed"] += 1
            await self.run_worker(self.load, partition, None)
            return Restored({}, {}, "failed")
        if found is None:
            log.info("no checkpoint for partition %d (%s): starting afresh", partition, name)
            self.restores["fresh"] += 1
            await self.run_worker(self.load, partition, None)
            return Restored({}, {}, "fresh")
        state, where = found
        models = await self.run_worker(self.load, partition, state)
        offsets = {(str(t), int(p)): int(o) for (t, p), o in state["offsets"]}
        fps = {(str(t), int(p)): int(f) for (t, p), f in state["fingerprints"]}
        self.restores["restored"] += 1
        log.info(
            "restored partition %d from %s (models: %s): resuming at %s",
            partition,
            where,
            ", ".join(models) or "none yet",
            ", ".join(f"{t}/{p}@{o}" for (t, p), o in sorted(offsets.items())) or "-",
        )
        return Restored(offsets, fps, "restored", tuple(models))
