"""Kafka sink: each alert as one JSON record on an alerts topic, keyed by model (so one
model's alerts stay in order on one partition), acknowledged by all in-sync replicas. A
broker that cannot be reached (at start or later) is a retryable delivery failure: the
outbox keeps the alerts and tries again."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import Field

from .base import AlertLike, DeliveryError, SinkStats
from .config import SinkCommon, SinkContext


class KafkaSink:
    """``client`` holds aiokafka producer settings (bootstrap servers, TLS, SASL)."""

    def __init__(self, topic: str, *, name: str = "kafka", **client: Any) -> None:
        self.name = name
        self.topic = topic
        self.client = client
        self._producer: AIOKafkaProducer | None = None
        self._stats = SinkStats()

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(acks="all", **self.client)
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise DeliveryError(
                "kafka", f"kafka sink: {type(exc).__name__}", retryable=True
            ) from None
        self._producer = producer

    async def emit(self, alerts: Sequence[AlertLike]) -> None:
        if not alerts:
            return
        await self.start()
        assert self._producer is not None
        try:
            futures = [
                await self._producer.send(
                    self.topic,
                    orjson.dumps({"source": "driftline", "version": 1, "alert": a.to_dict()}),
                    key=str(a.to_dict()["model"]).encode(),
                )
                for a in alerts
            ]
            for f in futures:
                await f
        except KafkaError as exc:
            raise DeliveryError(
                "kafka", f"kafka sink {self.topic}: {type(exc).__name__}", retryable=True
            ) from None

    async def flush(self, timeout: float) -> bool:
        return True

    async def close(self, timeout: float = 5.0) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def stats(self) -> SinkStats:
        return self._stats


class KafkaSinkConfig(SinkCommon):
    type: Literal["kafka"]
    topic: str = Field(min_length=1)
    bootstrap_servers: str | None = Field(None, description="default: kafka.bootstrap_servers")


def build(config: KafkaSinkConfig, ctx: SinkContext) -> KafkaSink:
    options = dict(ctx.kafka)
    if config.bootstrap_servers is not None:
        options["bootstrap_servers"] = config.bootstrap_servers
    return KafkaSink(config.topic, name=ctx.name, **options)
