"""Reloading the configuration of a running daemon (SIGHUP, ``POST /-/reload``).

The file is read and validated again; :func:`monitor.config.reload.changes` says what
differs. A change that needs a restart refuses the whole reload (the running configuration
stays, the refusal is logged, counted in ``driftline_config_last_reload_successful`` and
shown in ``/status``). Otherwise the worker thread takes the new plans as a batch would
(alerting, thresholds, a changed reference file: see ``commands.reconfigure``), then the
event loop swaps the sinks whose configuration changed (unchanged ones keep running, with
their outboxes), and applies ``logging.level`` and ``http.token``. One reload at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from monitor.config.plan import plan
from monitor.config.reload import changes
from monitor.config.schema import Config, load_config
from monitor.errors import ConfigError
from monitor.online import commands
from sinks.base import Sink
from sinks.registry import named


class Host(Protocol):
    """The daemon as a reload changes it."""

    config: Config
    pipeline: Any  # monitor.online.pipeline.Pipeline
    loop: Any  # monitor.app.loop.BatchLoop
    sinks: list[Sink]
    health: Any  # monitor.app.health.Health
    token: str | None  # what the HTTP gate wants

    async def close_sink(self, sink: Sink) -> None: ...


log = logging.getLogger("driftline.reload")


@dataclass(frozen=True)
class ReloadStatus:
    """The last reload: whether it succeeded, when the configuration was last loaded
    (start or a reload, Unix seconds), why the last one failed, what it changed."""

    successful: bool = True
    success_at: float = 0.0
    error: str | None = None
    changed: tuple[str, ...] = ()


class Reloader:
    """Reloads of one daemon's configuration (see the module doc)."""

    def __init__(
        self,
        daemon: Host,
        path: Path | None,
        make_sink: Callable[[Config, str, Any], Sink] | None,
        supervise: Callable[[Sink], Any],
    ) -> None:
        self.daemon = daemon
        self.path = path
        self.make_sink = make_sink
        self.supervise = supervise
        self.status = ReloadStatus(success_at=time.time())
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    def reload_soon(self) -> None:
        """Reload in a task of its own (a signal handler's way)."""
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> tuple[int, dict[str, Any]]:
        """Reload once; returns an HTTP status and a document saying what happened."""
        if self.path is None:
            return 400, {"error": "this daemon was started without a configuration file"}
        async with self._lock:
            try:
                new = load_config(self.path)
            except ConfigError as exc:
                return self._failed(400, str(exc), {"errors": exc.errors})
            old = self.daemon.config
            diff = changes(old, new)
            if diff.restart:
                return self._failed(
                    409,
                    "these changes need a restart: " + ", ".join(diff.restart),
                    {"restart": diff.restart},
                )
            try:
                await self.daemon.loop.command(
                    commands.reconfigure, self.daemon.pipeline, plan(new)
                )
            except ValueError as exc:  # an unusable reference file: nothing was changed
                return self._failed(400, str(exc), {})
            if "sinks" in diff.live:
                await self._swap_sinks(old, new)
            if "logging" in diff.live:
                logging.getLogger().setLevel(new.logging.level)
            self.daemon.config = new
            self.daemon.token = (
                None if new.http.token is None else new.http.token.get_secret_value()
            )
            self.status = ReloadStatus(True, time.time(), None, tuple(diff.live))
            log.info(
                "configuration reloaded from %s: %s",
                self.path,
                ", ".join(diff.live) or "no changes",
                extra={"changed": diff.live},
            )
            return 200, {"status": "reloaded", "changed": diff.live}

    def _failed(self, code: int, error: str, extra: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.status = ReloadStatus(False, self.status.success_at, error, ())
        log.error("configuration reload refused; the running configuration stays: %s", error)
        return code, {"status": "refused", "error": error, **extra}

    async def _swap_sinks(self, old: Config, new: Config) -> None:
        """Start the sinks whose configuration is new, swap them in, close the others."""
        d = self.daemon
        if self.make_sink is None:
            raise ValueError("this daemon's sinks were given to it: they cannot be reloaded")
        running = {s.name: s for s in d.sinks}
        before = {name: spec.model_dump(mode="json") for name, spec in named(old.sinks)}
        kept: list[Sink] = []
        started: list[Sink] = []
        for name, spec in named(new.sinks):
            sink = running.get(name)
            if sink is None or before.get(name) != spec.model_dump(mode="json"):
                sink = self.make_sink(new, name, spec)
                await sink.start()
                started.append(sink)
                log.info("sink %s started (reload)", name)
            kept.append(sink)
        gone = [s for s in d.sinks if all(s is not k for k in kept)]
        d.sinks[:] = kept
        d.loop.sinks[:] = kept
        watched = [c for c in d.health.components if getattr(c, "sink", None) not in gone]
        d.health.components = watched + [c for c in map(self.supervise, started) if c is not None]
        for sink in gone:
            await d.close_sink(sink)
            log.info("sink %s closed (reload)", sink.name)
