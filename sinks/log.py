"""Log sink: one JSON line per alert."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Literal, TextIO

import orjson

from .base import AlertLike, SinkStats
from .config import SinkCommon, SinkContext


class LogSink:
    """Writes each alert as one JSON object on its own line.

    >>> import io
    >>> class A:
    ...     id, status = "dl-1", "firing"
    ...     def to_dict(self): return {"id": self.id, "status": self.status}
    >>> out = io.StringIO()
    >>> import asyncio; asyncio.run(LogSink(out).emit([A()]))
    >>> out.getvalue()
    '{"event":"driftline_alert","id":"dl-1","status":"firing"}\\n'
    """

    def __init__(self, stream: TextIO | None = None, name: str = "log") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.name = name
        self._stats = SinkStats()

    async def start(self) -> None:
        return None

    async def emit(self, alerts: Sequence[AlertLike]) -> None:
        for alert in alerts:
            line = orjson.dumps({"event": "driftline_alert", **alert.to_dict()})
            self.stream.write(line.decode() + "\n")
        self.stream.flush()

    async def flush(self, timeout: float) -> bool:
        self.stream.flush()
        return True

    async def close(self, timeout: float = 5.0) -> None:
        self.stream.flush()

    def stats(self) -> SinkStats:
        return self._stats


class LogSinkConfig(SinkCommon):
    type: Literal["log"]
    stream: Literal["stdout", "stderr"] = "stderr"


def build(config: LogSinkConfig, ctx: SinkContext) -> LogSink:
    if config.stream == "stdout":
        return LogSink(ctx.stdout or sys.stdout, name=ctx.name)
    return LogSink(ctx.stderr or sys.stderr, name=ctx.name)
