"""Checkpoint bytes: framing, format version, checksum and the trust boundary.

A checkpoint is ``MAGIC``, a header (format version, body length), the SHA-256 of the body,
and the body: the partition's state as **plain data** (dicts, lists, tuples, strings,
numbers, bytes and numpy arrays), pickled. Decoding unpickles with an allow-list that
admits numpy's array and scalar constructors and nothing else, so a checkpoint cannot name
any other class or function to run; the online learner's river model travels inside as
opaque bytes and is unpickled only in the learner's own process. Keep the state directory
(or changelog topic) writable by the daemon alone all the same.

Format 1 (driftline 0.1) pickled live objects; it is refused with a message saying so.

>>> import numpy as np
>>> decode(encode({"a": 1, "x": np.arange(3)}))["x"].tolist()
[0, 1, 2]
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import struct
from typing import Any

from monitor.errors import CheckpointError


class FormatError(CheckpointError):
    """A checkpoint of another format version."""


log = logging.getLogger("driftline.checkpoint")

MAGIC = b"DRIFTLINE-CHECKPOINT\n"
VERSION = 2
_HEAD = struct.Struct(">HQ")  # version, body length

_ALLOWED = {
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise CheckpointError(f"the checkpoint names {module}.{name}: only plain data is accepted")


def encode(state: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint of ``state`` (plain data only, see the module doc)."""
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
    if version == 1:
        raise FormatError(
            "checkpoint format 1 (driftline 0.1, which pickled live objects) cannot be read "
            "by this version; the partition starts afresh and the next checkpoint replaces it"
        )
    if version != VERSION:
        raise FormatError(
            f"checkpoint format version {version} is not supported (this driftline reads "
            f"version {VERSION}); it was written by another version of driftline"
        )
    digest = data[head + _HEAD.size : head + _HEAD.size + 32]
    body = data[head + _HEAD.size + 32 :]
    if len(body) != length:
        raise CheckpointError(f"truncated checkpoint ({len(body)} of {length} body bytes)")
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError("corrupt checkpoint (checksum mismatch)")
    try:
        state = _PlainUnpickler(io.BytesIO(body)).load()
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"unreadable checkpoint body ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise CheckpointError("the checkpoint body is not a mapping")
    return state


def decode_first(candidates: list[tuple[str, bytes]]) -> tuple[dict[str, Any], str] | None:
    """The first of ``candidates`` (newest first, as a store gives them) that decodes, and
    where it came from; a corrupt one is reported and the next tried; one of another format
    version stops the search (FormatError). None when there are none."""
    errors = []
    for where, data in candidates:
        try:
            return decode(data), where
        except FormatError as exc:
            raise FormatError(f"{where}: {exc}") from None
        except CheckpointError as exc:
            log.error("checkpoint %s is unusable (%s); trying the previous one", where, exc)
            errors.append(f"{where}: {exc}")
    if errors:
        raise CheckpointError("; ".join(errors))
    return None
