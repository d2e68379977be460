"""``driftline replay``: the daemon's alerts from files, document for document; malformed
lines with their place; gzip, stdin, --strict and --fail-on-alert (the fast tier: the
daemon in-process over an in-memory source; the real-broker test compares with the real
``driftline run``)."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.ingest.source import MemorySource
from monitor.replay.inputs import Line, lines
from monitor.replay.replay import Replay, StrictError
from monitor.state.stores import MemoryStore
from sinks.testing import RecordingSink

from .test_daemon import config, count, daemon, events, run

GARBAGE = [b"{not json", b'{"model": "zz", "features": {}}', b"", b'{"model": "m"}']


def stream() -> list[bytes]:
    """Models m (shifting half way) and n, interleaved at random, each in its own order."""
    m, n = events(8000, shift_at=4000), events(3000, shift_at=None, seed=3, model="n")
    picks = [0] * len(m) + [1] * len(n)
    random.Random(1).shuffle(picks)
    its = [iter(m), iter(n)]
    values = [next(its[k]) for k in picks]
    for k, g in enumerate(GARBAGE):
        values.insert(1000 + 997 * k, g)
    return values


def test_replay_gives_the_daemons_alerts_document_for_document() -> None:
    values = stream()
    sink = RecordingSink()
    d = daemon(MemorySource(values), MemoryStore(), sink=sink)
    n_good = len(values) - len(GARBAGE)
    assert run(d, lambda: count(d) + count(d, "n") == n_good) == 0
    daemon_alerts = [a.to_dict() for a in sink.alerts]
    assert daemon_alerts, "the shift must alert"
    for batch in (7, 1000, 5000):  # any batching gives the same alerts
        feed = [Line(f"e:{i}", v) for i, v in enumerate(values) if v]
        result = asyncio.run(Replay(config(), batch=batch).run(feed))
        assert [a.to_dict() for a in result.alerts] == daemon_alerts, batch
    assert result.events == n_good


def test_malformed_lines_are_reported_with_their_place_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\n".join(stream()) + b"\n")
    result = asyncio.run(Replay(config()).run(lines([str(path)])))
    places = {(m.where.split(":")[-1], m.reason) for m in result.malformed}
    assert places == {("1001", "bad_json"), ("1998", "unknown_model"), ("3992", "missing_features")}
    assert sum(result.rejected.values()) == 3
    with pytest.raises(StrictError, match=r"e.jsonl:1001: bad_json"):
        asyncio.run(Replay(config(), strict=True).run(lines([str(path)])))


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", "replay", *args],
        input=stdin,
        capture_output=True,
        timeout=300,
        check=False,
    )


def test_the_command_reads_gzip_and_stdin_and_says_what_it_found(tmp_path: Path) -> None:
    doc: dict[str, Any] = {
        "kafka": {"topic": "t"},
        "defaults": {"reference": {"warmup": 1000}},
        "alerting": {"resolve_after_events": 1000, "cooldown_events": 500},
        "models": {
            "m": {"features": {"x": "numeric", "y": "numeric"}},
            "n": {"features": {"x": "numeric", "y": "numeric"}},
        },
    }
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    body = b"\n".join(stream()) + b"\n"
    gz = tmp_path / "e.log"  # gzip told by its bytes, not its name
    gz.write_bytes(gzip.compress(body))
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first = cli("-c", str(cfg), "-i", str(gz), "-o", str(a))
    assert first.returncode == 0, first.stderr
    out = first.stdout.decode()
    assert "11,003 lines, 11,000 events accepted" in out  # a blank line is no record
    assert "series that alerted" in out and " x " in out
    assert f"{gz}:1001: bad_json" in out
    second = cli("-c", str(cfg), "-i", "-", "-o", str(b), stdin=body)
    assert second.returncode == 0, second.stderr
    assert "<stdin>:1001: bad_json" in second.stdout.decode()
    alerts = [json.loads(x) for x in a.read_text().splitlines()]
    assert alerts and alerts == [json.loads(x) for x in b.read_text().splitlines()]
    assert cli("-c", str(cfg), "-i", str(gz), "--fail-on-alert").returncode == 3
    strict = cli("-c", str(cfg), "-i", str(gz), "--strict")
    assert strict.returncode == 2 and b"e.log:1001: bad_json" in strict.stderr
    missing = cli("-c", str(cfg), "-i", str(tmp_path / "none.jsonl"))
    assert missing.returncode == 2 and b"cannot read the input" in missing.stderr
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(body)[:5000])
    cut = cli("-c", str(cfg), "-i", str(broken))
    assert cut.returncode == 2 and b"cannot read the input" in cut.stderr
