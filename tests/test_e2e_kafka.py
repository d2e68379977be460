"""End to end against a real Kafka-protocol broker (Tansu), a real webhook receiver over
HTTP, real Prometheus tooling, and the real ``driftline`` command."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from monitor.app.build import build
from monitor.app.daemon import Daemon
from monitor.config.schema import parse_config
from monitor.demo.broker import EmbeddedBroker, free_port

from .conftest import WebhookReceiver, accepted, daemon_config, loan_events, produce

pytestmark = pytest.mark.e2e  # a real broker (and real services)


async def run_until(
    daemon: Daemon,
    done: Callable[[], bool],
    timeout: float = 60.0,
    then: Callable[[Daemon], Awaitable[Any]] | None = None,
) -> Any:
    task = asyncio.create_task(daemon.run())
    deadline = time.monotonic() + timeout
    try:
        while not done():
            if task.done():
                raise AssertionError(f"daemon stopped early: {task.result()!r}")
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the daemon")
            await asyncio.sleep(0.1)
        return await then(daemon) if then is not None else None
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0


def get(port: int | None, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_drift_on_one_feature_alerts_the_webhook_naming_it(
    broker: EmbeddedBroker, topic: str, receiver: WebhookReceiver
) -> None:
    produce(broker.bootstrap, topic, loan_events(6000, drift_at=3500))
    cfg = parse_config(
        daemon_config(broker.bootstrap, topic, sinks=[{"type": "webhook", "url": receiver.url}]),
        env={},
    )
    daemon = build(cfg)
    asyncio.run(
        run_until(
            daemon,
            lambda: accepted(daemon) >= 6000 and len(receiver.alerts) >= 3,
        )
    )
    firing = [a for a in receiver.alerts if a["status"] == "firing"]
    assert {a["feature"] for a in firing} == {"salary"}
    assert {a["detector"] for a in firing} >= {"ks", "psi"}
    for a in firing:
        assert a["id"].startswith("dl-") and a["model"] == "credit-v1"
        assert a["severity"] in ("warning", "critical")
        assert a["score"] >= a["threshold"] or a["detector"] == "adwin"
        assert a["started_at"].endswith("Z") and a["reference_summary"]["n"] == 1000
        assert 3500 <= a["start_event"] < 3500 + 1100
    ks = next(a for a in firing if a["detector"] == "ks")
    assert ks["p_value"] is not None and ks["p_value"] < 1e-5


def test_a_stable_stream_raises_no_alert(
    broker: EmbeddedBroker, topic: str, receiver: WebhookReceiver
) -> None:
    produce(broker.bootstrap, topic, loan_events(6000, drift_at=None, seed=4))
    cfg = parse_config(
        daemon_config(broker.bootstrap, topic, sinks=[{"type": "webhook", "url": receiver.url}]),
        env={},
    )
    daemon = build(cfg)
    asyncio.run(run_until(daemon, lambda: accepted(daemon) >= 6000))
    time.sleep(0.3)
    assert receiver.alerts == []


def test_garbage_is_dead_lettered_counted_and_consumption_goes_on(
    broker: EmbeddedBroker, topic: str
) -> None:
    good = loan_events(3000, drift_at=None, seed=2)
    garbage = {
        b"{truncated": "bad_json",
        b'"just a string"': "not_an_object",
        b'{"features": {"salary": 1}}': "missing_model",
        b'{"model": "nobody", "features": {}}': "unknown_model",
        b'{"model": "credit-v1"}': "missing_features",
        b'{"model": "credit-v1", "features": {}, "ts": "never"}': "bad_timestamp",
        b"{" + b" " * 50_000 + b"}": "oversized",
    }
    values = good[:1500] + list(garbage) + good[1500:]
    produce(broker.bootstrap, topic, values)
    doc = daemon_config(broker.bootstrap, topic)
    doc["kafka"]["max_record_bytes"] = 20_000
    cfg = parse_config(doc, env={})
    daemon = build(cfg)
    asyncio.run(
        run_until(
            daemon,
            lambda: (
                accepted(daemon) >= 3000
                and sum(daemon.snapshot().daemon.dead_lettered.values()) >= len(garbage)
            ),
        )
    )
    assert accepted(daemon) == 3000
    expected = {reason: 1 for reason in garbage.values()}
    assert dict(daemon.snapshot().pipeline.rejected) == expected
    assert dict(daemon.snapshot().daemon.dead_lettered) == expected

    async def read_dlq() -> list[Any]:
        consumer = AIOKafkaConsumer(
            f"{topic}.dlq",
            bootstrap_servers=broker.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            max_partition_fetch_bytes=8_000_000,
            fetch_max_bytes=8_000_000,
        )
        await consumer.start()
        try:
            got: list[Any] = []
            deadline = time.monotonic() + 20
            while len(got) < len(garbage) and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    got.extend(records)
            return got
        finally:
            await consumer.stop()

    records = asyncio.run(read_dlq())
    assert len(records) == len(garbage)
    for r in records:
        headers = dict(r.headers)
        assert headers["driftline-reason"].decode() == garbage[r.value]  # value unchanged
        assert headers["driftline-source"].decode().startswith(f"{topic}/0/")
        assert r.key == b"credit-v1"


def test_metrics_parse_and_pass_promtool(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    produce(broker.bootstrap, topic, [*loan_events(4000, drift_at=2000), b"nope"])
    doc = daemon_config(broker.bootstrap, topic, sinks=[{"type": "log", "stream": "stdout"}])
    doc["state"] = {"path": str(tmp_path), "checkpoint_every_events": 1000}
    daemon = build(parse_config(doc, env={}))

    async def scrape(d: Daemon) -> bytes:
        return await asyncio.to_thread(lambda: get(d.http_port, "/metrics")[1])

    text = asyncio.run(run_until(daemon, lambda: accepted(daemon) >= 4000, then=scrape)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "driftline_events",
        "driftline_events_rejected",
        "driftline_drift_score",
        "driftline_drift_active",
        "driftline_alerts",
        "driftline_consumer_lag_records",
        "driftline_checkpoints",
        "driftline_checkpoint_size_bytes",
        "driftline_state_restores",
        "driftline_alerts_sent",
        "driftline_alert_delivery_failures",
        "driftline_outbox_alerts",
    ):
        assert name in families, name
    owned = [s.labels for s in families["driftline_partition_owned"].samples if s.value == 1]
    assert owned == [{"partition": "0"}]
    assert [s.labels for s in families["driftline_model_owned"].samples] == [{"model": "credit-v1"}]
    events = {
        s.labels["model"]: s.value
        for s in families["driftline_events"].samples
        if s.name == "driftline_events_total"
    }
    assert events == {"credit-v1": 4000.0}
    rejected = {
        s.labels["reason"]: s.value
        for s in families["driftline_events_rejected"].samples
        if s.name.endswith("_total")
    }
    assert rejected["bad_json"] == 1.0
    scores = {
        (s.labels["feature"], s.labels["detector"])
        for s in families["driftline_drift_score"].samples
    }
    assert ("salary", "ks") in scores and ("elevel", "categorical") in scores
    active = {
        (s.labels["feature"], s.labels["detector"]): s.value
        for s in families["driftline_drift_active"].samples
    }
    assert active[("salary", "ks")] == 1.0 and active[("age", "ks")] == 0.0
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package 'prometheus') is needed; scripts/test.sh installs it"
    lint = subprocess.run(
        [promtool, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()
    assert lint.stdout.decode().strip() == "" and lint.stderr.decode().strip() == ""


def test_probes_and_status(broker: EmbeddedBroker, topic: str) -> None:
    produce(broker.bootstrap, topic, loan_events(1500, drift_at=None))
    daemon = build(parse_config(daemon_config(broker.bootstrap, topic), env={}))

    async def probe(d: Daemon) -> dict[str, Any]:
        out = {}
        for path in ("/healthz", "/readyz", "/status"):
            out[path] = await asyncio.to_thread(get, d.http_port, path)
        return out

    got = asyncio.run(run_until(daemon, lambda: accepted(daemon) >= 1500, then=probe))
    assert got["/healthz"][0] == 200 and got["/readyz"][0] == 200
    status = json.loads(got["/status"][1])
    model = status["models"]["credit-v1"]
    assert model["events"] == 1500 and model["reference"]["ready"] is True
    salary = model["series"]["salary"]["detectors"]
    assert set(salary) == {"cusum", "ks", "psi"}
    assert set(model["series"]["elevel"]["detectors"]) == {"categorical", "categorical_cusum"}
    assert salary["ks"]["window_size"] == 500 and salary["ks"]["reference_size"] == 1000
    assert status["kafka"]["connected"] is True and status["kafka"]["assignment"] == [f"{topic}/0"]


# -- the real command ----------------------------------------------------------------------
def write_config(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "driftline.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def start_cli(config: Path, cwd: Path | None = None, **env_over: str) -> subprocess.Popen[bytes]:
    """``driftline run`` as a child process; its output goes to ``run.log`` beside the
    config (a file, so a chatty child can never block on a full pipe). Set
    DRIFTLINE_TEST_LOG_LEVEL=debug to see aiokafka's side of a failing test there."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_over}
    level = os.environ.get("DRIFTLINE_TEST_LOG_LEVEL", "info")
    with (config.parent / "run.log").open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "monitor",
                "run",
                "-c",
                str(config),
                "--log-level",
                level,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )


