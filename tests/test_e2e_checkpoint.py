"""Exact resume after SIGKILL, against a real broker and the real ``driftline`` command."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.broker import EmbeddedBroker, free_port
from monitor.checkpoint import LocalStore

from .conftest import WebhookReceiver, daemon_config, loan_events, produce
from .test_checkpoint import same
from .test_e2e_kafka import start_cli, wait_http, write_config

N = 12000


def run_once(
    bootstrap: str,
    topic: str,
    group: str,
    state_dir: Path,
    hook: WebhookReceiver,
    tmp: Path,
    kill_after: int | None = None,
    total: int = N,
) -> subprocess.Popen[bytes]:
    port = free_port()
    doc = daemon_config(bootstrap, topic, sinks=[{"type": "webhook", "url": hook.url}])
    doc["kafka"]["group_id"] = group
    doc["kafka"]["max_batch_records"] = 700  # many batches: kills land between them
    doc["http"]["port"] = port
    doc["state"] = {"path": str(state_dir), "checkpoint_every_events": 1500}
    tmp.mkdir(parents=True, exist_ok=True)
    proc = start_cli(write_config(tmp, doc))
    target = total if kill_after is None else kill_after
    try:
        wait_http(
            port,
            "/status",
            lambda code, body: (
                code == 200 and json.loads(body)["models"]["credit-v1"]["events"] >= target
            ),
            timeout=90,
        )
    except BaseException:
        proc.kill()
        raise
    return proc


def final_state(state_dir: Path, group: str, topic: str) -> dict[str, Any]:
    loaded = LocalStore(state_dir).load(f"{group}.{topic}.0")
    assert loaded is not None
    return loaded[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_then_restart_ends_in_the_state_of_an_uninterrupted_run(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, seed: int
) -> None:
    produce(broker.bootstrap, topic, loan_events(N, drift_at=6000, seed=seed))
    ref_hook, crash_hook = WebhookReceiver().start(), WebhookReceiver().start()
    try:
        ref = run_once(broker.bootstrap, topic, "ref", tmp_path / "ref", ref_hook, tmp_path / "r")
        ref.send_signal(signal.SIGTERM)
        assert ref.wait(30) == 0

        kill_after = int(np.random.default_rng(seed).integers(2000, N - 1000))
        crash = run_once(
            broker.bootstrap,
            topic,
            "crash",
            tmp_path / "crash",
            crash_hook,
            tmp_path / "c1",
            kill_after=kill_after,
        )
        crash.send_signal(signal.SIGKILL)  # no clean shutdown, no final checkpoint
        crash.wait(30)
        again = run_once(
            broker.bootstrap, topic, "crash", tmp_path / "crash", crash_hook, tmp_path / "c2"
        )
        again.send_signal(signal.SIGTERM)
        assert again.wait(30) == 0
        log = (tmp_path / "c2" / "run.log").read_text()
        assert "restored" in log and "resuming" in log
    finally:
        ref_hook.stop()
        crash_hook.stop()

    expected = final_state(tmp_path / "ref", "ref", topic)
    got = final_state(tmp_path / "crash", "crash", topic)
    same(got, expected)  # detectors, counters, references, episodes, offsets: all equal
    ref_ids = {a["id"] for a in ref_hook.alerts}
    crash_ids = {a["id"] for a in crash_hook.alerts}
    assert ref_ids and crash_ids <= ref_ids  # deterministic ids: no episode is invented


def test_a_corrupt_checkpoint_is_reported_and_the_previous_one_used(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    produce(broker.bootstrap, topic, loan_events(6000, drift_at=None, seed=3))
    hook = WebhookReceiver().start()
    try:
        first = run_once(
            broker.bootstrap, topic, "g", tmp_path / "state", hook, tmp_path / "a", total=6000
        )
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
        files = sorted((tmp_path / "state").glob("*.ckpt"))
        assert len(files) == 2  # the newest two are kept
        data = bytearray(files[-1].read_bytes())
        data[len(data) // 2] ^= 0xFF
        files[-1].write_bytes(bytes(data))  # the newest is now corrupt
        again = run_once(
            broker.bootstrap, topic, "g", tmp_path / "state", hook, tmp_path / "b", total=6000
        )
        again.send_signal(signal.SIGTERM)
        assert again.wait(30) == 0  # no crash
    finally:
        hook.stop()
    log = (tmp_path / "b" / "run.log").read_text()
    assert "checksum mismatch" in log and "trying the previous one" in log
    assert f"restored partition 0 from {files[0].name}" in log
    final = final_state(tmp_path / "state", "g", topic)
    assert final["pipeline"]["models"]["credit-v1"]["monitor"]["events"] == 6000
