"""Kafka: the consumer (:class:`KafkaSource`, a consumer group with manual commits), the
dead-letter producer (:class:`KafkaDeadLetters`) and the clients' shared settings.

**Where a partition starts.** Every assigned partition is sought to a definite offset:
the one its checkpoint gives (or the group's committed offset, or ``auto_offset_reset``),
and checked before the first record is used:

* the record just before a checkpoint's offset must be the one the checkpoint saw (same
  key, value and timestamp); if it is not, the log was **replaced** (a topic recreated,
  a broker that came back empty): the partition starts over per ``auto_offset_reset``;
* a start before the log's beginning (retention deleted what was not read yet) begins at
  the earliest record; one beyond its end (the log was truncated) starts over per
  ``auto_offset_reset``;
* a partition whose offsets move backwards while consumed (the broker lost its log under
  a running consumer) is read on from where it now is.

Each of these is logged with the offsets and counted by reason
(``driftline_offset_resets_total``): a position is never wrong in silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError

from monitor.config.schema import KafkaConfig
from monitor.ingest.decode import Rejected
from monitor.ingest.source import TP, Offsets, Ownership, Record, Resume, fingerprint

log = logging.getLogger("driftline.kafka")

END_GRACE_S = 10.0  # how long a log must read as ending before a start to count as cut
RESET_REASONS = ("before_log_start", "after_log_end", "log_replaced", "moved_back")


def client_options(config: KafkaConfig) -> dict[str, Any]:
    """Connection settings every aiokafka client of the daemon takes: bootstrap servers,
    TLS and SASL (passwords unwrapped only here, never logged).

    >>> from monitor.config.schema import KafkaConfig
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


