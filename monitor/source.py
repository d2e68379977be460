"""Where records come from: a small protocol, an in-memory source for unit tests, and the
real Kafka consumer (aiokafka, consumer group, manual commits)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from .config import KafkaConfig

log = logging.getLogger("driftline.source")

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> next offset to read


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


class Ownership(Protocol):
    """Told when partitions change hands (Kafka's rebalance callbacks). ``revoked`` runs
    before a partition is given up (finish and checkpoint it); ``assigned`` runs before the
    first record of newly assigned partitions is fetched and answers where to start
    reading them (a checkpoint's offsets), the group's committed offsets otherwise."""

    async def revoked(self, partitions: list[tuple[str, int]]) -> None: ...

    async def assigned(self, partitions: list[tuple[str, int]]) -> Offsets: ...

    def fatal(self, reason: str) -> None: ...


class Source(Protocol):
    """A stream of records with explicit commits (commit only what has been processed)."""

    async def start(self, ownership: Ownership) -> None: ...

    async def fetch(self, timeout_ms: int, max_records: int) -> list[Record]: ...

    async def commit(self, offsets: Offsets) -> None: ...

    async def dead_letter(self, record: Record, reason: str, detail: str) -> None: ...

    def lag(self) -> int | None: ...

    def assignment(self) -> list[tuple[str, int]]: ...

    async def stop(self) -> None: ...


def next_offsets(records: Iterable[Record]) -> Offsets:
    """The offsets to commit after ``records``: one past the last of each partition."""
    out: Offsets = {}
    for r in records:
        key = (r.topic, r.partition)
        if r.offset + 1 > out.get(key, -1):
            out[key] = r.offset + 1
    return out


@dataclass
class MemorySource:
    """Records from a list, for unit tests; remembers commits and dead letters."""

    values: list[bytes | None]
    topic: str = "memory"
    position: int = 0
    committed: Offsets = field(default_factory=dict)
    dead: list[tuple[Record, str, str]] = field(default_factory=list)

    async def start(self, ownership: Ownership) -> None:
        resume = await ownership.assigned([(self.topic, 0)])
        self.position = resume.get((self.topic, 0), self.position)

    async def fetch(self, timeout_ms: int, max_records: int) -> list[Record]:
        if self.position >= len(self.values):
            await asyncio.sleep(timeout_ms / 1000)  # like a consumer with nothing to fetch
            return []
        chunk = self.values[self.position : self.position + max_records]
        out = [Record(self.topic, 0, self.position + i, None, v) for i, v in enumerate(chunk)]
        self.position += len(chunk)
        return out

    async def commit(self, offsets: Offsets) -> None:
        self.committed.update(offsets)

    async def dead_letter(self, record: Record, reason: str, detail: str) -> None:
        self.dead.append((record, reason, detail))

    def lag(self) -> int | None:
        return len(self.values) - self.position

    def assignment(self) -> list[tuple[str, int]]:
        return [(self.topic, 0)]

    async def stop(self) -> None:
        return None


class KafkaSource:
    """An aiokafka consumer in ``group_id``; auto-commit is off: the daemon commits the
    offsets of a batch only after the batch is fully processed. Dead letters go to
    ``dead_letter_topic`` unchanged (same key and value, original headers kept) with the
    reason in the ``driftline-reason`` header."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._next: Offsets = {}
        # Resume offsets not yet confirmed by a record fetched from them.
        self._expect: Offsets = {}

    async def start(self, ownership: Ownership) -> None:
        """Join the group; ``ownership`` hears of every revocation and assignment, and
        assigned partitions start where it says instead of at the group's committed
        offsets. Partitions are assigned by range, so that partition p of the prediction
        topic and of the labels topic (co-partitioned: same count, same key) go to the same
        instance."""
        c = self.config
        topics = [c.topic] + ([c.labels_topic] if c.labels_topic else [])
        consumer = AIOKafkaConsumer(
            **client_options(c),
            group_id=c.group_id,
            client_id=c.client_id,
            enable_auto_commit=False,
            auto_offset_reset=c.auto_offset_reset,
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.heartbeat_interval_ms,
            max_partition_fetch_bytes=max(1_048_576, c.max_record_bytes * 2),
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        self._expect = {}
        consumer.subscribe(topics, listener=_Listener(self, consumer, ownership))
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        self.consumer = consumer
        if c.dead_letter_topic:
            producer = AIOKafkaProducer(
                **client_options(c),
                client_id=f"{c.client_id}-dlq",
                acks="all",
                max_request_size=max(1_048_576, c.max_record_bytes * 2),
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                await consumer.stop()
                self.consumer = None
                raise
            self.producer = producer

    async def fetch(self, timeout_ms: int, max_records: int) -> list[Record]:
        assert self.consumer is not None
        await self._enforce_resume()
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        out: list[Record] = []
        for tp in sorted(batches, key=lambda t: t.partition):
            want = self._expect.get((tp.topic, tp.partition))
            if want is not None and batches[tp]:
                if batches[tp][0].offset != want:
                    # Fetched from elsewhere (a fetch issued before the seek): drop, re-seek.
                    self.consumer.seek(tp, want)
                    continue
                del self._expect[(tp.topic, tp.partition)]
            for m in batches[tp]:
                out.append(
                    Record(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers or ()))
                )
            if batches[tp]:
                self._next[(tp.topic, tp.partition)] = batches[tp][-1].offset + 1
        return out

    async def _enforce_resume(self) -> None:
        """A seek made while a fetch is in flight can be overtaken by that fetch: until a
        partition has delivered a record from its checkpoint offset, check its position
        before every fetch and seek again if it moved elsewhere."""
        if not self._expect or self.consumer is None:
            return
        for tp in self.consumer.assignment():
            want = self._expect.get((tp.topic, tp.partition))
            if want is None:
                continue
            position = await self.consumer.position(tp)
            if position != want:
                log.info(
                    "re-seeking %s/%d from %d to the checkpoint offset %d",
                    tp.topic,
                    tp.partition,
                    position,
                    want,
                )
                self.consumer.seek(tp, want)

    async def commit(self, offsets: Offsets) -> None:
        assert self.consumer is not None
        await self.consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})

    async def dead_letter(self, record: Record, reason: str, detail: str) -> None:
        if self.producer is None or not self.config.dead_letter_topic:
            return
        headers = [
            *record.headers,
            ("driftline-reason", reason.encode()),
            ("driftline-detail", detail[:500].encode()),
            ("driftline-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        await self.producer.send_and_wait(
            self.config.dead_letter_topic, value=record.value, key=record.key, headers=headers
        )

    def lag(self) -> int | None:
        """Records between what was fetched and the partitions' high watermarks (the
        broker's figure, which can trail; never negative)."""
        if self.consumer is None:
            return None
        total, known = 0, False
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            nxt = self._next.get((tp.topic, tp.partition))
            if high is not None and nxt is not None:
                total += max(0, high - nxt)
                known = True
        return total if known else None

    def assignment(self) -> list[tuple[str, int]]:
        if self.consumer is None:
            return []
        return sorted((tp.topic, tp.partition) for tp in self.consumer.assignment())

    async def stop(self) -> None:
        """Close both clients, best effort: with the broker gone, aiokafka's consumer can
        raise (even a stray CancelledError from its fetch task) while closing."""
        for client in (self.producer, self.consumer):
            if client is None:
                continue
            try:
                await client.stop()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are being cancelled: let it through
                log.warning("a Kafka client was interrupted while closing (broker gone?)")
            except Exception as exc:
                log.warning("error while closing a Kafka client: %s", exc)
        self.producer = None
        self.consumer = None


async def start_offset(consumer: AIOKafkaConsumer, tp: TopicPartition, reset: str) -> int:
    """Where a partition without a checkpoint starts: the group's committed offset, else
    the beginning or the end (``auto_offset_reset``)."""
    committed = await consumer.committed(tp)
    if committed is not None:
        return int(committed)
    if reset == "earliest":
        return int((await consumer.beginning_offsets([tp]))[tp])
    return int((await consumer.end_offsets([tp]))[tp])


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Kafka's rebalance callbacks, handed to the daemon; assigned partitions are sought to
    the offsets it answers, and checked until a record from there arrives."""

    def __init__(self, source: KafkaSource, consumer: AIOKafkaConsumer, owner: Ownership) -> None:
        self.source = source
        self.consumer = consumer
        self.owner = owner
        self.reset = source.config.auto_offset_reset

    async def on_partitions_revoked(self, revoked: Any) -> None:
        parts = sorted((tp.topic, tp.partition) for tp in revoked)
        for key in parts:
            self.source._expect.pop(key, None)
        if parts:
            try:
                await self.owner.revoked(parts)
            except Exception as exc:
                log.exception("cannot hand the revoked partitions over")
                self.owner.fatal(f"cannot hand the revoked partitions over: {exc}")

    async def on_partitions_assigned(self, assigned: Any) -> None:
        parts = sorted((tp.topic, tp.partition) for tp in assigned)
        log.info("assigned %s", ", ".join(f"{t}/{p}" for t, p in parts) or "no partitions")
        # Every assigned partition is sought to a definite offset (a checkpoint's, or the
        # group's committed one, or the reset policy's): records fetched before that
        # point can then be dropped by the daemon without losing any.
        try:
            start = {
                (tp.topic, tp.partition): await start_offset(self.consumer, tp, self.reset)
                for tp in assigned
            }
            checkpointed = await self.owner.assigned(parts)
        except Exception as exc:
            # Consuming on would skip these partitions silently: stop instead, and let
            # the supervisor restart the process.
            log.exception("cannot take over the assigned partitions")
            self.owner.fatal(f"cannot take over the assigned partitions: {exc}")
            return
        start.update(checkpointed)
        for tp in assigned:
            key = (tp.topic, tp.partition)
            self.consumer.seek(tp, start[key])
            self.source._expect[key] = start[key]
            if key in checkpointed:
                log.info(
                    "resuming %s/%d at offset %d from the checkpoint",
                    tp.topic,
                    tp.partition,
                    start[key],
                )


def client_options(config: KafkaConfig) -> dict[str, Any]:
    """Connection settings every aiokafka client of the daemon takes: bootstrap servers,
    TLS and SASL (passwords unwrapped only here, never logged).

    >>> from monitor.config import KafkaConfig
    >>> client_options(KafkaConfig(topic="t", bootstrap_servers="k:9092"))
    {'bootstrap_servers': 'k:9092', 'security_protocol': 'PLAINTEXT'}
    """
    out: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap_servers,
        "security_protocol": config.security_protocol,
    }
    if config.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        out["ssl_context"] = create_ssl_context(
            cafile=None if config.ssl_cafile is None else str(config.ssl_cafile),
            certfile=None if config.ssl_certfile is None else str(config.ssl_certfile),
            keyfile=None if config.ssl_keyfile is None else str(config.ssl_keyfile),
            password=None
            if config.ssl_password is None
            else config.ssl_password.get_secret_value(),
        )
    if config.sasl_mechanism is not None:
        out["sasl_mechanism"] = config.sasl_mechanism
        out["sasl_plain_username"] = config.sasl_plain_username
        if config.sasl_plain_password is not None:
            out["sasl_plain_password"] = config.sasl_plain_password.get_secret_value()
    return out
