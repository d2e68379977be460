"""Logging set-up for the daemon: text for people or JSON for machines, and no log storms
from client libraries or hostile streams."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

# What every LogRecord has; anything else on a record came from ``extra=`` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, RFC 3339), ``level``, ``logger``,
    ``message``, every ``extra=`` field, and ``exception`` with the traceback if any.

    >>> rec = logging.LogRecord("driftline", logging.WARNING, "", 0, "bad %s", ("x",), None)
    >>> rec.created, rec.reason = 0.0, "bad_json"
    >>> print(JsonFormatter().format(rec).replace(',"message', ',\\n "message'))
    {"time":"1970-01-01T00:00:00.000Z","level":"WARNING","logger":"driftline",
     "message":"bad x","reason":"bad_json"}
    """

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        doc: dict[str, Any] = {
            "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


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


class Throttle:
    """A logger's lines, at most one per message template every ``period_s`` seconds; the
    next one that passes says how many were held back. For what a hostile stream can make
    happen thousands of times a second (rejected records, internal errors).

    >>> t = Throttle(logging.getLogger("doc"), period_s=10, clock=iter([0, 1, 2, 11]).__next__)
    >>> [t.warning("bad record %d", i) for i in range(4)]
    [True, False, False, True]
    """

    def __init__(
        self,
        logger: logging.Logger,
        period_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        max_templates: int = 1000,
    ) -> None:
        self.logger = logger
        self.period_s = period_s
        self.clock = clock
        self.max_templates = max_templates
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def log(
        self,
        level: int,
        msg: str,
        *args: object,
        exc_info: bool = False,
        extra: Mapping[str, object] | None = None,
        also: int = 0,
    ) -> bool:
        """Log unless a line of this template went out less than ``period_s`` ago; returns
        whether it was logged. ``extra`` fields go to the record (JSON logs show them);
        ``also`` more lines like it are counted as held back."""
        with self._lock:
            now = self.clock()
            last = self._last.get(msg)
            if last is not None and now - last[0] < self.period_s:
                self._last[msg] = (last[0], last[1] + 1 + also)
                return False
            if len(self._last) >= self.max_templates:
                self._last.clear()
            self._last[msg] = (now, also)
        if last is not None and last[1]:
            msg = f"{msg} ({last[1]} more like this in the last {now - last[0]:.0f} s)"
        self.logger.log(level, msg, *args, exc_info=exc_info, extra=extra)
        return True

    def warning(
        self, msg: str, *args: object, extra: Mapping[str, object] | None = None, also: int = 0
    ) -> bool:
        return self.log(logging.WARNING, msg, *args, extra=extra, also=also)

    def error(self, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, msg, *args)

    def exception(self, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, msg, *args, exc_info=True)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str, format: str = "text") -> None:
    """Log to stderr at ``level``, as ``text`` or ``json`` lines (replacing any handler)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    limit = RateLimit()
    for name in (
        "aiokafka",
        "aiokafka.consumer.fetcher",
        "aiokafka.consumer.group_coordinator",
        "aiokafka.conn",
        "aiokafka.cluster",
    ):
        logging.getLogger(name).addFilter(limit)
