"""Checkpoints: exact resume of the pipeline through the local store, corruption handling."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from monitor.checkpoint import MAGIC, CheckpointError, LocalStore, decode, encode
from monitor.config import Config, parse_config
from monitor.pipeline import Pipeline

from .test_policy import RecordingSink


def config() -> Config:
    return parse_config(
        {
            "kafka": {"topic": "p", "labels_topic": "l"},
            "defaults": {"reference": {"warmup": 800}},
            "alerting": {"resolve_after_events": 1500, "cooldown_events": 500},
            "models": {
                "m": {
                    "features": {"a": "numeric", "b": "numeric", "c": "categorical"},
                    "prediction": "numeric",
                }
            },
        },
        env={},
    )


def stream(n: int = 9000) -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(5)
    events, labels = [], []
    for i in range(n):
        on = 3500 <= i < 6000
        feats = {
            "a": float(rng.normal(2.0 if on else 0.0, 1.0)),
            "b": float(rng.normal()),
            "c": str(rng.choice(4 if on else 3)),
        }
        p = float(rng.random())
        events.append(
            orjson.dumps(
                {"model": "m", "id": f"e{i}", "ts": 1.7e9 + i, "features": feats, "prediction": p}
            )
        )
        wrong = on and rng.random() < 0.4  # the model gets worse while the shift lasts
        labels.append(
            orjson.dumps(
                {"model": "m", "id": f"e{i}", "label": int((p > 0.5) != wrong), "ts": 1.7e9 + i + 5}
            )
        )
    return events, labels


def run(
    cuts: list[tuple[int, int]], stop_at: int | None = None, store: LocalStore | None = None
) -> tuple[list[tuple[str, str, int]], dict[str, Any]]:
    """Process the stream batch by batch (labels one batch late); at batch ``stop_at`` save
    a checkpoint, throw the pipeline away and continue with one restored from the file."""
    events, labels = stream()
    sink = RecordingSink()
    pipe = Pipeline(config(), [sink])
    prev = (0, 0)
    for k, (lo, hi) in enumerate(cuts):
        if k == stop_at:
            assert store is not None
            store.save("pipeline", pipe.snapshot(0))
            pipe = Pipeline(config(), [sink])
            loaded = store.load("pipeline")
            assert loaded is not None
            pipe.restore(0, loaded[0])
        asyncio.run(pipe.process(events[lo:hi], labels[prev[0] : prev[1]]))
        prev = (lo, hi)
    asyncio.run(pipe.process([], labels[prev[0] : prev[1]]))
    return [(a.id, a.status, a.at_event) for a in sink.alerts], pipe.snapshot(0)


def same(a: Any, b: Any, path: str = "") -> None:
    """Structural equality, numpy arrays and NaN included."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.shape == b.shape, path
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple | deque):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif hasattr(a, "__dict__") and not isinstance(a, type):  # dataclasses and objects
        same(vars(a), vars(b), path)
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), path
    else:
        assert a == b, (path, a, b)


@pytest.mark.parametrize("seed", range(4))
def test_resume_from_a_checkpoint_is_exact(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    bounds = np.unique(np.r_[0, np.sort(rng.integers(1, 9000, 14)), 9000])
    cuts = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
    ref_alerts, ref_state = run(cuts)
    assert any(a[1] == "firing" for a in ref_alerts), "the stream should raise alerts"
    stop = int(rng.integers(1, len(cuts)))
    alerts, state = run(cuts, stop_at=stop, store=LocalStore(tmp_path / f"s{seed}"))
    assert alerts == ref_alerts  # the same episodes, ids and transitions
    same(state, ref_state)  # and the same final state, bit for bit


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LocalStore(tmp_path, keep=2)
    store.save("x", {"n": 1})
    newest = store.save("x", {"n": 2})
    data = bytearray(newest.read_bytes())
    data[-3] ^= 0xFF  # flip bits in the body
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="driftline.checkpoint"):
        loaded = store.load("x")
    assert loaded is not None and loaded[0] == {"n": 1}
    assert "checksum mismatch" in caplog.text and "trying the previous one" in caplog.text


def test_truncated_and_foreign_files_are_reported() -> None:
    good = encode({"k": "v"})
    with pytest.raises(CheckpointError, match="truncated"):
        decode(good[:-10])
    with pytest.raises(CheckpointError, match="bad magic"):
        decode(b"hello" + good)
    bumped = MAGIC + (2).to_bytes(2, "big") + good[len(MAGIC) + 2 :]
    with pytest.raises(CheckpointError, match="version 2 is not supported"):
        decode(bumped)


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path: Path) -> None:
    pipe = Pipeline(config(), [])
    state = pipe.snapshot(0)
    other = config().model_copy(
        update={"alerting": config().alerting.model_copy(update={"cooldown_events": 1})}
    )
    with pytest.raises(CheckpointError, match="another configuration"):
        Pipeline(other, []).restore(0, state)


def test_only_the_newest_checkpoints_are_kept(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, keep=2)
    for n in range(5):
        store.save("x", {"n": n})
    assert len(list(tmp_path.glob("x.*.ckpt"))) == 2
    loaded = store.load("x")
    assert loaded is not None and loaded[0] == {"n": 4}
    assert store.load("nothing") is None


def two_models() -> Config:
    doc = config().model_dump(mode="json", exclude_defaults=True)
    doc["models"]["n"] = doc["models"]["m"]
    return parse_config(doc, env={})


def test_state_is_kept_per_partition() -> None:
    """Each model belongs to the partition its events come from; a partition's checkpoint
    holds its models only, and restoring it elsewhere leaves other partitions alone."""
    events, _ = stream(3000)
    other = [e.replace(b'"model":"m"', b'"model":"n"') for e in events]
    pipe = Pipeline(two_models(), [])
    batches, _ = pipe.decode(events[:2000] + other[:1000], [0] * 2000 + [1] * 1000)
    pipe.detect(batches)
    assert pipe.owner == {"m": 0, "n": 1} and pipe.models_of(1) == ["n"]
    snap = decode(encode(pipe.snapshot(1)))
    assert list(snap["models"]) == ["n"]

    elsewhere = Pipeline(two_models(), [])  # another instance takes partition 1 over
    elsewhere.restore(1, snap)
    assert elsewhere.monitors["n"].events == 1000 and elsewhere.monitors["m"].events == 0
    same(elsewhere.snapshot(1), pipe.snapshot(1))

    pipe.drop(1)  # given up: its model starts afresh here, partition 0 is untouched
    assert pipe.monitors["n"].events == 0 and "n" not in pipe.owner
    assert pipe.monitors["m"].events == 2000


def test_events_on_a_second_partition_are_counted_as_misrouted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events, _ = stream(200)
    pipe = Pipeline(config(), [])
    with caplog.at_level(logging.WARNING, logger="driftline.pipeline"):
        pipe.decode(events[:100], [0] * 100)
        pipe.decode(events[100:], [3] * 100)
    assert pipe.owner == {"m": 0} and pipe.misrouted == 100
    assert "key events (and labels) by model" in caplog.text
