"""Logging set-up for the daemon: one format, and no log storms from client libraries."""

from __future__ import annotations

import logging
import sys
import time


class RateLimit(logging.Filter):
    """Let each message template through at most once per ``period`` seconds, then say how
    many were held back. aiokafka logs every failed fetch and heartbeat (about ten a second
    while a broker is down); the daemon's own retry lines say what matters.

    >>> f = RateLimit(period=60.0, clock=iter([0.0, 1.0, 61.0]).__next__)
    >>> rec = logging.LogRecord("aiokafka", logging.ERROR, "", 0, "fetch failed: %s", ("x",), None)
    >>> [f.filter(rec), f.filter(rec), f.filter(rec)]
    [True, False, True]
    >>> rec.getMessage()
    'fetch failed: x (1 more like this in the last 61 s)'
    """

    def __init__(
        self, period: float = 30.0, clock: object = time.monotonic, prefix: str = "aiokafka"
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.period = period
        self.clock = clock
        self._last: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        key = (record.name, record.msg)
        now = self.clock()  # type: ignore[operator]
        last = self._last.get(key)
        if last is not None and now - last[0] < self.period:
            self._last[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.msg = (
                f"{record.msg} ({last[1]} more like this in the last {now - last[0]:.0f} s)"
            )
        self._last[key] = (now, 0)
        return True


def configure(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    limit = RateLimit()
    for name in (
        "aiokafka",
        "aiokafka.consumer.fetcher",
        "aiokafka.consumer.group_coordinator",
        "aiokafka.conn",
        "aiokafka.cluster",
    ):
        logging.getLogger(name).addFilter(limit)
