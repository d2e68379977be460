"""Day-two operations against the real ``driftline`` command and a real broker (Tansu):
logs a machine can parse, re-baselining by HTTP and by the CLI, a rebuilt reference file
across a restart, and reloading the configuration."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor.app.build import build
from monitor.config.schema import parse_config
from monitor.demo.broker import EmbeddedBroker, free_port

from .conftest import Service, WebhookReceiver, accepted, daemon_config, loan_events, produce
from .test_e2e_faults import cli, wait_status
from .test_e2e_kafka import get, output_of, run_until, write_config

pytestmark = pytest.mark.e2e


def test_json_logs_are_one_object_per_line_and_name_each_rejected_record(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    good = loan_events(1500, drift_at=None, seed=3)
    bad = [
        b'{not json, "ssn": "SECRET-PAYLOAD"}',
        b'{"model": "nobody", "features": {}}',
        b'{"model": "credit-v1", "ssn": "SECRET-PAYLOAD"}',
    ]
    produce(broker.bootstrap, topic, good[:700] + bad + good[700:])
    port = free_port()
    doc = daemon_config(broker.bootstrap, topic, logging={"format": "json"})
    doc["http"]["port"] = port
    config = write_config(tmp_path, doc)
    with cli(config):
        wait_status(port, lambda s: s["models"]["credit-v1"]["events"] == 1500)
    lines = [json.loads(line) for line in output_of(config).splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    rejected = {x["reason"]: x for x in lines if "reason" in x}
    assert set(rejected) == {"bad_json", "unknown_model", "missing_features"}
    assert rejected["bad_json"]["topic"] == topic
    assert rejected["bad_json"]["partition"] == 0
    assert rejected["bad_json"]["offset"] == 700
    assert rejected["missing_features"]["offset"] == 702
    assert rejected["missing_features"]["model"] == "credit-v1"
    assert rejected["unknown_model"]["model"] is None  # not a configured model: not a label
    assert "SECRET-PAYLOAD" not in output_of(config)  # never the payload


def accept(port: int, *args: str, token: str | None) -> subprocess.CompletedProcess[str]:
    """``driftline reference accept`` against the daemon on ``port``."""
    env = {k: v for k, v in os.environ.items() if k != "DRIFTLINE_TOKEN"}
    if token is not None:
        env["DRIFTLINE_TOKEN"] = token
    return subprocess.run(
        [
            *(sys.executable, "-m", "monitor", "reference", "accept"),
            *("--url", f"http://127.0.0.1:{port}", "--model", "credit-v1", *args),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def firing_on(s: dict[str, Any], feature: str) -> list[str]:
    return [a["id"] for a in s["alerts_firing"] if a["feature"] == feature]


def rebaselined(receiver: WebhookReceiver, ids: list[str], timeout: float = 20) -> None:
    """Wait until the receiver has had every episode in ``ids`` resolved as rebaselined."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not set(ids) <= {
        a["id"] for a in receiver.alerts if a.get("resolution") == "rebaselined"
    }:
        time.sleep(0.1)


def status_with(port: int, token: str) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/status")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        return dict(json.loads(resp.read()))


