"""Checkpoints: plain versioned data, exact resume, the codec's trust boundary, stores."""

from __future__ import annotations

import asyncio
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from monitor.config.schema import Config, parse_config
from monitor.errors import CheckpointError
from monitor.online.pipeline import Pipeline
from monitor.state import codec
from monitor.state.codec import MAGIC, FormatError, decode, decode_first, encode
from monitor.state.stores import LocalStore, MemoryStore
from sinks.testing import RecordingSink


def config(**over: Any) -> Config:
    doc: dict[str, Any] = {
        "kafka": {"topic": "p", "labels_topic": "l"},
        "defaults": {"reference": {"warmup": 800}},
        "alerting": {"resolve_after_events": 1500, "cooldown_events": 500},
        "models": {
            "m": {
                "features": {"a": "numeric", "b": "numeric", "c": "categorical"},
                "prediction": "numeric",
            }
        },
    }
    doc.update(over)
    return parse_config(doc, env={})


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
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Process the stream batch by batch (labels one batch late); at batch ``stop_at`` save
    a checkpoint, throw the pipeline away and continue with one restored from the file."""
    events, labels = stream()
    sink = RecordingSink()
    pipe = Pipeline.of(config(), [sink])
    prev = (0, 0)
    for k, (lo, hi) in enumerate(cuts):
        if k == stop_at:
            assert store is not None
            store.save("pipeline", encode(pipe.export(0)))
            pipe = Pipeline.of(config(), [sink])
            found = decode_first(store.load("pipeline"))
            assert found is not None
            pipe.restore(0, found[0])
        asyncio.run(pipe.process(events[lo:hi], labels[prev[0] : prev[1]]))
        prev = (lo, hi)
    asyncio.run(pipe.process([], labels[prev[0] : prev[1]]))
    return [a.to_dict() for a in sink.alerts], pipe.export(0)


def same(a: Any, b: Any, path: str = "") -> None:
    """Structural equality, numpy arrays and NaN included."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.shape == b.shape, path
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), path
    else:
        assert a == b, (path, a, b)


