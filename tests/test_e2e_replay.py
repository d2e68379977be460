"""``driftline replay`` against the real ``driftline run`` on the same events: a real broker
(Tansu), a real webhook receiver, the alerts compared document for document."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.demo.broker import EmbeddedBroker, free_port

from .conftest import WebhookReceiver, daemon_config, loan_events, produce
from .test_e2e_faults import cli, wait_status
from .test_e2e_kafka import write_config

pytestmark = pytest.mark.e2e


def test_replay_sends_what_the_daemon_sends_for_the_same_events(
    broker: EmbeddedBroker, topic: str, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    values = loan_events(8000, drift_at=4000, seed=21)
    values = [*values[:2000], b"{garbage", b'{"model": "credit-v1"}', *values[2000:]]
    produce(broker.bootstrap, topic, values)
    port = free_port()
    doc = daemon_config(broker.bootstrap, topic, sinks=[{"type": "webhook", "url": receiver.url}])
    doc["http"]["port"] = port
    config = write_config(tmp_path, doc)
    with cli(config):
        wait_status(port, lambda s: s["models"]["credit-v1"]["events"] == 8000)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the receiver has had everything
            seen = len(receiver.alerts)
            time.sleep(1.0)
            if seen and len(receiver.alerts) == seen:
                break
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(values) + b"\n")
    out = tmp_path / "alerts.jsonl"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "monitor", "replay"),
            *("-c", str(config), "-i", str(events), "-o", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    replayed = [json.loads(line) for line in out.read_text().splitlines()]
    assert replayed and replayed == receiver.alerts  # ids, evidence, times, order
    assert f"{events}:2001: bad_json" in done.stdout