def wait_events(
    proc: subprocess.Popen[bytes], port: int, total: int, log_dir: Path, timeout: float = 90
) -> None:
    """Until the ``driftline run`` child has processed ``total`` events over all models
    (its log's tail in the failure if it dies first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            code, body = get(port, "/status")
            models = json.loads(body)["models"] if code == 200 else {}
            if models and sum(m["events"] for m in models.values()) >= total:
                return
        except OSError:
            pass
        assert proc.poll() is None, (log_dir / "run.log").read_text()[-3000:]
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"never reached {total} events")


def output_of(config: Path) -> str:
    return (config.parent / "run.log").read_text()


def wait_http(port: int, path: str, ok: Callable[[int, bytes], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ok(*get(port, path)):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{path} never became ready")


def test_sigterm_finishes_commits_and_exits_0(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    n = 5000
    produce(broker.bootstrap, topic, loan_events(n, drift_at=None))
    port = free_port()
    doc = daemon_config(broker.bootstrap, topic)
    doc["http"]["port"] = port
    config = write_config(tmp_path, doc)
    proc = start_cli(config)
    try:
        wait_http(
            port,
            "/status",
            lambda code, body: (
                code == 200 and json.loads(body)["models"]["credit-v1"]["events"] >= n
            ),
        )
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        code = proc.wait(20)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = output_of(config)
    assert code == 0, stderr
    assert took < 10.5, took  # shutdown_timeout_s (10 s) bounds the stop
    assert "stop requested" in stderr and "stopped" in stderr

    async def committed() -> int | None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap, group_id=f"{topic}-g", enable_auto_commit=False
        )
        await consumer.start()
        try:
            return await consumer.committed(TopicPartition(topic, 0))
        finally:
            await consumer.stop()

    assert asyncio.run(committed()) == n


def test_bad_config_exits_2_listing_every_error(tmp_path: Path) -> None:
    doc = daemon_config("127.0.0.1:1", "predictions")
    doc["http"]["port"] = 99999
    doc["models"]["credit-v1"]["features"]["salary"] = "numerc"
    doc["sinks"] = [{"type": "webhook", "url": "${NOT_SET_ANYWHERE_HOOK}"}]
    start = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "run",
            "--config",
            str(write_config(tmp_path, doc)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "NOT_SET_ANYWHERE_HOOK"},
    )
    assert out.returncode == 2
    for path in ("http.port", "models.credit-v1.features.salary.type", "sinks.0.url"):
        assert path in out.stderr, out.stderr
    assert "NOT_SET_ANYWHERE_HOOK" in out.stderr
    assert time.monotonic() - start < 30  # refused before touching Kafka
    check = subprocess.run(
        [sys.executable, "-m", "monitor", "check-config", str(tmp_path / "driftline.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 2 and check.stderr.count("\n  ") >= 3


def test_unreachable_broker_keeps_serving_health_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    doc = daemon_config(f"127.0.0.1:{free_port()}", "predictions")
    doc["http"]["port"] = port
    config = write_config(tmp_path, doc)
    proc = start_cli(config)
    try:
        wait_http(port, "/healthz", lambda code, _: code == 200)
        time.sleep(2.0)  # a few connection attempts
        assert proc.poll() is None, "the daemon must not exit (no crash loop)"
        assert get(port, "/readyz")[0] == 200  # a sidecar's readiness ignores broker outages
        status = json.loads(get(port, "/status")[1])
        assert status["kafka"]["connected"] is False and status["kafka"]["last_error"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = output_of(config)
    assert "connecting to Kafka at" in stderr and "retrying in" in stderr


def test_events_are_json_lines_in_the_log_sink(
    broker: EmbeddedBroker, topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    produce(broker.bootstrap, topic, loan_events(4000, drift_at=2000))
    doc = daemon_config(broker.bootstrap, topic, sinks=[{"type": "log", "stream": "stdout"}])
    daemon = build(parse_config(doc, env={}))
    asyncio.run(run_until(daemon, lambda: accepted(daemon) >= 4000))
    lines = [
        orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    assert lines and all(x["event"] == "driftline_alert" for x in lines)
    firing = {x["feature"] for x in lines if x["status"] == "firing"}
    assert "salary" in firing and firing <= {"salary", None}  # None: a model-level alert


def test_a_failing_webhook_neither_blocks_consumption_nor_loses_alerts(
    broker: EmbeddedBroker, topic: str, receiver: WebhookReceiver
) -> None:
    receiver.fail_first = 3  # HTTP 500 for the first three requests, then 200
    produce(broker.bootstrap, topic, loan_events(6000, drift_at=3000, seed=6))
    sinks = [{"type": "webhook", "url": receiver.url, "retries": 6, "backoff_s": 0.05}]
    daemon = build(parse_config(daemon_config(broker.bootstrap, topic, sinks=sinks), env={}))
    webhook = daemon.sinks[0]
    asyncio.run(
        run_until(
            daemon,
            lambda: (
                accepted(daemon) >= 6000
                and webhook.stats().outbox_depth == 0
                and len(receiver.alerts) > 0
            ),
        )
    )
    stats = webhook.stats()
    assert stats.retries >= 3 and stats.failures == {"http_5xx": 3}
    firing = [a for a in receiver.alerts if a["status"] == "firing"]
    assert any(a["feature"] == "salary" for a in firing)
    ids = [(a["id"], a["status"], a["severity"]) for a in receiver.alerts]
    assert len(ids) == len(set(ids))  # retried requests were not delivered twice
    assert len(receiver.alerts) == stats.sent  # every alert accepted arrived
    episodes: dict[tuple[Any, ...], set[str]] = {}
    for a in receiver.alerts:
        key = (a["model"], a["feature"], a["detector"], a["start_event"])
        episodes.setdefault(key, set()).add(a["id"])
    assert all(len(v) == 1 for v in episodes.values())  # one id per episode


def test_delayed_labels_on_their_topic_raise_a_concept_drift_alert(
    broker: EmbeddedBroker, topic: str, receiver: WebhookReceiver
) -> None:
    from monitor.demo.broker import create_topics_sync

    from .test_labels import events as sea_events

    labels_topic = f"{topic}.labels"
    create_topics_sync(broker.bootstrap, [labels_topic])
    preds, labels = sea_events(with_labels=False)
    produce(
        broker.bootstrap,
        topic,
        [pe.replace(b'"model":"sea"', b'"model":"credit-v1"') for pe in preds],
    )
    doc = daemon_config(broker.bootstrap, topic, sinks=[{"type": "webhook", "url": receiver.url}])
    doc["kafka"]["labels_topic"] = labels_topic
    doc["models"] = {
        "credit-v1": {
            "features": {"x0": "numeric", "x1": "numeric", "x2": "numeric"},
            "prediction": "numeric",
        }
    }
    daemon = build(parse_config(doc, env={}))

    async def labels_later(d: Daemon) -> bytes:
        # Ground truth arrives after the predictions were consumed, as in production.
        await asyncio.to_thread(
            produce,
            broker.bootstrap,
            labels_topic,
            [lb.replace(b'"model":"sea"', b'"model":"credit-v1"') for lb in labels]
            + [b'{"model": "credit-v1", "label": 1}'],  # no id: dead-lettered
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            d.snapshot().pipeline.models["credit-v1"].performance.labelled >= 10000
            and d.snapshot().daemon.dead_lettered.get("missing_id") == 1
            and any(a["detector"] == "concept_drift" for a in receiver.alerts)
        ):
            await asyncio.sleep(0.1)
        return await asyncio.to_thread(lambda: get(d.http_port, "/metrics")[1])

    text = asyncio.run(
        run_until(daemon, lambda: accepted(daemon) >= 10000, then=labels_later)
    ).decode()
    concept = [a for a in receiver.alerts if a["detector"] == "concept_drift"]
    assert concept, "no concept drift alert reached the webhook"
    assert concept[0]["status"] == "firing" and concept[0]["feature"] is None
    assert concept[0]["error_before"] < concept[0]["error_after"]
    assert daemon.snapshot().daemon.dead_lettered["missing_id"] == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    joined = next(
        s.value
        for s in families["driftline_labels_joined"].samples
        if s.name == "driftline_labels_joined_total"
    )
    assert joined == 10000
    assert "driftline_production_accuracy" in families
    # 1000 quiet labelled pairs (this config) after the change: the episode has resolved.
    resolved = [a for a in concept if a["status"] == "resolved"]
    assert resolved and resolved[0]["id"] == concept[0]["id"]
    assert next(s.value for s in families["driftline_concept_drift_active"].samples) == 0.0
