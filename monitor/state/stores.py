"""Where checkpoints live: a small protocol, bytes in and bytes out (the codec in
``monitor.state.codec`` makes and checks the bytes), a local directory and an in-memory store.
The Kafka changelog store is ``monitor.state.changelog``.

A store keeps, per name (one per partition), the newest checkpoints; ``get`` answers them
newest first, so that a corrupt newest one can fall back to the one before.

>>> import asyncio
>>> store = MemoryStore()
>>> asyncio.run(store.put("g.t.0", b"one")); asyncio.run(store.put("g.t.0", b"two"))
>>> [data for _, data in asyncio.run(store.get("g.t.0"))]
[b'two', b'one']
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Protocol, TypeVar

log = logging.getLogger("driftline.checkpoint")

T = TypeVar("T")


class Store(Protocol):
    """``put`` returns once the checkpoint is durable; ``get`` answers the stored
    checkpoints of ``name``, newest first (empty when there are none); ``refresh=False``
    may answer from what the store read for an earlier ``get``. Failures raise OSError or
    a Kafka error (transient: retried by the caller)."""

    async def start(self) -> None: ...

    async def put(self, name: str, data: bytes) -> None: ...

    async def get(self, name: str, *, refresh: bool = True) -> list[tuple[str, bytes]]: ...

    async def stop(self) -> None: ...

    def describe(self) -> str: ...


class MemoryStore:
    """Checkpoints in a dict: for tests, and to see what a daemon would write."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self.data: dict[str, list[bytes]] = {}
        self.fail: BaseException | None = None  # raised by put and get while set (tests)

    async def start(self) -> None:
        return None

    async def put(self, name: str, data: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        kept = self.data.setdefault(name, [])
        kept.append(data)
        del kept[: -self.keep]

    async def get(self, name: str, *, refresh: bool = True) -> list[tuple[str, bytes]]:
        if self.fail is not None:
            raise self.fail
        kept = self.data.get(name, [])
        return [(f"memory[{name}]#{i}", d) for i, d in reversed(list(enumerate(kept)))]

    async def stop(self) -> None:
        return None

    def describe(self) -> str:
        return "memory (lost when the process ends)"


class LocalStore:
    """Checkpoints named ``<name>.<sequence>.ckpt`` in one directory; each is written to a
    temporary file, fsynced, renamed into place and the directory fsynced, so that a crash
    leaves either the new checkpoint or the previous one, never half of one. The newest
    ``keep`` are kept. File work runs in ``executor`` (default: asyncio's)."""

    def __init__(self, path: str | Path, keep: int = 2, executor: Executor | None = None) -> None:
        self.path = Path(path)
        self.keep = max(1, keep)
        self.executor = executor

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _files(self, name: str) -> list[Path]:
        return sorted(self.path.glob(f"{name}.*.ckpt"))

    def save(self, name: str, data: bytes) -> Path:
        """Write one checkpoint (blocking)."""
        self.path.mkdir(parents=True, exist_ok=True)
        files = self._files(name)
        seq = int(files[-1].name.split(".")[-2]) + 1 if files else 1
        final = self.path / f"{name}.{seq:012d}.ckpt"
        tmp = self.path / f".{final.name}.tmp"
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        for old in self._files(name)[: -self.keep]:
            with contextlib.suppress(OSError):
                old.unlink()
        return final

    def load(self, name: str) -> list[tuple[str, bytes]]:
        """The stored checkpoints, newest first (blocking); an unreadable file is logged and
        skipped."""
        out: list[tuple[str, bytes]] = []
        for path in reversed(self._files(name)):
            try:
                out.append((str(path), path.read_bytes()))
            except OSError as exc:
                log.error("cannot read checkpoint %s (%s); trying the previous one", path, exc)
        return out

    async def start(self) -> None:
        await self._run(lambda: self.path.mkdir(parents=True, exist_ok=True))

    async def put(self, name: str, data: bytes) -> None:
        await self._run(self.save, name, data)

    async def get(self, name: str, *, refresh: bool = True) -> list[tuple[str, bytes]]:
        return await self._run(self.load, name)

    async def stop(self) -> None:
        return None

    def describe(self) -> str:
        return f"directory {self.path}"
