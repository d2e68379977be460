"""The Kafka changelog store, against the real broker (which never compacts)."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest
from aiokafka import AIOKafkaProducer

from monitor.demo.broker import EmbeddedBroker
from monitor.errors import CheckpointError
from monitor.state.changelog import HEADER, ChangelogStore
from monitor.state.codec import decode_first, encode

pytestmark = pytest.mark.e2e  # a real broker (and real services)


def store(broker: EmbeddedBroker, topic: str, chunk: int = 1024) -> ChangelogStore:
    return ChangelogStore(
        f"{topic}.changelog", chunk_bytes=chunk, bootstrap_servers=broker.bootstrap
    )


def test_the_last_checkpoint_per_key_is_restored_by_a_fresh_reader(
    broker: EmbeddedBroker, topic: str
) -> None:
    async def go() -> None:
        writer = store(broker, topic)
        await writer.start()
        blobs = {}
        try:
            for round_ in range(3):  # keys interleaved, several versions of each
                for part in range(3):
                    name = f"g/{topic}/{part}"
                    blobs[name] = {"round": round_, "blob": os.urandom(3000 + part * 2500)}
                    await writer.put(name, encode(blobs[name]))  # several chunks each
        finally:
            await writer.stop()
        reader = store(broker, topic)  # another instance: knows nothing yet
        await reader.start()
        try:
            for name, expected in blobs.items():
                found = decode_first(await reader.get(name))
                assert found is not None and found[0] == expected
            assert await reader.get(f"g/{topic}/9") == []
        finally:
            await reader.stop()

    asyncio.run(go())


def test_a_reader_sees_checkpoints_written_after_it_started(
    broker: EmbeddedBroker, topic: str
) -> None:
    async def go() -> None:
        a, b = store(broker, topic), store(broker, topic)
        await a.start()
        await b.start()
        try:
            await a.put("k", encode({"v": 1}))
            found = decode_first(await b.get("k"))
            assert found is not None and found[0] == {"v": 1}
            await a.put("k", encode({"v": 2}))
            found = decode_first(await b.get("k"))
            assert found is not None and found[0] == {"v": 2}
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(go())


async def _raw(bootstrap: str, topic: str, key: bytes, value: bytes, header: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=[(HEADER, header.encode())])
    finally:
        await producer.stop()


def test_corrupt_and_incomplete_checkpoints_fall_back_to_the_previous(
    broker: EmbeddedBroker, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        s = store(broker, topic)
        await s.start()
        try:
            await s.put("k", encode({"v": "good"}))
            good = encode({"v": "newer"})
            # A newest checkpoint whose body was damaged: its checksum fails.
            bad = good[:-5] + bytes(b ^ 0xFF for b in good[-5:])
            await _raw(broker.bootstrap, s.topic, b"k", bad, "x-1:0:1")
            with caplog.at_level(logging.ERROR, logger="driftline.checkpoint"):
                found = decode_first(await s.get("k"))
            assert found is not None and found[0] == {"v": "good"}
            assert "checksum mismatch" in caplog.text and "previous" in caplog.text
            # A checkpoint cut short (chunk 1 of 2 never written) is never assembled.
            await s.put("k", encode({"v": "latest"}))
            await _raw(broker.bootstrap, s.topic, b"k", b"half", "y-1:0:2")
            found = decode_first(await s.get("k"))
            assert found is not None and found[0] == {"v": "latest"}
            # A checkpoint of another format version is refused, never misread.
            future = bytearray(encode({"v": "future"}))
            future[21:23] = (9).to_bytes(2, "big")
            await _raw(broker.bootstrap, s.topic, b"k", bytes(future), "z-1:0:1")
            with pytest.raises(CheckpointError, match="version 9 is not supported"):
                decode_first(await s.get("k"))
        finally:
            await s.stop()

    asyncio.run(go())
