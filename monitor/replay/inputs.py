"""Event files for ``driftline replay``: JSON Lines in the wire format, one event per line,
plain or gzip-compressed (told by the file's first bytes, not its name), or ``-`` for
standard input. Blank lines are skipped; every other line is one record, as a Kafka record's
value would be.

>>> import gzip, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "a.jsonl.gz").write_bytes(gzip.compress(b'{"x": 1}\\n\\n{"x": 2}\\n'))
>>> [(line.where, line.value) for line in lines([str(d / "a.jsonl.gz")])][-1][1]
b'{"x": 2}'
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, NamedTuple

GZIP_MAGIC = b"\x1f\x8b"


class Line(NamedTuple):
    """One record of an input: where it is (``file:line``) and its bytes."""

    where: str
    value: bytes


def _open(name: str) -> tuple[IO[bytes], IO[bytes]]:
    """The input's reader (decompressing when it is gzip) and the raw stream under it."""
    raw: IO[bytes] = sys.stdin.buffer if name == "-" else Path(name).open("rb")  # noqa: SIM115 (closed by lines())
    head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw), raw  # type: ignore[return-value]
    return raw, raw


def lines(names: Iterable[str]) -> Iterator[Line]:
    """Every non-blank line of every input, in order (OSError for one that cannot be
    read; a corrupt gzip stream raises ``gzip.BadGzipFile`` or ``EOFError``)."""
    for name in names:
        shown = "<stdin>" if name == "-" else name
        reader, raw = _open(name)
        try:
            for number, data in enumerate(reader, 1):
                value = data.rstrip(b"\r\n")
                if value.strip():
                    yield Line(f"{shown}:{number}", value)
        finally:
            if reader is not raw:
                reader.close()
            if name != "-":
                raw.close()


def size_of(names: Iterable[str]) -> int | None:
    """The inputs' total size on disk (None when one is standard input)."""
    total = 0
    for name in names:
        if name == "-":
            return None
        total += Path(name).stat().st_size
    return total
