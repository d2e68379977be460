"""Behaviour around any sink, written once: retries, rate limits, batches, deduplication.

Each wrapper is itself a sink holding the next one (``inner``); ``sinks.registry`` stacks
them as ``Outbox(Dedup(Retry(RateLimit(Batch(transport)))))``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from .base import AlertLike, DeliveryError, Sink, SinkStats

log = logging.getLogger("driftline.sinks")


class Wrapper:
    """Passes everything to ``inner``; subclasses change ``emit``."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.name = inner.name

    async def start(self) -> None:
        await self.inner.start()

    async def emit(self, alerts: Sequence[AlertLike]) -> None:
        await self.inner.emit(alerts)

    async def flush(self, timeout: float) -> bool:
        return await self.inner.flush(timeout)

    async def close(self, timeout: float = 5.0) -> None:
        await self.inner.close(timeout)

    def stats(self) -> SinkStats:
        return self.inner.stats()


class Retry(Wrapper):
    """Retries retryable failures ``retries`` times: exponential backoff from ``base_s``
    doubling to ``cap_s``, with full jitter in [50%, 100%], or the receiver's
    ``Retry-After`` when it gave one (capped at 300 s). Non-retryable failures and the
    last retryable one are raised to the caller (the outbox keeps the alerts)."""

    def __init__(
        self,
        inner: Sink,
        retries: int = 5,
        base_s: float = 0.5,
        cap_s: float = 30.0,
        sleep: Callable[[float], object] = asyncio.sleep,
    ) -> None:
        super().__init__(inner)
        self.retries, self.base_s, self.cap_s = retries, base_s, cap_s
        self._sleep = sleep

    async def emit(self, alerts: Sequence[AlertLike]) -> None:
        for attempt in range(self.retries + 1):
            try:
                await self.inner.emit(alerts)
                return
            except DeliveryError as exc:
                if not exc.retryable or attempt == self.retries:
                    raise
                delay = exc.retry_after
                if delay is None:
                    delay = min(self.cap_s, self.base_s * 2**attempt) * random.uniform(0.5, 1.0)
                delay = min(delay, 300.0)
                self.stats().retries += 1
                log.warning(
                    "sink %s: %s; retry %d/%d in %.1f s",
                    self.name,
                    exc,
                    attempt + 1,
                    self.retries,
                    delay,
                )
                await self._sleep(delay)  # type: ignore[misc]


class RateLimit(Wrapper):
    """At most ``per_s`` deliveries a second on average, bursts of ``burst`` (a token
    bucket); a delivery over the limit waits for its token."""

    def __init__(
        self,
        inner: Sink,
        per_s: float,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(inner)
        self.per_s, self.burst = per_s, max(1, burst)
        self._tokens = float(self.burst)
        self._clock = clock
        self._last = clock()

    def wait_s(self) -> float:
        """Seconds until a token is available (0 when one is), after refilling."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.per_s)
        self._last = now
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.per_s

    async def emit(self, alerts: Sequence[AlertLike]) -> None:
        while (wait := self.wait_s()) > 0:
            await asyncio.sleep(wait)
        self._tokens -= 1
        await self.inner.emit(alerts)


class Batch(Wrapper):
    """Delivers at most ``max_alerts`` alerts per call of the inner sink (one request per
    chunk), in order; a chunk that fails stops the rest (they are retried with it)."""

    def __init__(self, inner: Sink, max_alerts: int) -> None:
        super().__init__(inner)
        self.max_alerts = max(1, max_alerts)

    async def emit(self, alerts: Sequence[AlertLike]) -> None:
        for lo in range(0, len(alerts), self.max_alerts):
            await self.inner.emit(alerts[lo : lo + self.max_alerts])


def _key(alert: AlertLike) -> tuple[str, str, str]:
    # An episode that turns critical is sent again as firing: severity is part of the key.
    return (alert.id, alert.status, str(alert.to_dict().get("severity", "")))


class Dedup(Wrapper):
    """Drops an alert whose (id, status, severity) this sink delivered in the last ``window``
    deliveries: re-emissions after a restart or a partition handover reach a receiver
    once when they come within the same process. Only delivered ones are remembered."""

    def __init__(self, inner: Sink, window: int = 10_000) -> None:
        super().__init__(inner)
        self.window = window
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    async def emit(self, alerts: Sequence[AlertLike]) -> None:
        fresh = [a for a in alerts if _key(a) not in self._seen]
        self.stats().deduplicated += len(alerts) - len(fresh)
        if not fresh:
            return
        await self.inner.emit(fresh)
        for a in fresh:
            self._seen[_key(a)] = None
        while len(self._seen) > self.window:
            self._seen.popitem(last=False)


class Counted(Wrapper):
    """Innermost: counts each delivery attempt's outcome in the sink's stats (requests
    delivered, failures by reason)."""

    async def emit(self, alerts: Sequence[AlertLike]) -> None:
        try:
            await self.inner.emit(alerts)
        except DeliveryError as exc:
            self.stats().failures[exc.reason] += 1
            raise
        self.stats().requests += 1
