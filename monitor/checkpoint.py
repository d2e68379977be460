"""Checkpoints: the daemon's state on disk, written atomically, checked when read.

A checkpoint file is ``MAGIC``, a format version, the body's length and its SHA-256, then
the body: the state pickled. **Trust boundary**: pickle runs code when it loads, so a state
directory must be writable by the daemon alone; checkpoints hold only the daemon's own data
(numpy arrays, counters, alert episodes, the label join buffer).

Writing: a temporary file in the same directory, fsync, rename over the final name, fsync
the directory; the newest ``keep`` checkpoints stay. Reading: the newest file that passes
its checks; a corrupt or truncated one is reported and the previous one is tried (the
documented fallback); a checkpoint of another format version is refused, never misread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import pickle
import struct
from pathlib import Path
from typing import Any, Protocol

from .errors import DriftlineError

log = logging.getLogger("driftline.checkpoint")

MAGIC = b"DRIFTLINE-CHECKPOINT\n"
VERSION = 1
_HEAD = struct.Struct(">HQ")  # version, body length


class CheckpointError(DriftlineError):
    """A checkpoint that cannot be used; the message says why."""


def encode(state: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint.

    >>> decode(encode({"a": 1}))
    {'a': 1}
    """
    body = pickle.dumps(state, protocol=5)
    return MAGIC + _HEAD.pack(VERSION, len(body)) + hashlib.sha256(body).digest() + body


def decode(data: bytes) -> dict[str, Any]:
    """The state in a checkpoint, or CheckpointError saying what is wrong with it."""
    if not data.startswith(MAGIC):
        raise CheckpointError("not a driftline checkpoint (bad magic)")
    head = len(MAGIC)
    if len(data) < head + _HEAD.size + 32:
        raise CheckpointError("truncated checkpoint (incomplete header)")
    version, length = _HEAD.unpack_from(data, head)
    if version != VERSION:
        raise CheckpointError(
            f"checkpoint format version {version} is not supported (this driftline reads "
            f"version {VERSION}); remove the state directory to start afresh"
        )
    digest = data[head + _HEAD.size : head + _HEAD.size + 32]
    body = data[head + _HEAD.size + 32 :]
    if len(body) != length:
        raise CheckpointError(f"truncated checkpoint ({len(body)} of {length} body bytes)")
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError("corrupt checkpoint (checksum mismatch)")
    state: dict[str, Any] = pickle.loads(body)
    return state


class Store(Protocol):
    """Where a partition's checkpoints go. ``put`` returns once the checkpoint is durable;
    ``get`` answers the newest usable one (falling back to older ones, see ``LocalStore``)
    and where it came from, or None when there is none."""

    async def start(self) -> None: ...

    async def put(self, name: str, data: bytes) -> None: ...

    async def get(self, name: str, *, refresh: bool = True) -> tuple[dict[str, Any], str] | None:
        """``refresh=False`` may answer from what the store read for an earlier ``get``."""

    async def stop(self) -> None: ...

    def describe(self) -> str: ...


def load_first(candidates: list[tuple[str, bytes]]) -> tuple[dict[str, Any], str] | None:
    """The first checkpoint (newest first) that decodes; a corrupt one is reported and the
    next tried; one of another format version is refused (CheckpointError)."""
    for where, data in candidates:
        try:
            return decode(data), where
        except CheckpointError as exc:
            if "format version" in str(exc):
                raise CheckpointError(f"{where}: {exc}") from None
            log.error("checkpoint %s is unusable (%s); trying the previous one", where, exc)
    return None


class LocalStore:
    """Checkpoints named ``<name>.<sequence>.ckpt`` in one directory."""

    def __init__(self, path: str | Path, keep: int = 2) -> None:
        self.path = Path(path)
        self.keep = max(1, keep)
        self.path.mkdir(parents=True, exist_ok=True)

    def _files(self, name: str) -> list[Path]:
        return sorted(self.path.glob(f"{name}.*.ckpt"))

    def save(self, name: str, state: dict[str, Any]) -> Path:
        return self.save_bytes(name, encode(state))

    def save_bytes(self, name: str, data: bytes) -> Path:
        """Write an already encoded checkpoint (atomically, see the module doc)."""
        files = self._files(name)
        seq = int(files[-1].name.split(".")[-2]) + 1 if files else 1
        final = self.path / f"{name}.{seq:012d}.ckpt"
        tmp = self.path / f".{final.name}.tmp"
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(final)
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        for old in self._files(name)[: -self.keep]:
            with contextlib.suppress(OSError):
                old.unlink()
        return final

    def load(self, name: str) -> tuple[dict[str, Any], Path] | None:
        """The newest usable checkpoint, falling back to older ones; None if there is none."""
        candidates: list[tuple[str, bytes]] = []
        for path in reversed(self._files(name)):
            try:
                candidates.append((str(path), path.read_bytes()))
            except OSError as exc:
                log.error("cannot read checkpoint %s (%s); trying the previous one", path, exc)
        found = load_first(candidates)
        return None if found is None else (found[0], Path(found[1]))

    # -- the Store protocol ------------------------------------------------------------
    async def start(self) -> None:
        return None

    async def put(self, name: str, data: bytes) -> None:
        await asyncio.to_thread(self.save_bytes, name, data)

    async def get(self, name: str, *, refresh: bool = True) -> tuple[dict[str, Any], str] | None:
        found = await asyncio.to_thread(self.load, name)
        return None if found is None else (found[0], found[1].name)

    async def stop(self) -> None:
        return None

    def describe(self) -> str:
        return f"directory {self.path}"
