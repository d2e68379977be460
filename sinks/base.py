"""The one seam for alert outputs.

A sink's ``emit`` delivers a list of alerts, or raises :class:`DeliveryError` saying why
and whether trying again may help. Everything else is a wrapper around a sink (see
``sinks.wrappers`` and ``sinks.outbox``): retries, rate limits, batching, deduplication and
the durable outbox, so each transport (webhook, Alertmanager, Kafka, log, or a plugin's)
only knows how to send once.

A sink written by someone else registers under the entry-point group ``driftline.sinks``;
see ``sinks.registry``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class AlertLike(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def status(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class Sink(Protocol):
    """``start`` and ``close`` open and release connections; ``emit`` delivers or raises
    :class:`DeliveryError`. ``flush`` says, within ``timeout``, whether everything emitted
    so far is safe: delivered, or durably queued (the daemon flushes before a checkpoint).
    ``stats`` is read by /status and /metrics."""

    name: str

    async def start(self) -> None: ...

    async def emit(self, alerts: Sequence[AlertLike]) -> None: ...

    async def flush(self, timeout: float) -> bool: ...

    async def close(self, timeout: float = 5.0) -> None: ...

    def stats(self) -> SinkStats: ...


# Bounded set of failure reasons (a metric label).
REASONS = ("http_4xx", "http_5xx", "timeout", "connection", "kafka", "overflow", "other")


class DeliveryError(Exception):
    """A delivery that did not happen. ``reason`` is one of :data:`REASONS`;
    ``retryable`` says whether the same alerts may succeed later (5xx, 408, 429, timeouts,
    lost connections) or never will (another 4xx: a malformed or refused request);
    ``retry_after`` is the receiver's own hint in seconds, if it gave one. The message must
    not contain secrets (URLs are shown redacted)."""

    def __init__(
        self, reason: str, message: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason if reason in REASONS else "other"
        self.retryable = retryable
        self.retry_after = retry_after

    @property
    def retriable(self) -> bool:
        """``retryable`` under aiokafka's name, which driftline's error policy reads."""
        return self.retryable


@dataclass
class SinkStats:
    """What one configured sink has done, shared by its wrappers."""

    sent: int = 0  # alerts delivered
    requests: int = 0  # successful deliveries (requests, messages, lines)
    retries: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # by reason
    deduplicated: int = 0
    outbox_depth: int = 0
    outbox_dropped: int = 0
    outbox_write_failures: int = 0  # appends that failed: those alerts are in memory only

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "requests": self.requests,
            "retries": self.retries,
            "failures": dict(self.failures),
            "deduplicated": self.deduplicated,
            "outbox_depth": self.outbox_depth,
            "outbox_dropped": self.outbox_dropped,
            "outbox_write_failures": self.outbox_write_failures,
        }


def redact_url(url: str) -> str:
    """A URL fit for logs: scheme and host only (paths and queries often carry tokens).

    >>> redact_url("https://hooks.slack.com/services/T0/B0/XyZ?x=1")
    'https://hooks.slack.com/...'
    """
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]  # no user:password@ either
    tail = "/..." if "/" in rest.rstrip("/") or "?" in rest else ""
    return f"{scheme}://{host}{tail}"