class KafkaSource:
    """An aiokafka consumer in ``group_id``, auto-commit off (the daemon commits what it has
    processed), partitions assigned by range so that partition p of the prediction topic
    and of the labels topic (co-partitioned: same count, same key) go to one instance."""

    def __init__(self, config: KafkaConfig, probe_timeout_s: float = 5.0) -> None:
        self.config = config
        self.probe_timeout_s = probe_timeout_s
        self.consumer: AIOKafkaConsumer | None = None
        self.resets: Counter[str] = Counter()  # offset resets by reason
        self._next: Offsets = {}  # the offset after the last record fetched
        # Partitions sought to a definite start, until a record from there arrives.
        self._expect: dict[TP, Resume] = {}
        self._checked: dict[TP, float] = {}  # when each start was last checked
        self._beyond_since: dict[TP, float] = {}  # when a start first read as past the end

    async def start(self, ownership: Ownership) -> None:
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
        self.consumer = consumer  # the listener may run before start() returns
        try:
            await consumer.start()
        except BaseException:
            self.consumer = None
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise

    async def fetch(self, timeout_ms: int, max_records: int) -> list[Record]:
        consumer = self.consumer
        assert consumer is not None
        await self._enforce_starts()
        batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        out: list[Record] = []
        for tp in sorted(batches, key=lambda t: (t.topic, t.partition)):
            msgs = batches[tp]
            if not msgs:
                continue
            key = (tp.topic, tp.partition)
            want = self._expect.get(key)
            if want is not None:
                first = want.offset - 1 if want.fingerprint is not None else want.offset
                if msgs[0].offset != first:
                    await self._moved(tp, want)  # fetched from elsewhere: check, re-seek
                    continue
                del self._expect[key]
                self._beyond_since.pop(key, None)
                log.debug("%s/%d: started at %d as sought", tp.topic, tp.partition, msgs[0].offset)
                if want.fingerprint is not None:
                    seen = _record(msgs[0])
                    if fingerprint(seen) != want.fingerprint:
                        await self._reset(tp, "log_replaced", want.offset)
                        continue
                    msgs = msgs[1:]  # already processed before the checkpoint
            elif key in self._next and msgs[0].offset < self._next[key]:
                self._count(
                    "moved_back",
                    "%s/%d: offsets moved back from %d to %d while consuming (the log was "
                    "truncated or recreated under this consumer); reading on from %d",
                    tp.topic,
                    tp.partition,
                    self._next[key],
                    msgs[0].offset,
                    msgs[0].offset,
                )
            out.extend(_record(m) for m in msgs)
            if msgs:
                self._next[key] = msgs[-1].offset + 1
        return out

    def _count(self, reason: str, msg: str, *args: object) -> None:
        self.resets[reason] += 1
        log.warning(msg, *args)

    async def _enforce_starts(self) -> None:
        """Until a partition has delivered a record from where it was sought: before every
        fetch, seek again if its position moved (a fetch issued before the seek can
        overtake it), and every second check that its start lies inside the log (a broker
        may answer a fetch beyond the log's end with nothing at all, for ever)."""
        consumer = self.consumer
        if not self._expect or consumer is None:
            return
        now = time.monotonic()
        for tp in consumer.assignment():
            key = (tp.topic, tp.partition)
            want = self._expect.get(key)
            if want is None:
                continue
            target = want.offset - 1 if want.fingerprint is not None else want.offset
            if await consumer.position(tp) != target:
                await self._moved(tp, want)
            elif now - self._checked.get(key, now) >= 1.0:
                self._checked[key] = now
                await self._moved(tp, want)
            else:
                self._checked.setdefault(key, now)

    async def _moved(self, tp: TopicPartition, want: Resume) -> None:
        """The position of a partition being started is not where it was sought to: an
        overtaking fetch (seek again) or a start outside the log (apply the policy)."""
        consumer = self.consumer
        assert consumer is not None
        target = want.offset - 1 if want.fingerprint is not None else want.offset
        begin, end = await self._bounds(tp)
        if target < begin:
            self._count(
                "before_log_start",
                "%s/%d: offset %d is before the log's start %d (retention removed %d records "
                "not read yet); starting at %d",
                tp.topic,
                tp.partition,
                want.offset,
                begin,
                begin - want.offset,
                begin,
            )
            self.seek((tp.topic, tp.partition), Resume(begin))
        elif _beyond(want, end):
            # A broker's end offset can trail its log for seconds (Tansu under load): seek
            # again until the end has read below the start for END_GRACE_S.
            since = self._beyond_since.setdefault((tp.topic, tp.partition), time.monotonic())
            if time.monotonic() - since >= END_GRACE_S:
                await self._reset(tp, "after_log_end", want.offset, end)
            else:
                consumer.seek(tp, target)
        else:
            log.debug(
                "%s/%d: re-seeking to %d (the log spans %d-%d)",
                tp.topic,
                tp.partition,
                target,
                begin,
                end,
            )
            consumer.seek(tp, target)

    async def _bounds(self, tp: TopicPartition) -> tuple[int, int]:
        """The partition's first and next offsets. A broker's end offset can trail what it
        has acknowledged: an end below the wanted start is asked again before it counts."""
        consumer = self.consumer
        assert consumer is not None
        begin = int((await consumer.beginning_offsets([tp]))[tp])
        end = int((await consumer.end_offsets([tp]))[tp])
        want = self._expect.get((tp.topic, tp.partition))
        for _ in range(3):
            if want is None or not _beyond(want, end):
                break
            await asyncio.sleep(0.2)
            end = int((await consumer.end_offsets([tp]))[tp])
        return begin, end

    async def _reset(
        self, tp: TopicPartition, reason: str, at: int, end: int | None = None
    ) -> None:
        """Start the partition over per ``auto_offset_reset`` (its log is not the one the
        saved position belongs to)."""
        consumer = self.consumer
        assert consumer is not None
        begin, last = await self._bounds(tp)
        to = begin if self.config.auto_offset_reset == "earliest" else last
        what = (
            "the record before it is not the one the checkpoint saw (the log was replaced)"
            if reason == "log_replaced"
            else f"the log ends at {end} (it was truncated or recreated)"
        )
        self._count(
            reason,
            "%s/%d: cannot resume at offset %d: %s; starting over at %d (auto_offset_reset: %s)",
            tp.topic,
            tp.partition,
            at,
            what,
            to,
            self.config.auto_offset_reset,
        )
        self.seek((tp.topic, tp.partition), Resume(to))

    def seek(self, tp: TP, resume: Resume) -> None:
        assert self.consumer is not None
        self._expect[tp] = resume
        self._checked.pop(tp, None)
        self._beyond_since.pop(tp, None)
        target = resume.offset - 1 if resume.fingerprint is not None else resume.offset
        self.consumer.seek(TopicPartition(*tp), target)

    def pause(self, tps: Sequence[TP]) -> None:
        if self.consumer is not None:
            self.consumer.pause(*[TopicPartition(*tp) for tp in tps])

    def resume(self, tps: Sequence[TP]) -> None:
        if self.consumer is not None:
            self.consumer.resume(*[TopicPartition(*tp) for tp in tps])

    async def commit(self, offsets: Offsets) -> None:
        assert self.consumer is not None
        await self.consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})

    def lags(self) -> dict[TP, int]:
        """Per assigned partition, the records between what was fetched and its high
        watermark (the broker's figure, which can trail; never negative), where known."""
        if self.consumer is None:
            return {}
        out = {}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            nxt = self._next.get((tp.topic, tp.partition))
            if high is not None and nxt is not None:
                out[(tp.topic, tp.partition)] = max(0, high - nxt)
        return out

    def lag(self) -> int | None:
        """The sum of :meth:`lags` (None while none is known)."""
        lags = self.lags()
        return sum(lags.values()) if lags else None

    def assignment(self) -> list[TP]:
        if self.consumer is None:
            return []
        return sorted((tp.topic, tp.partition) for tp in self.consumer.assignment())

    async def probe(self) -> None:
        """A metadata request to the cluster: raises when no broker answers in time."""
        if self.consumer is None:
            raise KafkaError("not connected")
        await asyncio.wait_for(self.consumer.topics(), self.probe_timeout_s)

    async def stop(self) -> None:
        """Close the consumer, best effort: with the broker gone, aiokafka can raise (even
        a stray CancelledError from its fetch task) while closing."""
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await _close(consumer)


