"""The sink registry, and assembling a configured sink: its transport wrapped in the
delivery behaviour every sink shares.

Each kind of sink is a :class:`SinkKind`: its name (the ``type`` of a configuration), its
configuration model (a :class:`~sinks.config.SinkCommon` subclass, owned by the sink's
module) and how to build its transport. The built-in kinds are :data:`BUILTIN`; adding
one is its module and one line there.

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

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from . import alertmanager, kafka, log, webhook
from .base import Sink
from .config import SinkCommon, SinkContext
from .outbox import Outbox
from .wrappers import Batch, Counted, Dedup, RateLimit, Retry

GROUP = "driftline.sinks"


@dataclass(frozen=True)
class SinkKind:
    name: str
    config: type[SinkCommon]
    build: Callable[[Any, SinkContext], Sink]


BUILTIN = (
    SinkKind("webhook", webhook.WebhookConfig, webhook.build),
    SinkKind("alertmanager", alertmanager.AlertmanagerConfig, alertmanager.build),
    SinkKind("kafka", kafka.KafkaSinkConfig, kafka.build),
    SinkKind("log", log.LogSinkConfig, log.build),
)


@cache
def builtin() -> dict[str, SinkKind]:
    return {k.name: k for k in BUILTIN}


class PluginSinkConfig(SinkCommon):
    """A sink from another package, registered under the entry-point group
    ``driftline.sinks`` by the name given as ``type``; ``options`` go to its factory."""

    type: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _registered(cls, value: str) -> str:
        names = sorted(ep.name for ep in entry_points(group=GROUP))
        if value not in names:
            installed = ", ".join(names) or "none installed"
            raise ValueError(
                f"unknown sink type {value!r}: built-in types are "
                f"{', '.join(builtin())}; plugins (entry points 'driftline.sinks'): "
                f"{installed}"
            )
        return value


def named(specs: Sequence[SinkCommon]) -> list[tuple[str, SinkCommon]]:
    """Each sink configuration with its name: ``name``, or its type numbered from the
    second on (``webhook``, ``webhook-2``, ...).

    >>> from sinks.log import LogSinkConfig
    >>> [n for n, _ in named([LogSinkConfig(type="log"), LogSinkConfig(type="log")])]
    ['log', 'log-2']
    """
    used: Counter[str] = Counter()
    out = []
    for spec in specs:
        kind = str(getattr(spec, "type", "sink"))
        used[kind] += 1
        out.append((spec.name or (kind if used[kind] == 1 else f"{kind}-{used[kind]}"), spec))
    return out


def build_sink(config: SinkCommon, ctx: SinkContext) -> Outbox:
    """A configured sink: its transport (built-in or plugin) in the delivery wrappers."""
    kind = builtin().get(str(getattr(config, "type", "")))
    if kind is not None:
        transport = kind.build(config, ctx)
    else:
        assert isinstance(config, PluginSinkConfig)
        transport = plugin(config.type)(dict(config.options), name=ctx.name)
    return assemble(
        transport, outbox_dir=ctx.directory if config.outbox else None, **config.delivery()
    )


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
