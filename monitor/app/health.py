"""Health: a probe of the broker, and the supervision of background components.

Every ``interval_s`` (2 s by default) the broker is asked for its metadata: a lost broker
shows in ``/status``, in ``driftline_kafka_connected`` and in the logs within seconds (and
its return too). Each supervised component (a sink's delivery task, an online learner's
process) is asked whether it still works; one that stopped is restarted with backoff (1 s
doubling to 60 s), logged and counted (``driftline_component_restarts_total``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from monitor.backoff import Backoff
from monitor.errors import describe
from monitor.ingest.source import Source

log = logging.getLogger("driftline.daemon")


class Restartable(Protocol):
    """A background component the supervisor watches: ``check`` says why it stopped
    working (None while it works), ``restart`` starts it again."""

    name: str

    def check(self) -> str | None: ...

    def restart(self) -> Any: ...


class Health:
    """The broker's reachability and the components' health (see the module doc); one
    task runs :meth:`watch`, everything else reads the attributes."""

    def __init__(
        self, source: Source, components: Sequence[Restartable], interval_s: float = 2.0
    ) -> None:
        self.source = source
        self.components = list(components)
        self.interval_s = interval_s
        self.connected = False
        self.kafka_error: str | None = None
        self.disconnected_since: float | None = None
        self.restarts: Counter[str] = Counter()
        self.errors: dict[str, str] = {}
        self._backoffs: dict[str, Backoff] = {}
        self._next_try: dict[str, float] = {}

    def connecting_failed(self, exc: BaseException) -> None:
        self.kafka_error = describe(exc)
        self.connected = False

    def connected_now(self) -> None:
        self.connected = True
        self.kafka_error = None
        self.disconnected_since = None

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.probe()
                await self.supervise()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the watching stop
                log.exception("health check failed")

    async def probe(self) -> None:
        try:
            await self.source.probe()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = describe(exc)
            if self.connected:
                self.disconnected_since = time.monotonic()
                log.error("lost the connection to Kafka (%s); still serving, retrying", error)
            self.connected = False
            self.kafka_error = error
            self.errors["kafka"] = error
            return
        if not self.connected:
            since = self.disconnected_since
            lost = 0.0 if since is None else time.monotonic() - since
            log.info("connected to Kafka again (after %.1f s)", lost)
        self.connected_now()
        self.errors.pop("kafka", None)

    async def supervise(self) -> None:
        now = time.monotonic()
        for c in self.components:
            why = c.check()
            if why is None:
                self.errors.pop(c.name, None)
                self._backoffs.pop(c.name, None)
                continue
            self.errors[c.name] = why
            if now < self._next_try.get(c.name, 0.0):
                continue
            backoff = self._backoffs.setdefault(c.name, Backoff(1.0, 60.0))
            self._next_try[c.name] = now + backoff.next()
            self.restarts[c.name] += 1
            log.error("%s stopped working (%s): restarting it", c.name, why)
            try:
                result = c.restart()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("restarting %s failed", c.name)

    def disconnected_s(self) -> float | None:
        since = self.disconnected_since
        return None if since is None else time.monotonic() - since
