"""Where records come from: the protocols (:class:`Source`, :class:`Ownership`,
:class:`DeadLetters`), the :class:`Record` type and an in-memory source with scripted
rebalances for the fast test tier. The Kafka implementations are ``monitor.ingest.kafka``.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from monitor.ingest.decode import Rejected

TP = tuple[str, int]  # (topic, partition)
Offsets = dict[TP, int]  # (topic, partition) -> next offset to read


class Record(NamedTuple):
    """One consumed record (a tuple: built once per record on the hot path)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: float = math.nan  # the record's timestamp, in seconds (NaN if none)


def fingerprint(record: Record) -> int:
    """A checksum of a record's key, value and timestamp: a checkpoint keeps the one of
    the last record it saw per partition, so that a log replaced under the same offsets
    (a recreated topic, a broker that came back empty) is noticed on resume.

    >>> a, b = Record("t", 0, 5, b"k", b"v", (), 1.5), Record("t", 1, 9, b"k", b"v")
    >>> fingerprint(a) == fingerprint(b), fingerprint(a) == fingerprint(a._replace(offset=7))
    (False, True)
    """
    stamp = b"" if math.isnan(record.timestamp) else repr(record.timestamp).encode()
    return zlib.crc32(record.value or b"", zlib.crc32(record.key or b"", zlib.crc32(stamp)))


def next_offsets(records: Iterable[Record]) -> Offsets:
    """The offsets to commit after ``records``: one past the last of each partition."""
    out: Offsets = {}
    for r in records:
        key = (r.topic, r.partition)
        out[key] = r.offset + 1  # records of a partition come in offset order
    return out


@dataclass(frozen=True)
class Resume:
    """Where an assigned partition starts: ``offset``, and the ``fingerprint`` of the record
    just before it when known (checked on the first fetch, see :func:`fingerprint`)."""

    offset: int
    fingerprint: int | None = None


class Ownership(Protocol):
    """Told when partitions change hands (Kafka's rebalance callbacks). ``revoked`` runs
    before a partition is given up (finish and checkpoint it); ``assigned`` runs before the
    first record of newly assigned partitions is fetched and answers where to start
    reading each (partitions it leaves out start at the group's committed offsets, and
    those in ``paused`` are not read until ``source.resume``)."""

    async def revoked(self, partitions: list[TP]) -> None: ...

    async def assigned(self, partitions: list[TP]) -> tuple[dict[TP, Resume], set[TP]]: ...

    def fatal(self, reason: str, exit_code: int = 1) -> None: ...


class Source(Protocol):
    """A stream of records with explicit commits (commit only what has been processed)."""

    async def start(self, ownership: Ownership) -> None: ...

    async def fetch(self, timeout_ms: int, max_records: int) -> list[Record]: ...

    async def commit(self, offsets: Offsets) -> None: ...

    def seek(self, tp: TP, resume: Resume) -> None: ...

    def pause(self, tps: Sequence[TP]) -> None: ...

    def resume(self, tps: Sequence[TP]) -> None: ...

    def assignment(self) -> list[TP]: ...

    def lag(self) -> int | None: ...

    def lags(self) -> dict[TP, int]:
        """Records behind the end, per assigned partition (where known)."""
        ...

    async def probe(self) -> None:
        """Raise unless the broker answers now (the daemon's health check)."""

    async def stop(self) -> None: ...


class DeadLetters(Protocol):
    """Where rejected records go: ``send`` returns once every one is acknowledged, or
    raises (then none may be assumed sent: the caller retries all of them)."""

    async def start(self) -> None: ...

    async def send(self, items: Sequence[tuple[Record, Rejected]]) -> None: ...

    async def stop(self) -> None: ...


class NoDeadLetters:
    """No dead-letter topic configured: rejected records are counted and logged only."""

    async def start(self) -> None:
        return None

    async def send(self, items: Sequence[tuple[Record, Rejected]]) -> None:
        return None

    async def stop(self) -> None:
        return None