def wait_with(port: int, token: str, ok: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            last = status_with(port, token)
            if ok(last):
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out; last status: {json.dumps(last)[:2000]}")


def test_a_drift_accepted_with_the_cli_resolves_at_the_receiver_and_survives_a_restart(
    broker: EmbeddedBroker, topic: str, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    produce(broker.bootstrap, topic, loan_events(6000, drift_at=3000, seed=4))
    port = free_port()
    doc = daemon_config(
        broker.bootstrap,
        topic,
        sinks=[{"type": "webhook", "url": receiver.url}],
        state={"path": str(tmp_path / "state")},
    )
    doc["http"] = {"host": "127.0.0.1", "port": port, "token": "s3cret"}
    config = write_config(tmp_path, doc)
    with cli(config):
        s = wait_with(
            port,
            "s3cret",
            lambda s: s["models"]["credit-v1"]["events"] == 6000 and firing_on(s, "salary"),
        )
        firing = firing_on(s, "salary")
        refused = accept(port, "--recent", "2000", "--feature", "salary", token=None)
        assert refused.returncode == 1 and "401" in refused.stderr
        assert "DRIFTLINE_TOKEN" in refused.stderr  # says what to do
        done = accept(port, "--recent", "2000", "--feature", "salary", token="s3cret")
        assert done.returncode == 0, done.stderr
        assert "reference version 2" in done.stdout and "salary" in done.stdout
        s = status_with(port, "s3cret")
        ref = s["models"]["credit-v1"]["reference"]
        assert (ref["version"], ref["source"], ref["features"]) == (2, "recent", ["salary"])
        assert not firing_on(s, "salary")
        rebaselined(receiver, firing)
        rebased = [a for a in receiver.alerts if a.get("resolution") == "rebaselined"]
        assert {a["id"] for a in rebased if a["feature"] == "salary"} == set(firing)
        assert all(a["status"] == "resolved" and a["ended_at"] for a in rebased)
        # more of the drifted level fires nothing on salary now
        produce(broker.bootstrap, topic, loan_events(3000, drift_at=0, seed=5))
        s = wait_with(port, "s3cret", lambda s: s["models"]["credit-v1"]["events"] == 9000)
        assert not firing_on(s, "salary")

    doc["http"] = {"host": "127.0.0.1", "port": port}  # restarted without a token
    write_config(tmp_path, doc)
    with cli(config):
        s = wait_status(port, lambda s: s["models"]["credit-v1"]["reference"]["version"] == 2)
        assert s["models"]["credit-v1"]["reference"]["features"] == ["salary"]
        refused = accept(port, "--next", "1000", token="s3cret")
        assert refused.returncode == 1 and "403" in refused.stderr
        assert "http.token" in refused.stderr


def test_a_rebuilt_reference_file_replaces_the_checkpointed_one_at_a_restart(
    broker: EmbeddedBroker, topic: str, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    train = tmp_path / "train.jsonl"
    train.write_bytes(b"\n".join(loan_events(3000, drift_at=None, seed=1)) + b"\n")
    ref = tmp_path / "credit.ref.json"
    produce(broker.bootstrap, topic, loan_events(4000, drift_at=1000, seed=2))
    port = free_port()
    doc = daemon_config(
        broker.bootstrap,
        topic,
        sinks=[{"type": "webhook", "url": receiver.url}],
        state={"path": str(tmp_path / "state")},
    )
    doc["http"]["port"] = port
    doc["defaults"] = {"reference": {"file": str(ref)}}
    config = write_config(tmp_path, doc)

    def build_ref(data: Path) -> None:
        out = subprocess.run(
            [
                *(sys.executable, "-m", "monitor", "reference", "build", "-c", str(config)),
                *("-m", "credit-v1", "-i", str(data), "-o", str(ref)),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr

    build_ref(train)
    with cli(config):
        s = wait_status(
            port,
            lambda s: s["models"]["credit-v1"]["events"] == 4000 and firing_on(s, "salary"),
        )
        firing = firing_on(s, "salary")
        first = s["models"]["credit-v1"]["reference"]
        assert first["source"] == "file" and first["version"] == 1
    # the drifted level is the new normal: the reference is rebuilt from it
    train.write_bytes(b"\n".join(loan_events(3000, drift_at=0, seed=3)) + b"\n")
    build_ref(train)
    with cli(config):
        s = wait_status(port, lambda s: s["models"]["credit-v1"]["reference"]["version"] == 2)
        ref_now = s["models"]["credit-v1"]["reference"]
        assert ref_now["source"] == "file" and ref_now["sha256"] != first["sha256"]
        assert not firing_on(s, "salary")
        rebaselined(receiver, firing)
        rebased = {a["id"] for a in receiver.alerts if a.get("resolution") == "rebaselined"}
        assert set(firing) <= rebased
    log = output_of(config)
    assert first["sha256"] in log and ref_now["sha256"] in log  # both hashes logged


def test_alertmanager_ends_a_rebaselined_alert_and_says_why(
    broker: EmbeddedBroker, topic: str, alertmanager: Service, receiver: WebhookReceiver
) -> None:
    produce(broker.bootstrap, topic, loan_events(6000, drift_at=3000, seed=4))
    sinks = [{"type": "alertmanager", "url": f"http://127.0.0.1:{alertmanager.port}"}]
    doc = daemon_config(broker.bootstrap, topic, sinks=sinks)
    doc["http"]["token"] = "s3cret"
    daemon = build(parse_config(doc, env={}))

    def at_am(status: str) -> list[dict[str, Any]]:
        return [
            a
            for a in receiver.alerts
            if a["status"] == status and a["labels"].get("feature") == "salary"
        ]

    async def rebaseline(d: Any) -> None:
        deadline = time.monotonic() + 30
        while not at_am("firing") and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        body = json.dumps({"from": "recent", "events": 2000})
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{d.http_port}/models/credit-v1/reference",
                data=body,
                headers={"Authorization": "Bearer s3cret"},
            ) as r,
        ):
            assert r.status == 200, await r.text()

        def ids(status: str) -> set[str]:
            return {a["labels"]["alert_id"] for a in at_am(status)}

        while ids("resolved") != ids("firing") and time.monotonic() < deadline + 30:
            await asyncio.sleep(0.2)

    asyncio.run(run_until(daemon, lambda: accepted(daemon) >= 6000, then=rebaseline))
    firing = {a["labels"]["alert_id"] for a in at_am("firing")}
    ended = at_am("resolved")
    seen = [(a["status"], a["labels"], a["annotations"], a.get("endsAt")) for a in at_am("firing")]
    seen += [(a["status"], a["labels"], a["annotations"], a.get("endsAt")) for a in ended]
    assert firing and {a["labels"]["alert_id"] for a in ended} == firing, seen
    # ADWIN's episodes may have resolved by themselves before (it adapts to a new level);
    # every episode still open at the re-baseline ends as rebaselined
    why = {a["labels"]["alert_id"]: a["annotations"]["resolution"] for a in ended}
    assert set(why.values()) <= {"quiet", "rebaselined"}, seen
    rebased = {i for i, r in why.items() if r == "rebaselined"}
    assert rebased and all(
        a["labels"]["detector"] == "adwin" for a in ended if why[a["labels"]["alert_id"]] == "quiet"
    ), seen
    assert all(a["endsAt"].startswith("2025-") for a in ended), seen  # event time


def test_sighup_swaps_a_sink_and_a_refused_change_keeps_the_daemon_running(
    broker: EmbeddedBroker, topic: str, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    second = WebhookReceiver().start()
    try:
        produce(broker.bootstrap, topic, loan_events(3000, drift_at=None, seed=11))
        port = free_port()
        doc = daemon_config(
            broker.bootstrap, topic, sinks=[{"type": "webhook", "url": receiver.url}]
        )
        doc["http"]["port"] = port
        config = write_config(tmp_path, doc)
        with cli(config) as proc:
            wait_status(port, lambda s: s["models"]["credit-v1"]["events"] == 3000)
            write_config(tmp_path, {**doc, "sinks": [{"type": "webhook", "url": second.url}]})
            proc.send_signal(signal.SIGHUP)
            s = wait_status(port, lambda s: s["config"]["last_reload_changed"] == ["sinks"])
            assert s["config"]["last_reload_successful"] is True
            produce(broker.bootstrap, topic, loan_events(3000, drift_at=0, seed=12))
            wait_status(port, lambda s: s["models"]["credit-v1"]["events"] == 6000)
            deadline = time.monotonic() + 20
            while not second.alerts and time.monotonic() < deadline:
                time.sleep(0.1)
            assert second.alerts and not receiver.alerts  # the new sink, only

            moved = {**doc, "sinks": [{"type": "webhook", "url": second.url}]}
            moved["kafka"] = {**doc["kafka"], "topic": "elsewhere"}
            write_config(tmp_path, moved)
            proc.send_signal(signal.SIGHUP)
            s = wait_status(port, lambda s: s["config"]["last_reload_successful"] is False)
            assert "kafka" in s["config"]["last_reload_error"]
            _, body = get(port, "/metrics")
            assert b"driftline_config_last_reload_successful 0.0" in body
            produce(broker.bootstrap, topic, loan_events(500, drift_at=0, seed=13))
            wait_status(port, lambda s: s["models"]["credit-v1"]["events"] == 6500)  # still on
        log = output_of(config)
        assert "configuration reload refused" in log and "need a restart: kafka" in log
    finally:
        second.stop()
