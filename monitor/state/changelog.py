"""Checkpoints in a Kafka changelog topic, so that any instance of a group can restore any
partition (the way Kafka Streams keeps its state stores).

A checkpoint is written as one or more records with the same key (``group/topic/partition``
of the partition it belongs to), each carrying at most ``chunk_bytes`` of the encoded
checkpoint and a ``driftline-chunk`` header ``<checkpoint id>:<index>:<count>``. Records of
one key land in one changelog partition, in order, so a reader reassembles a checkpoint
when its last chunk arrives.

Restoring reads the topic from where this store last stopped to its end and keeps, per
key, the newest complete checkpoint and the one before it (the fallback when the newest
fails its checksum). Compaction (``cleanup.policy=compact``, set when the store creates the
topic) only saves the broker disk space; correctness never depends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger("driftline.changelog")

HEADER = "driftline-chunk"


@dataclass(frozen=True)
class _Span:
    """Where one complete checkpoint lies: its chunks' offsets in one changelog partition."""

    partition: int
    first: int
    last: int
    ckpt: str


@dataclass
class _Key:
    """What the reader knows of one key: where its last two complete checkpoints are
    (newest last) and the one whose chunks are still arriving. Only positions are kept in
    memory, never the checkpoints of partitions this instance does not own."""

    complete: list[_Span] = field(default_factory=list)
    ckpt: str | None = None
    first: int = 0
    next_index: int = 0

    def add(self, header: str, partition: int, offset: int) -> None:
        ckpt, index, count = header.rsplit(":", 2)
        i, n = int(index), int(count)
        if i == 0:
            self.ckpt, self.first, self.next_index = ckpt, offset, 0
        elif ckpt != self.ckpt or i != self.next_index:
            self.ckpt = None  # a gap: that checkpoint is incomplete
            return
        self.next_index = i + 1
        if self.next_index == n:
            span = _Span(partition, self.first, offset, ckpt)
            self.complete = [*self.complete[-1:], span]
            self.ckpt = None


class ChangelogStore:
    """The Store protocol on a Kafka topic (see the module doc)."""

    def __init__(self, topic: str, *, chunk_bytes: int = 512 * 1024, **kafka: Any) -> None:
        """``kafka``: the clients' settings (``bootstrap_servers``, TLS, SASL), as
        ``source.client_options`` makes them."""
        self.bootstrap_servers = kafka.pop("bootstrap_servers", "localhost:9092")
        self.topic = topic
        self.chunk_bytes = chunk_bytes
        self.kafka = kafka  # security settings etc., passed to every client
        self._keys: dict[str, _Key] = {}
        self._lock = asyncio.Lock()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._writer = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._written = 0

    async def start(self) -> None:
        await self._ensure_topic()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            acks="all",
            max_request_size=self.chunk_bytes + 64 * 1024,
            **self.kafka,
        )
        await producer.start()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=max(1_048_576, self.chunk_bytes * 2),
            **self.kafka,
        )
        try:
            await consumer.start()
            parts = consumer.partitions_for_topic(self.topic) or set()
            if not parts:  # just created: ask the broker again (public API only)
                await consumer.topics()
                parts = consumer.partitions_for_topic(self.topic) or {0}
            self._partitions = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(self._partitions)
            await consumer.seek_to_beginning(*self._partitions)
        except BaseException:
            await producer.stop()
            await consumer.stop()
            raise
        self._producer, self._consumer = producer, consumer

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, **self.kafka)
        await admin.start()
        try:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            self.topic,
                            num_partitions=1,
                            replication_factor=1,
                            topic_configs={"cleanup.policy": "compact"},
                        )
                    ]
                )
                log.info("created the changelog topic %s", self.topic)
        finally:
            await admin.close()

    async def put(self, name: str, data: bytes) -> None:
        """Write one checkpoint; returns when the broker has acknowledged every chunk."""
        assert self._producer is not None, "start() the store first"
        self._written += 1
        ckpt = f"{self._writer}-{self._written}"
        size = self.chunk_bytes
        count = max(1, -(-len(data) // size))
        key = name.encode()
        for i in range(count):
            await self._producer.send_and_wait(
                self.topic,
                value=data[i * size : (i + 1) * size],
                key=key,
                headers=[(HEADER, f"{ckpt}:{i}:{count}".encode())],
            )

    async def catch_up(self, quiet_ms: int = 300) -> None:
        """Read the changelog to its end: past the end offsets, then until a fetch of
        ``quiet_ms`` brings nothing more (a broker's end offsets can trail what it has
        acknowledged)."""
        consumer = self._consumer
        assert consumer is not None, "start() the store first"
        end = await consumer.end_offsets(self._partitions)
        while True:
            batches = await consumer.getmany(*self._partitions, timeout_ms=quiet_ms)
            for tp, records in batches.items():
                for r in records:
                    header = dict(r.headers or ()).get(HEADER)
                    if r.key is not None and header is not None:
                        key = self._keys.setdefault(r.key.decode(), _Key())
                        key.add(header.decode(), tp.partition, r.offset)
            if batches:
                continue
            positions = [await consumer.position(tp) for tp in self._partitions]
            if all(pos >= end[tp] for pos, tp in zip(positions, self._partitions, strict=True)):
                return

    async def _read(self, name: str, span: _Span) -> bytes:
        """The chunks of one checkpoint, read again from the changelog."""
        consumer = self._consumer
        assert consumer is not None
        tp = TopicPartition(self.topic, span.partition)
        resume = await consumer.position(tp)
        consumer.seek(tp, span.first)
        chunks: list[bytes] = []
        try:
            done = False
            while not done:
                batches = await consumer.getmany(tp, timeout_ms=1000)
                if not batches:
                    raise OSError(f"changelog {self.topic} ended before offset {span.last}")
                for r in batches.get(tp, []):
                    if r.offset > span.last:
                        done = True
                        break
                    header = dict(r.headers or ()).get(HEADER, b"").decode()
                    if r.key == name.encode() and header.startswith(span.ckpt + ":"):
                        chunks.append(r.value or b"")
                    done = r.offset >= span.last
        finally:
            consumer.seek(tp, resume)
        return b"".join(chunks)

    async def get(self, name: str, *, refresh: bool = True) -> list[tuple[str, bytes]]:
        """The newest two complete checkpoints of ``name``, newest first, after reading the
        changelog to its end (``refresh``; the daemon reads once per assignment: every
        checkpoint of the partitions being assigned was written before the assignment
        began)."""
        async with self._lock:
            if refresh:
                await self.catch_up()
            key = self._keys.get(name)
            if key is None:
                return []
            out = []
            for span, age in zip(reversed(key.complete), ("newest", "previous"), strict=False):
                where = f"{self.topic}[{name}] ({age}, offsets {span.first}-{span.last})"
                out.append((where, await self._read(name, span)))
            return out

    def describe(self) -> str:
        return f"changelog topic {self.topic}"

    async def stop(self) -> None:
        for client in (self._producer, self._consumer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self._producer = self._consumer = None
