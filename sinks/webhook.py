"""Webhook sink: POSTs alerts as JSON, from its own task, with retries and backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Sequence

import aiohttp
import orjson

from .base import AlertLike

log = logging.getLogger("driftline.sinks.webhook")

NOT_RETRIED = frozenset(range(400, 500)) - {408, 429}


class WebhookSink:
    """POSTs ``{"source": "driftline", "version": 1, "alerts": [...]}``, one request per
    ``emit`` call (all alerts of a batch together).

    ``emit`` only queues: delivery runs in a background task, so a slow or failing receiver
    never blocks consumption. Failed requests are retried ``retries`` times with exponential
    backoff and jitter (0.5 s doubling, capped at 30 s), honouring ``Retry-After``; 5xx,
    408, 429, timeouts and connection errors are retried, other 4xx are not. When the queue
    (``queue_size`` requests) is full, the oldest request is dropped and counted.
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        retries: int = 5,
        headers: dict[str, str] | None = None,
        queue_size: int = 10_000,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retries = retries
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.queue: deque[tuple[bytes, int]] = deque()
        self.queue_size = queue_size
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self.counts = {"sent": 0, "alerts_sent": 0, "failed": 0, "dropped": 0, "retries": 0}

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self.timeout)
        self._task = asyncio.create_task(self._run(), name="webhook-sink")

    async def emit(self, alerts: Sequence[AlertLike]) -> None:
        if not alerts:
            return
        body = orjson.dumps(
            {"source": "driftline", "version": 1, "alerts": [a.to_dict() for a in alerts]},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        if len(self.queue) >= self.queue_size:
            self.queue.popleft()
            self.counts["dropped"] += 1
            log.error("webhook queue full (%d requests): dropped the oldest", self.queue_size)
        self.queue.append((body, len(alerts)))
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            if not self.queue:
                self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self.queue[0]
            await self._deliver(*item)
            if self.queue and self.queue[0] is item:
                self.queue.popleft()

    async def _deliver(self, body: bytes, n_alerts: int) -> None:
        assert self._session is not None
        for attempt in range(self.retries + 1):
            delay: float | None = None
            try:
                async with self._session.post(self.url, data=body, headers=self.headers) as resp:
                    if 200 <= resp.status < 300:
                        self.counts["sent"] += 1
                        self.counts["alerts_sent"] += n_alerts
                        return
                    text = (await resp.text())[:200]
                    if resp.status in NOT_RETRIED:
                        self.counts["failed"] += 1
                        log.error(
                            "webhook %s refused alerts (HTTP %d: %s); not retried",
                            self.url,
                            resp.status,
                            text,
                        )
                        return
                    delay = _retry_after(resp.headers.get("Retry-After"))
                    reason = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__
            if attempt == self.retries:
                break
            self.counts["retries"] += 1
            if delay is None:
                delay = min(self.backoff_cap, self.backoff_base * 2**attempt)
                delay *= random.uniform(0.5, 1.0)  # jitter
            log.warning(
                "webhook %s failed (%s); retry %d/%d in %.1f s",
                self.url,
                reason,
                attempt + 1,
                self.retries,
                delay,
            )
            await asyncio.sleep(delay)
        self.counts["failed"] += 1
        log.error(
            "webhook %s: giving up on %d alert(s) after %d attempts",
            self.url,
            n_alerts,
            self.retries + 1,
        )

    async def flush(self, timeout: float) -> bool:
        if self._task is None:
            return not self.queue
        try:
            await asyncio.wait_for(asyncio.shield(self._idle.wait()), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued within ``timeout`` seconds, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._idle.wait()), timeout)
            except TimeoutError:
                log.error(
                    "webhook %s: %d request(s) undelivered at shutdown", self.url, len(self.queue)
                )
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def stats(self) -> dict[str, int]:
        return {**self.counts, "queued": len(self.queue)}


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, min(300.0, float(value)))
    except ValueError:
        return None