@dataclass
class MemoryDeadLetters:
    sent: list[tuple[Record, str, str]] = field(default_factory=list)
    fail: BaseException | None = None  # raised by send while set (tests)

    async def start(self) -> None:
        return None

    async def send(self, items: Sequence[tuple[Record, Rejected]]) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.extend((r, x.reason, x.detail) for r, x in items)

    async def stop(self) -> None:
        return None


class MemorySource:
    """Records from lists, one per partition of ``topic``, for the fast test tier: the
    group is this one instance, and :meth:`rebalance` scripts what a broker would do
    (revoke, then assign, calling the ownership hooks in Kafka's order). Commits, seeks
    and pauses behave as a consumer's."""

    def __init__(
        self,
        values: Sequence[bytes | None] | dict[int, list[bytes | None]] = (),
        topic: str = "memory",
        timestamps: dict[int, list[float]] | None = None,
        partitions: Sequence[int] | None = None,
    ) -> None:
        self.topic = topic
        self.initial = None if partitions is None else list(partitions)
        self.logs: dict[int, list[bytes | None]] = (
            {p: list(v) for p, v in values.items()}
            if isinstance(values, dict)
            else {0: list(values)}
        )
        self.timestamps = timestamps or {}
        self.committed: Offsets = {}
        self.positions: dict[int, int] = {}
        self.paused: set[int] = set()
        self.assigned_partitions: list[int] = []
        self.ownership: Ownership | None = None
        self.fail: BaseException | None = None  # raised by fetch while set (tests)
        self.fetches = 0

    def append(self, partition: int, values: Sequence[bytes | None]) -> None:
        self.logs.setdefault(partition, []).extend(values)

    async def start(self, ownership: Ownership) -> None:
        self.ownership = ownership
        await self.rebalance(sorted(self.logs) if self.initial is None else self.initial)

    async def rebalance(self, partitions: Sequence[int]) -> None:
        """Revoke what this instance holds, then assign ``partitions``."""
        assert self.ownership is not None
        if self.assigned_partitions:
            await self.ownership.revoked([(self.topic, p) for p in self.assigned_partitions])
        self.assigned_partitions = list(partitions)
        self.paused = set()
        starts, paused = await self.ownership.assigned([(self.topic, p) for p in partitions])
        for p in partitions:
            resume = starts.get((self.topic, p))
            self.positions[p] = (
                resume.offset if resume is not None else self.committed.get((self.topic, p), 0)
            )
        self.paused = {p for _, p in paused}

    async def fetch(self, timeout_ms: int, max_records: int) -> list[Record]:
        self.fetches += 1
        if self.fail is not None:
            raise self.fail
        out: list[Record] = []
        for p in self.assigned_partitions:
            if p in self.paused:
                continue
            log = self.logs.get(p, [])
            start = self.positions.get(p, 0)
            chunk = log[start : start + max_records - len(out)]
            stamps = self.timestamps.get(p, [])
            for i, v in enumerate(chunk):
                k = start + i
                out.append(
                    Record(
                        self.topic, p, k, None, v, (), stamps[k] if k < len(stamps) else math.nan
                    )
                )
            self.positions[p] = start + len(chunk)
        if not out:
            await asyncio.sleep(timeout_ms / 1000)  # like a consumer with nothing to fetch
        return out

    async def commit(self, offsets: Offsets) -> None:
        self.committed.update(offsets)

    def seek(self, tp: TP, resume: Resume) -> None:
        self.positions[tp[1]] = resume.offset

    def pause(self, tps: Sequence[TP]) -> None:
        self.paused |= {p for _, p in tps}

    def resume(self, tps: Sequence[TP]) -> None:
        self.paused -= {p for _, p in tps}

    def assignment(self) -> list[TP]:
        return [(self.topic, p) for p in self.assigned_partitions]

    def lags(self) -> dict[TP, int]:
        return {
            (self.topic, p): max(0, len(self.logs.get(p, [])) - self.positions.get(p, 0))
            for p in self.assigned_partitions
        }

    def lag(self) -> int | None:
        return sum(self.lags().values())

    async def probe(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def stop(self) -> None:
        return None
