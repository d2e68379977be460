"""Assembling a configured sink: its transport wrapped in the delivery behaviour every
sink shares, and plugins found through the entry-point group ``driftline.sinks``.

A plugin is a package that declares, in its ``pyproject.toml``::

    [project.entry-points."driftline.sinks"]
    pagerduty = "driftline_pagerduty:make_sink"

where ``make_sink(options: dict, *, name: str) -> Sink`` returns an object with the
protocol of ``sinks.base.Sink`` whose ``emit`` sends once or raises ``DeliveryError``.
``type: pagerduty`` in a configuration then selects it, its ``options`` mapping is passed
as is, and retries, rate limit, batching, deduplication and the outbox apply to it like to
the built-in sinks.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .base import Sink
from .outbox import Outbox
from .wrappers import Batch, Counted, Dedup, RateLimit, Retry

GROUP = "driftline.sinks"


def plugin(kind: str) -> Callable[..., Sink]:
    """The factory registered as ``kind`` in the entry-point group."""
    for ep in entry_points(group=GROUP):
        if ep.name == kind:
            factory: Callable[..., Sink] = ep.load()
            return factory
    raise LookupError(f"no sink plugin {kind!r} in the entry-point group {GROUP}")


def assemble(
    transport: Sink,
    *,
    retries: int = 5,
    backoff_s: float = 0.5,
    backoff_cap_s: float = 30.0,
    rate_limit_per_s: float | None = None,
    rate_limit_burst: int = 1,
    max_batch: int = 100,
    dedup: bool = True,
    outbox_dir: Path | None = None,
    outbox_max_alerts: int = 10_000,
    **_: Any,
) -> Outbox:
    """``Outbox(Dedup(Retry(RateLimit(Batch(Counted(transport))))))``: the caller's
    ``emit`` only queues (durably with ``outbox_dir``); delivery runs in the outbox's
    task."""
    sink: Sink = Batch(Counted(transport), max_batch)
    if rate_limit_per_s is not None:
        sink = RateLimit(sink, rate_limit_per_s, rate_limit_burst)
    sink = Retry(sink, retries, backoff_s, backoff_cap_s)
    if dedup:
        sink = Dedup(sink)
    return Outbox(sink, outbox_dir, max_alerts=outbox_max_alerts, max_batch=max_batch)