@pytest.mark.parametrize("seed", range(4))
def test_resume_from_a_checkpoint_is_exact_in_every_alert_field(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    bounds = np.unique(np.r_[0, np.sort(rng.integers(1, 9000, 14)), 9000])
    cuts = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
    ref_alerts, ref_state = run(cuts)
    assert any(a["status"] == "firing" and a["p_value"] for a in ref_alerts)
    assert any(a["detector"] == "concept_drift" for a in ref_alerts)
    stop = int(rng.integers(1, len(cuts)))
    alerts, state = run(cuts, stop_at=stop, store=LocalStore(tmp_path / f"s{seed}"))
    assert alerts == ref_alerts  # the same alerts, field for field (p-values included)
    same(state, ref_state)  # and the same final state, bit for bit


def test_a_restored_pipeline_reports_the_last_p_values() -> None:
    events, _ = stream(6000)
    pipe = Pipeline.of(config())
    asyncio.run(pipe.process(events))
    before = {
        (s.name, d.detector): d.p_value for s in pipe.status.models["m"].series for d in s.detectors
    }
    assert any(p is not None for p in before.values())
    restored = Pipeline.of(config())
    restored.restore(0, decode(encode(pipe.export(0))))
    after = {
        (s.name, d.detector): d.p_value
        for s in restored.status.models["m"].series
        for d in s.detectors
    }
    assert after == before


def test_checkpoints_hold_plain_data_only() -> None:
    """No class of driftline's is pickled: a renamed attribute cannot break a resume."""
    events, labels = stream(4000)
    pipe = Pipeline.of(config())
    asyncio.run(pipe.process(events, labels))
    data = encode(pipe.export(0))
    names = set()

    class Spy(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            names.add(module.split(".")[0])
            return super().find_class(module, name)

    import io

    Spy(io.BytesIO(data[len(MAGIC) + 10 + 32 :])).load()
    assert names <= {"numpy"}


def test_the_codec_refuses_to_run_anything_but_numpy() -> None:
    body = pickle.dumps({"x": Path("/etc/passwd")}, protocol=5)
    import hashlib
    import struct

    data = (
        MAGIC + struct.pack(">HQ", codec.VERSION, len(body)) + hashlib.sha256(body).digest() + body
    )
    with pytest.raises(CheckpointError, match="only plain data"):
        decode(data)


def test_truncated_foreign_and_old_format_files_are_reported() -> None:
    good = encode({"k": "v"})
    with pytest.raises(CheckpointError, match="truncated"):
        decode(good[:-10])
    with pytest.raises(CheckpointError, match="bad magic"):
        decode(b"hello" + good)
    for version, words in ((1, "driftline 0.1"), (9, "version 9 is not supported")):
        bumped = MAGIC + version.to_bytes(2, "big") + good[len(MAGIC) + 2 :]
        with pytest.raises(FormatError, match=words):
            decode(bumped)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LocalStore(tmp_path, keep=2)
    store.save("x", encode({"n": 1}))
    newest = store.save("x", encode({"n": 2}))
    data = bytearray(newest.read_bytes())
    data[-3] ^= 0xFF  # flip bits in the body
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="driftline.checkpoint"):
        found = decode_first(store.load("x"))
    assert found is not None and found[0] == {"n": 1}
    assert "checksum mismatch" in caplog.text and "trying the previous one" in caplog.text


def test_a_model_checkpointed_under_another_plan_starts_afresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events, _ = stream(2000)
    pipe = Pipeline.of(config())
    asyncio.run(pipe.process(events))
    state = decode(encode(pipe.export(0)))
    other = config(defaults={"reference": {"warmup": 800}, "params": {"ks": {"window": 300}}})
    elsewhere = Pipeline.of(other)
    with caplog.at_level(logging.ERROR, logger="driftline.pipeline"):
        assert elsewhere.restore(0, state) == []
    assert "another configuration" in caplog.text
    assert elsewhere.status.models["m"].events == 0
    # Alerting and label-join settings may change: the state is kept.
    relaxed = config(alerting={"resolve_after_events": 99, "cooldown_events": 1})
    assert Pipeline.of(relaxed).restore(0, state) == ["m"]


def test_only_the_newest_checkpoints_are_kept(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, keep=2)
    for n in range(5):
        store.save("x", encode({"n": n}))
    assert len(list(tmp_path.glob("x.*.ckpt"))) == 2
    found = decode_first(store.load("x"))
    assert found is not None and found[0] == {"n": 4}
    assert decode_first(store.load("nothing")) is None


def test_the_memory_store_keeps_the_newest_two() -> None:
    store = MemoryStore()
    for n in range(3):
        asyncio.run(store.put("x", bytes([n])))
    assert [d for _, d in asyncio.run(store.get("x"))] == [b"\x02", b"\x01"]


def two_models() -> Config:
    doc = config().model_dump(mode="json", exclude_defaults=True)
    doc["models"]["n"] = doc["models"]["m"]
    return parse_config(doc, env={})


def test_state_is_kept_per_partition() -> None:
    """Each model belongs to the partition its events come from; a partition's checkpoint
    holds its models only, and restoring it elsewhere leaves other partitions alone."""
    events, _ = stream(3000)
    other = [e.replace(b'"model":"m"', b'"model":"n"') for e in events]
    pipe = Pipeline.of(two_models())
    pipe.detect(pipe.decode(events[:2000] + other[:1000], [0] * 2000 + [1] * 1000))
    assert pipe.models_of(0) == ["m"] and pipe.models_of(1) == ["n"]
    snap = decode(encode(pipe.export(1)))
    assert list(snap["models"]) == ["n"]

    elsewhere = Pipeline.of(two_models())  # another instance takes partition 1 over
    elsewhere.restore(1, snap)
    assert elsewhere.status.models["n"].events == 1000
    assert elsewhere.status.models["m"].events == 0
    same(elsewhere.export(1), pipe.export(1))

    pipe.drop(1)  # given up: its model starts afresh here, partition 0 is untouched
    assert pipe.status.models["n"].events == 0 and pipe.models_of(1) == []
    assert pipe.status.models["m"].events == 2000


def test_events_on_a_second_partition_are_counted_as_misrouted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events, _ = stream(200)
    pipe = Pipeline.of(config())
    with caplog.at_level(logging.WARNING, logger="driftline.pipeline"):
        pipe.detect(pipe.decode(events[:100], [0] * 100))
        pipe.detect(pipe.decode(events[100:], [3] * 100))
    assert pipe.models_of(0) == ["m"] and pipe.status.misrouted == 100
    assert "key events (and labels) by model" in caplog.text
