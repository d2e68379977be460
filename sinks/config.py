"""What every sink's configuration holds (the delivery settings of ``sinks.registry``'s
wrappers), and the context a sink is built in. Each sink module declares its own model,
a subclass of :class:`SinkCommon` with a ``type`` literal."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict, Field


class SinkCommon(BaseModel):
    """Delivery settings every sink takes, built-in or plugin (see sinks.registry)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    retries: int = Field(5, ge=0)
    backoff_s: float = Field(0.5, gt=0)
    backoff_cap_s: float = Field(30.0, gt=0)
    rate_limit_per_s: float | None = Field(None, gt=0)
    rate_limit_burst: int = Field(1, ge=1)
    max_batch: int = Field(100, ge=1)
    dedup: bool = True
    outbox: bool = True
    outbox_max_alerts: int = Field(10_000, ge=1)

    def delivery(self) -> dict[str, Any]:
        """The settings of the delivery wrappers (``sinks.registry.assemble``)."""
        return self.model_dump(include=set(SinkCommon.model_fields) - {"name", "outbox"})


@dataclass(frozen=True)
class SinkContext:
    """What a sink may need besides its own configuration: its name, the directory for
    files it keeps (None: memory only), the Kafka clients' settings and the streams."""

    name: str
    directory: Path | None = None
    kafka: dict[str, Any] = field(default_factory=dict)
    stdout: TextIO | None = None
    stderr: TextIO | None = None
