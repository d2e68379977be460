"""The one seam for alert outputs: a sink takes alerts and can be closed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class AlertLike(Protocol):
    id: str
    status: str

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class Sink(Protocol):
    """``emit`` hands alerts over and returns quickly: slow delivery happens in the sink's
    own task, never on the caller's. ``flush`` waits (at most ``timeout``) until everything
    emitted so far is delivered or given up, and says whether it was: the daemon flushes
    before a checkpoint, so that a crash after it cannot lose an alert emitted before it.
    ``close`` delivers what it can within ``timeout``."""

    name: str

    async def start(self) -> None: ...

    async def emit(self, alerts: Sequence[AlertLike]) -> None: ...

    async def flush(self, timeout: float) -> bool: ...

    async def close(self, timeout: float = 5.0) -> None: ...

    def stats(self) -> dict[str, int]: ...
