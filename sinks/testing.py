"""A protocol-true sink for tests and for embedding: it keeps what it is given.

>>> import asyncio
>>> sink = RecordingSink()
>>> class A:
...     id, status = "dl-1", "firing"
...     def to_dict(self): return {"id": self.id, "status": self.status}
>>> asyncio.run(sink.emit([A()])); [a.id for a in sink.alerts]
['dl-1']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import AlertLike, DeliveryError, SinkStats


class RecordingSink:
    """Keeps every alert emitted (``alerts``); ``fail`` makes ``emit`` raise it instead."""

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.alerts: list[Any] = []
        self.fail: DeliveryError | None = None
        self.started = False
        self._stats = SinkStats()

    async def start(self) -> None:
        self.started = True

    async def emit(self, alerts: Sequence[AlertLike]) -> None:
        if self.fail is not None:
            raise self.fail
        self.alerts.extend(alerts)
        self._stats.sent += len(alerts)
        self._stats.requests += 1

    async def flush(self, timeout: float) -> bool:
        return True

    async def close(self, timeout: float = 5.0) -> None:
        return None

    def stats(self) -> SinkStats:
        return self._stats
