"""Rejected records: logged, counted, and forwarded to the dead-letter topic before their
batch is committed.

A batch's rejects are sent together and acknowledged together (one round trip, however
many bad records). While the dead-letter topic cannot be written, the batch waits and the
send is retried with backoff (0.5 s doubling to 30 s): its offsets are not committed
before every reject is acknowledged, so none is lost; the failure shows in the logs, in
``driftline_dead_letter_failures_total`` and in ``/status``. During a stop it is tried
until the shutdown deadline, then given up (the batch is read again at the next start).

Every reject is also logged, at most one line per reason every 30 s (with the record's
topic/partition/offset and the reason's detail, never the payload), and the next line
says how many were held back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence

from monitor.backoff import Backoff, Sleep
from monitor.errors import describe
from monitor.ingest.decode import Rejected
from monitor.ingest.source import DeadLetters, Record
from monitor.logs import Throttle

log = logging.getLogger("driftline.deadletters")


class DeadLetterQueue:
    def __init__(
        self,
        sink: DeadLetters,
        *,
        enabled: bool,
        sleep: Sleep = asyncio.sleep,
        give_up: Callable[[], bool] = lambda: False,
        backoff: Backoff | None = None,
    ) -> None:
        self.sink = sink
        self.enabled = enabled
        self.sleep = sleep
        self.give_up = give_up
        self.backoff = backoff or Backoff(start=0.5, cap=30.0)
        self.sent: Counter[str] = Counter()  # dead-lettered, by reason
        self.failures = 0
        self.last_error: str | None = None
        self._throttle = Throttle(log, period_s=30.0)

    async def send(self, items: Sequence[tuple[Record, Rejected]]) -> None:
        """Log, count and forward a batch's rejects; returns once all are acknowledged."""
        if not items:
            return
        # One line per reason every 30 s (the batch's first record of it), never the payload.
        counts = Counter(rej.reason for _, rej in items)
        first: dict[str, tuple[Record, Rejected]] = {}
        for record, rej in items:
            first.setdefault(rej.reason, (record, rej))
        for record, rej in first.values():
            more = counts[rej.reason] - 1
            self._throttle.warning(
                f"rejected record ({rej.reason}) at %s/%d/%d%s: %s",
                record.topic,
                record.partition,
                record.offset,
                "" if rej.model is None else f" of model {rej.model}",
                rej.detail[:300],
                extra={
                    "reason": rej.reason,
                    "model": rej.model,
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                },
                also=more,
            )
        if not self.enabled:
            return
        while True:
            try:
                await self.sink.send(items)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.last_error = describe(exc)
                if self.give_up():
                    log.error(
                        "dead-lettering %d record(s) failed (%s) during shutdown: their batch "
                        "stays uncommitted and is read again at the next start",
                        len(items),
                        self.last_error,
                    )
                    raise
                delay = self.backoff.next()
                log.error(
                    "dead-lettering %d record(s) failed (%s); the batch waits, retrying in %.1f s",
                    len(items),
                    self.last_error,
                    delay,
                )
                await self.sleep(delay)
        self.backoff.reset()
        self.last_error = None
        for _, rej in items:
            self.sent[rej.reason] += 1