def _beyond(want: Resume, end: int) -> bool:
    """Whether a start lies beyond a log ending at ``end``: with a fingerprint the record
    before the start must exist (it is checked); without, starting at the end is fine."""
    if want.fingerprint is not None:
        return want.offset - 1 >= end
    return want.offset > end


def _record(m: Any) -> Record:
    ts = m.timestamp
    return Record(
        m.topic,
        m.partition,
        m.offset,
        m.key,
        m.value,
        tuple(m.headers) if m.headers else (),
        ts / 1000.0 if ts is not None and ts >= 0 else math.nan,
    )


async def _close(client: Any) -> None:
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled: let it through
        log.warning("a Kafka client was interrupted while closing (broker gone?)")
    except Exception as exc:
        log.warning("error while closing a Kafka client: %s", exc)


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
    where it says (or the group's committed offsets), paused where it says."""

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
            starts = {
                (tp.topic, tp.partition): Resume(await start_offset(self.consumer, tp, self.reset))
                for tp in assigned
            }
            chosen, paused = await self.owner.assigned(parts)
        except Exception as exc:
            # Consuming on would skip these partitions silently: stop instead, and let
            # the supervisor restart the process.
            log.exception("cannot take over the assigned partitions")
            self.owner.fatal(f"cannot take over the assigned partitions: {exc}")
            return
        starts.update(chosen)
        for key in parts:
            self.source.seek(key, starts[key])
            if key in chosen:
                log.info(
                    "resuming %s/%d at offset %d from the checkpoint", *key, starts[key].offset
                )
        if paused:
            self.source.pause(sorted(paused))


class KafkaDeadLetters:
    """Rejected records to ``topic``, unchanged (same key and value, original headers
    kept) with ``driftline-reason``, ``driftline-detail`` and ``driftline-source`` headers.
    A batch is sent at once and awaited together (one round trip for many records)."""

    def __init__(self, config: KafkaConfig, topic: str) -> None:
        self.config = config
        self.topic = topic
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self.producer is not None:
            return
        c = self.config
        producer = AIOKafkaProducer(
            **client_options(c),
            client_id=f"{c.client_id}-dlq",
            acks="all",
            linger_ms=5,
            max_request_size=max(1_048_576, c.max_record_bytes * 2),
        )
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self.producer = producer

    async def send(self, items: Sequence[tuple[Record, Rejected]]) -> None:
        """Build the records into batches (one per dead-letter partition, the source's
        partition modulo their count), send them all, then await every acknowledgement."""
        if not items:
            return
        await self.start()
        producer = self.producer
        assert producer is not None
        partitions = sorted(await producer.partitions_for(self.topic))
        batches: dict[int, Any] = {}
        futures = []
        for record, rej in items:
            headers = [
                *record.headers,
                ("driftline-reason", rej.reason.encode()),
                ("driftline-detail", rej.detail[:500].encode()),
                ("driftline-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
            ]
            p = partitions[record.partition % len(partitions)]
            batch = batches.get(p)
            if batch is None:
                batch = batches[p] = producer.create_batch()
            if (
                batch.append(key=record.key, value=record.value, timestamp=None, headers=headers)
                is None
            ):
                futures.append(await producer.send_batch(batch, self.topic, partition=p))
                batch = batches[p] = producer.create_batch()
                batch.append(key=record.key, value=record.value, timestamp=None, headers=headers)
        for p, batch in batches.items():
            if batch.record_count():
                futures.append(await producer.send_batch(batch, self.topic, partition=p))
        await asyncio.gather(*futures)

    async def stop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            await _close(producer)
