"""Fault injection for the crash tests, injected into the batch loop (the CLI reads
``DRIFTLINE_CRASH_AT``; nothing else does).

``CrashPoints("emit:3")`` makes the process SIGKILL itself the 3rd time it passes
``emit``: ``detect`` (a batch handed to the worker, not finished), ``emit`` (alerts handed
to the sinks, offsets not yet committed) or ``checkpoint`` (a checkpoint durable, the next
commit not yet made). Unset, passing a point costs one comparison.

>>> CrashPoints(None).passing("emit")
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("driftline.hooks")

POINTS = ("detect", "emit", "checkpoint")


class CrashPoints:
    def __init__(self, spec: str | None) -> None:
        self.point: str | None = None
        self.left = 0
        if spec:
            point, _, n = spec.partition(":")
            if point not in POINTS:
                raise ValueError(f"unknown crash point {point!r}: one of {', '.join(POINTS)}")
            self.point, self.left = point, int(n or 1)

    def passing(self, point: str) -> None:
        if point == self.point:
            self.left -= 1
            if self.left <= 0:
                log.warning("DRIFTLINE_CRASH_AT=%s: killing this process", point)
                os.kill(os.getpid(), signal.SIGKILL)
