"""The durable outbox: alerts are on disk before the first delivery attempt, and leave it
only once delivered (or refused for good).

One append-only file per sink, ``<dir>/<sink>.outbox``, one line per record:
``A <alert as JSON>`` when an alert is accepted, ``D <id> <status> <severity>`` when it
is done. Each
append is flushed and fsynced before ``emit`` returns, so an alert handed to a sink survives
SIGKILL; on start the file is replayed (pending = accepted and not done, in order; a torn
last line from a crash mid-write is skipped) and delivery resumes. When done records make
up most of the file it is rewritten with the pending alerts only (temporary file, fsync,
rename).

Bounded: at most ``max_alerts`` pending per sink. Beyond that the oldest pending alert is
dropped, logged and counted (``driftline_outbox_dropped_total``, and a delivery failure
with reason ``overflow``): the newest state of an episode matters more than the oldest.

While the receiver fails, the outbox retries the oldest pending batch with growing pauses
(1 s doubling to 60 s), after the inner sink's own retries; a refusal that cannot succeed
later (a 4xx other than 408/429) drops that batch, logged and counted. Without a directory
the outbox keeps its queue in memory: the same behaviour, minus surviving a restart.

Faults: an append that fails (a full or broken disk) keeps the alerts in memory, counted
(``driftline_outbox_write_failures_total``) and logged; until the file can be rewritten,
``flush`` waits for delivery instead of answering at once (so a checkpoint is not taken
over alerts that would not survive a crash). The transport is started by the delivery
task (a Kafka sink whose broker is down at start only delays delivery). A delivery task
that dies is reported by :meth:`Outbox.check` and started again by :meth:`Outbox.restart`
(the daemon's supervisor does both).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .base import AlertLike, DeliveryError, Sink
from .wrappers import Wrapper

log = logging.getLogger("driftline.sinks.outbox")

Key = tuple[str, str, str]  # (alert id, status, severity): each state change is delivered


def _key(alert: dict[str, Any]) -> Key:
    return (str(alert["id"]), str(alert["status"]), str(alert.get("severity") or ""))


@dataclass(frozen=True)
class Stored:
    """An alert as the outbox keeps it (what a sink's ``emit`` receives from it)."""

    data: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    def to_dict(self) -> dict[str, Any]:
        return self.data


class OutboxFile:
    """The append-only file (see the module doc); ``path`` None keeps nothing on disk."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lines = 0  # records in the file
        self._fh: Any = None
        self._torn = False  # the file ends in a record cut short: start on a new line

    def replay(self) -> OrderedDict[Key, dict[str, Any]]:
        pending: OrderedDict[Key, dict[str, Any]] = OrderedDict()
        if self.path is None or not self.path.exists():
            return pending
        bad = 0
        with self.path.open("rb") as fh:
            for raw in fh:
                self._torn = not raw.endswith(b"\n")
                self.lines += 1
                try:
                    kind, body = raw.rstrip(b"\n").split(b" ", 1)
                    if kind == b"A":
                        alert = orjson.loads(body)
                        pending[_key(alert)] = alert
                    elif kind == b"D":
                        aid, status, severity = body.decode().split(" ")
                        pending.pop((aid, status, severity), None)
                    else:
                        raise ValueError(kind)
                except (ValueError, KeyError, orjson.JSONDecodeError):
                    bad += 1
        if bad:
            log.warning("outbox %s: skipped %d unreadable record(s)", self.path, bad)
        return pending

    def _open(self) -> Any:
        if self._fh is None and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("ab")
        return self._fh

    def _write(self, payload: bytes, n: int) -> None:
        fh = self._open()
        if fh is None:
            return
        if self._torn:
            payload, self._torn = b"\n" + payload, False
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
        self.lines += n

    def accepted(self, alerts: Sequence[dict[str, Any]]) -> None:
        self._write(b"".join(b"A " + orjson.dumps(a) + b"\n" for a in alerts), len(alerts))

    def done(self, keys: Sequence[Key]) -> None:
        self._write(b"".join(f"D {i} {s} {v}\n".encode() for i, s, v in keys), len(keys))

    def rewrite(self, pending: OrderedDict[Key, dict[str, Any]]) -> None:
        """Replace the file by the pending alerts alone."""
        if self.path is None:
            return
        self.close()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("wb") as fh:
            fh.write(b"".join(b"A " + orjson.dumps(a) + b"\n" for a in pending.values()))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)
        self.lines = len(pending)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class Outbox(Wrapper):
    """A sink in front of ``inner`` whose ``emit`` only queues, durably (see module doc);
    its own task delivers, oldest first, ``max_batch`` alerts per call of ``inner``."""

    def __init__(
        self,
        inner: Sink,
        directory: Path | None,
        *,
        max_alerts: int = 10_000,
        max_batch: int = 100,
        pause_s: float = 1.0,
        pause_cap_s: float = 60.0,
    ) -> None:
        super().__init__(inner)
        path = None if directory is None else Path(directory) / f"{_safe(inner.name)}.outbox"
        self.file = OutboxFile(path)
        self.max_alerts = max_alerts
        self.max_batch = max_batch
        self.pause_s, self.pause_cap_s = pause_s, pause_cap_s
        self.pending: OrderedDict[Key, dict[str, Any]] = OrderedDict()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._degraded = False  # an append failed: the file lacks some pending alerts

    @property
    def durable(self) -> bool:
        return self.file.path is not None

    async def start(self) -> None:
        try:
            self.pending = self.file.replay()
        except OSError as exc:
            log.error(
                "sink %s: cannot read the outbox %s (%s); starting empty",
                self.name,
                self.file.path,
                exc,
            )
        if self.pending:
            log.info(
                "sink %s: %d alert(s) from the outbox to deliver", self.name, len(self.pending)
            )
        self._sync_depth()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name=f"outbox-{self.name}")

    def check(self) -> str | None:
        """Why the delivery task is not running (None while it runs)."""
        task = self._task
        if task is None or self._closing or not task.done():
            return None
        exc = None if task.cancelled() else task.exception()
        return "delivery task stopped" if exc is None else f"delivery task died: {exc!r}"

    async def restart(self) -> None:
        """Start the delivery task again (its alerts are still pending)."""
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.create_task(self._run(), name=f"outbox-{self.name}")

    async def emit(self, alerts: Sequence[AlertLike]) -> None:
        if not alerts:
            return
        dicts = [a.to_dict() for a in alerts]
        for d in dicts:
            self.pending[_key(d)] = d
        self._append(dicts)
        over = len(self.pending) - self.max_alerts
        if over > 0:
            dropped = [self.pending.popitem(last=False)[0] for _ in range(over)]
            self._write(lambda: self.file.done(dropped))
            st = self.stats()
            st.outbox_dropped += over
            st.failures["overflow"] += over
            log.error(
                "sink %s: outbox full (%d alerts); dropped the %d oldest",
                self.name,
                self.max_alerts,
                over,
            )
        self._sync_depth()
        self._idle.clear()
        self._wake.set()

    def _append(self, dicts: list[dict[str, Any]]) -> None:
        if self._degraded:  # the file missed some appends: rewrite it whole first
            if self._write(lambda: self.file.rewrite(self.pending)):
                self._degraded = False
                log.info("sink %s: the outbox is on disk again", self.name)
            return
        if not self._write(lambda: self.file.accepted(dicts)):
            self._degraded = True

    def _write(self, op: Any) -> bool:
        """Run a file operation; a failure is counted and logged, the alerts stay in
        memory."""
        try:
            op()
            return True
        except OSError as exc:
            self.stats().outbox_write_failures += 1
            log.error(
                "sink %s: cannot write the outbox %s (%s); its alerts are kept in memory "
                "until the disk works again",
                self.name,
                self.file.path,
                exc,
            )
            return False

    def _sync_depth(self) -> None:
        self.stats().outbox_depth = len(self.pending)

    async def _run(self) -> None:
        pause = self.pause_s
        while True:  # the transport first (a broker or receiver may be away at start)
            try:
                await self.inner.start()
                break
            except Exception as exc:
                log.error("sink %s: cannot start (%s); retrying in %.0f s", self.name, exc, pause)
                self.stats().failures[getattr(exc, "reason", "other")] += 1
                await asyncio.sleep(pause)
                pause = min(self.pause_cap_s, pause * 2)
        pause = self.pause_s
        while True:
            if not self.pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            keys = list(self.pending)[: self.max_batch]
            batch = [Stored(self.pending[k]) for k in keys]
            try:
                await self.inner.emit(batch)
            except DeliveryError as exc:
                if exc.retryable:
                    log.error(
                        "sink %s: %d alert(s) not delivered (%s); they stay in the outbox, "
                        "next attempt in %.0f s",
                        self.name,
                        len(batch),
                        exc,
                        pause,
                    )
                    await asyncio.sleep(pause)
                    pause = min(self.pause_cap_s, pause * 2)
                    continue
                log.error(
                    "sink %s: %d alert(s) refused (%s); not retried, removed from the outbox",
                    self.name,
                    len(batch),
                    exc,
                )
            except Exception:
                log.exception("sink %s: delivery crashed; retrying in %.0f s", self.name, pause)
                self.stats().failures["other"] += 1
                await asyncio.sleep(pause)
                pause = min(self.pause_cap_s, pause * 2)
                continue
            else:
                self.stats().sent += len(batch)
            pause = self.pause_s
            for k in keys:
                self.pending.pop(k, None)
            done = not self._degraded and self._write(lambda keys=keys: self.file.done(keys))
            if done and self.file.lines > 1000 and self.file.lines > 4 * len(self.pending):
                self._write(lambda: self.file.rewrite(self.pending))
            self._sync_depth()

    async def flush(self, timeout: float) -> bool:
        """Durable: everything emitted is on disk already. In memory (or while the disk
        fails): wait for delivery."""
        if self.durable and not self._degraded:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(self._idle.wait()), timeout)
            return True
        except TimeoutError:
            return False

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until everything emitted so far is delivered (or refused)."""
        try:
            await asyncio.wait_for(asyncio.shield(self._idle.wait()), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is pending within ``timeout``; what is left stays in the outbox."""
        self._closing = True
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._idle.wait()), timeout)
            if self.pending:
                where = "in the outbox for the next start" if self.durable else "lost"
                log.error(
                    "sink %s: %d alert(s) undelivered at shutdown (%s)",
                    self.name,
                    len(self.pending),
                    where,
                )
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.file.close()
        await self.inner.close(timeout)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
