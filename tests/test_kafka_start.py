"""Where a restored partition starts, against a broker whose end offsets trail its log (as
Tansu's do under load): a start that reads as beyond the end is sought again, and only an
end that stays before it for ``END_GRACE_S`` counts as a truncated or recreated log."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition

from monitor.config.schema import KafkaConfig
from monitor.ingest import kafka
from monitor.ingest.kafka import END_GRACE_S, KafkaSource
from monitor.ingest.source import Resume

TP = TopicPartition("p", 0)


class TrailingBroker:
    """A consumer whose log holds ``records`` records but reports ``end`` as its end."""

    def __init__(self, end: int) -> None:
        self.end = end
        self.seeks: list[int] = []

    async def beginning_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return dict.fromkeys(tps, 0)

    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return dict.fromkeys(tps, self.end)

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append(offset)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(kafka.time, "monotonic", lambda: now[0])

    async def no_wait(_s: float) -> None:
        return None

    monkeypatch.setattr(kafka.asyncio, "sleep", no_wait)
    return now


def _source(broker: TrailingBroker, want: Resume) -> KafkaSource:
    source = KafkaSource(KafkaConfig(topic="p"))
    source.consumer = broker  # type: ignore[assignment]
    source.seek(("p", 0), want)
    broker.seeks.clear()
    return source


def test_an_end_that_trails_for_a_moment_is_not_a_truncated_log(clock: list[float]) -> None:
    broker = TrailingBroker(end=7985)  # the log holds 8,000 records, the broker says 7,985
    want = Resume(8000, fingerprint=123)
    source = _source(broker, want)
    for _ in range(5):  # checked every second while the end trails
        asyncio.run(source._moved(TP, want))
        clock[0] += 1.0
    assert source.resets["after_log_end"] == 0
    assert broker.seeks == [7999] * 5  # sought again to the record before the start
    broker.end = 8000  # the end catches up: nothing was ever reset
    asyncio.run(source._moved(TP, want))
    assert source.resets["after_log_end"] == 0 and broker.seeks[-1] == 7999


def test_an_end_that_stays_before_the_start_is_a_truncated_log(clock: list[float]) -> None:
    broker = TrailingBroker(end=2000)
    want = Resume(3000, fingerprint=123)
    source = _source(broker, want)
    asyncio.run(source._moved(TP, want))
    clock[0] += END_GRACE_S + 0.1
    asyncio.run(source._moved(TP, want))
    assert source.resets["after_log_end"] == 1
    assert broker.seeks == [2999, 0]  # then the policy: earliest
