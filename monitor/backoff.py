"""The one backoff and retry helper: every retried call of the daemon goes through here.

>>> b = Backoff(start=0.5, cap=4.0, jitter=0.0)
>>> [b.next() for _ in range(5)]
[0.5, 1.0, 2.0, 4.0, 4.0]
>>> b.reset(); b.next()
0.5
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from monitor.errors import FatalError, classify, describe

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[object]]

log = logging.getLogger("driftline.retry")


class Backoff:
    """Exponential delays from ``start`` doubling to ``cap``, each shortened by up to
    ``jitter`` (a fraction) so that many clients do not retry in step."""

    def __init__(
        self,
        start: float = 0.5,
        cap: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        self.start, self.cap, self.factor, self.jitter = start, cap, factor, jitter
        self.attempts = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt (and count one more failure)."""
        delay = min(self.cap, self.start * self.factor**self.attempts)
        self.attempts += 1
        if self.jitter:
            delay *= 1.0 - self.jitter * self._rng.random()
        return delay

    def reset(self) -> None:
        self.attempts = 0


async def retrying(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    backoff: Backoff | None = None,
    sleep: Sleep = asyncio.sleep,
    stopping: Callable[[], bool] = lambda: False,
    on_failure: Callable[[BaseException, float], None] | None = None,
) -> T:
    """``await op()`` until it succeeds. A transient failure (:func:`monitor.errors.classify`)
    is logged with ``what`` and retried after the next backoff delay; a fatal one raises
    :class:`~monitor.errors.FatalError`. ``on_failure(exc, delay)`` hears of each failure
    (for metrics and ``/status``). When ``stopping()`` turns true, the last failure is
    raised instead of waiting again."""
    backoff = backoff or Backoff()
    while True:
        try:
            return await op()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fault = classify(exc)
            if not fault.transient:
                raise FatalError(
                    f"{what}: {fault.advice or describe(exc)}", fault.exit_code
                ) from exc
            if stopping():
                raise
            delay = backoff.next()
            if on_failure is not None:
                on_failure(exc, delay)
            log.error("%s failed (%s); retrying in %.1f s", what, describe(exc), delay)
            await sleep(delay)
