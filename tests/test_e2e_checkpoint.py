"""Exact resume after SIGKILL, against a real broker and the real ``driftline`` command:
two models on a two-partition topic, killed at random moments and at chosen crash points
(mid-batch, after the sinks but before the commit, right after a checkpoint), restarted,
and compared with one uninterrupted run: the same final state per partition, bit for
bit, and no alert id that the uninterrupted run did not raise."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.demo.broker import EmbeddedBroker, create_topics_sync, free_port
from monitor.state.codec import decode_first
from monitor.state.stores import LocalStore

from .conftest import WebhookReceiver, daemon_config, loan_events, produce
from .test_checkpoint import same
from .test_e2e_kafka import start_cli, wait_events, write_config

pytestmark = pytest.mark.e2e  # a real broker (and real services)


N = 8000  # events per model
MODELS = ("credit-v1", "credit-v2")


def run_once(
    bootstrap: str,
    topic: str,
    group: str,
    state_dir: Path,
    hook: WebhookReceiver,
    tmp: Path,
    *,
    until: int = N * len(MODELS),
    crash_at: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``driftline run``; return once it has processed ``until`` events in all (or,
    with ``crash_at``, once it has killed itself there)."""
    port = free_port()
    doc = daemon_config(bootstrap, topic, sinks=[{"type": "webhook", "url": hook.url}])
    doc["models"]["credit-v2"] = doc["models"]["credit-v1"]
    doc["kafka"]["group_id"] = group
    doc["kafka"]["max_batch_records"] = 700  # many batches: kills land between them
    doc["http"]["port"] = port
    doc["state"] = {"path": str(state_dir), "checkpoint_every_events": 1500}
    tmp.mkdir(parents=True, exist_ok=True)
    env = {"DRIFTLINE_CRASH_AT": crash_at} if crash_at else {}
    proc = start_cli(write_config(tmp, doc), **env)
    if crash_at:
        assert proc.wait(90) == -signal.SIGKILL
        return proc
    wait_events(proc, port, until, tmp)
    return proc


def final_states(state_dir: Path, group: str, topic: str) -> list[dict[str, Any]]:
    out = []
    for p in range(len(MODELS)):
        loaded = decode_first(LocalStore(state_dir).load(f"{group}.{topic}.{p}"))
        assert loaded is not None
        state = loaded[0]
        state.pop("written_at")  # wall clock: the one field that differs between runs
        out.append(state)
    return out


@pytest.fixture(scope="module")
def stream(broker: EmbeddedBroker) -> str:
    """A two-partition topic, one model per partition, each with a drift halfway."""
    topic = "crash"
    create_topics_sync(broker.bootstrap, [topic, f"{topic}.dlq"], partitions=2)
    for i, model in enumerate(MODELS):
        events = [
            e.replace(b'"credit-v1"', f'"{model}"'.encode())
            for e in loan_events(N, drift_at=N // 2, seed=10 + i)
        ]
        produce(broker.bootstrap, topic, events, key=model.encode(), partition=i)
    return topic


@pytest.fixture(scope="module")
def uninterrupted(
    broker: EmbeddedBroker, stream: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[dict[str, Any]], set[str]]]:
    tmp = tmp_path_factory.mktemp("ref")
    hook = WebhookReceiver().start()
    try:
        proc = run_once(broker.bootstrap, stream, "ref", tmp / "state", hook, tmp / "run")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        hook.stop()
    ids = {a["id"] for a in hook.alerts}
    assert {a["model"] for a in hook.alerts if a["feature"] == "salary"} == set(MODELS)
    yield final_states(tmp / "state", "ref", stream), ids


CRASHES = [
    ("random", 0),  # SIGKILL from outside at a random moment
    ("random", 1),
    ("detect:9", None),  # a batch handed to the detection worker, not finished
    ("emit:14", None),  # its alerts handed to the sinks, its offsets not committed
    ("checkpoint:4", None),  # a checkpoint durable, the next commit not yet made
]


@pytest.mark.parametrize(("crash", "seed"), CRASHES, ids=[f"{c}-{s}" for c, s in CRASHES])
def test_sigkill_then_restart_ends_in_the_state_of_an_uninterrupted_run(
    broker: EmbeddedBroker,
    stream: str,
    uninterrupted: tuple[list[dict[str, Any]], set[str]],
    tmp_path: Path,
    crash: str,
    seed: int | None,
) -> None:
    group = f"crash-{crash.replace(':', '-')}-{seed}"
    hook = WebhookReceiver().start()
    try:
        if crash == "random":
            kill_after = int(np.random.default_rng(seed).integers(3000, 2 * N - 2000))
            first = run_once(
                broker.bootstrap, stream, group, tmp_path / "s", hook, tmp_path / "a",
                until=kill_after,
            )  # fmt: skip
            first.send_signal(signal.SIGKILL)  # no clean shutdown, no final checkpoint
            first.wait(30)
        else:
            run_once(
                broker.bootstrap, stream, group, tmp_path / "s", hook, tmp_path / "a",
                crash_at=crash,
            )  # fmt: skip
        again = run_once(broker.bootstrap, stream, group, tmp_path / "s", hook, tmp_path / "b")
        again.send_signal(signal.SIGTERM)
        assert again.wait(30) == 0
        log = (tmp_path / "b" / "run.log").read_text()
        assert "restored partition" in log and "resuming" in log
    finally:
        hook.stop()

    expected, ref_ids = uninterrupted
    for got, want in zip(final_states(tmp_path / "s", group, stream), expected, strict=True):
        same(got, want)  # detectors, counters, references, episodes, offsets: all equal
    ids = {a["id"] for a in hook.alerts}
    assert ids and ids <= ref_ids  # deterministic ids: no episode invented
    # Alerts raised after the crash are raised again (same id); none is missing at the end.
    assert ids == ref_ids


def test_a_corrupt_checkpoint_is_reported_and_the_previous_one_used(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    produce(broker.bootstrap, topic, loan_events(6000, drift_at=None, seed=3))
    hook = WebhookReceiver().start()
    doc_total = 6000
    try:
        first = run_once(
            broker.bootstrap, topic, "g", tmp_path / "state", hook, tmp_path / "a", until=doc_total
        )
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
        files = sorted((tmp_path / "state").glob("*.ckpt"))
        assert len(files) == 2  # the newest two are kept
        data = bytearray(files[-1].read_bytes())
        data[len(data) // 2] ^= 0xFF
        files[-1].write_bytes(bytes(data))  # the newest is now corrupt
        again = run_once(
            broker.bootstrap, topic, "g", tmp_path / "state", hook, tmp_path / "b", until=doc_total
        )
        again.send_signal(signal.SIGTERM)
        assert again.wait(30) == 0  # no crash
    finally:
        hook.stop()
    log = (tmp_path / "b" / "run.log").read_text()
    assert "checksum mismatch" in log and "trying the previous one" in log
    assert "restored partition 0 from " in log and f"{files[0].name} (models" in log
    final = decode_first(LocalStore(tmp_path / "state").load(f"g.{topic}.0"))
    assert final is not None
    assert final[0]["pipeline"]["models"]["credit-v1"]["monitor"]["events"] == 6000
