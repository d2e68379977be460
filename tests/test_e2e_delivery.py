"""Alert delivery with the real things: Alertmanager and Prometheus from Debian, a real
webhook receiver that fails or is down, a real broker for the Kafka sink, and the real
``driftline`` command killed with SIGKILL."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer

from monitor.app.build import build
from monitor.app.daemon import Daemon
from monitor.config.schema import parse_config
from monitor.demo.broker import EmbeddedBroker, create_topics_sync, free_port

from .conftest import (
    Service,
    WebhookReceiver,
    accepted,
    binary,
    daemon_config,
    loan_events,
    produce,
)
from .test_deploy import RULES, dashboard_expressions, expressions
from .test_e2e_kafka import get, run_until, start_cli, wait_events, write_config
from .test_sinks import verify_snippet

pytestmark = pytest.mark.e2e  # a real broker (and real services)


def episode_stream(seed: int = 0) -> list[bytes]:
    """3000 normal events, 1500 with salaries 30% lower, 4500 normal again: alerts fire
    and then resolve."""
    normal = loan_events(7500, drift_at=None, seed=seed)
    low = loan_events(1500, drift_at=0, seed=seed + 1)
    values = normal[:3000] + low + normal[3000:]
    return [
        orjson.dumps({**orjson.loads(v), "id": f"e{i}", "ts": 1764158400.0 + i})
        for i, v in enumerate(values)
    ]


def test_alertmanager_receives_firing_then_resolved(
    broker: EmbeddedBroker, topic: str, alertmanager: Service, receiver: WebhookReceiver
) -> None:
    produce(broker.bootstrap, topic, episode_stream())
    sinks = [{"type": "alertmanager", "url": f"http://127.0.0.1:{alertmanager.port}"}]
    daemon = build(parse_config(daemon_config(broker.bootstrap, topic, sinks=sinks), env={}))

    def resolved_salary() -> bool:
        return any(
            a["status"] == "resolved" and a["labels"].get("feature") == "salary"
            for a in receiver.alerts
        )

    async def wait_for_delivery(d: Daemon) -> None:
        deadline = time.monotonic() + 30
        while not resolved_salary() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)

    asyncio.run(
        run_until(daemon, lambda: accepted(daemon) >= 9000,
                  then=wait_for_delivery)
    )  # fmt: skip
    salary = [a for a in receiver.alerts if a["labels"].get("feature") == "salary"]
    assert [a["status"] for a in salary][:1] == ["firing"] and resolved_salary()
    first = salary[0]
    assert first["labels"]["alertname"] == "DriftlineFeatureDrift"
    assert first["labels"]["model"] == "credit-v1" and first["labels"]["alert_id"].startswith("dl-")
    assert {"summary", "score", "threshold"} <= set(first["annotations"])
    ended = [a for a in salary if a["status"] == "resolved"]
    assert ended[0]["endsAt"].startswith("2025-")  # the episode's end, in event time


def test_prometheus_scrapes_the_drift_score(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    produce(broker.bootstrap, topic, loan_events(4000, drift_at=2000))
    doc = daemon_config(broker.bootstrap, topic)
    doc["http"]["port"] = free_port()
    daemon = build(parse_config(doc, env={}))
    conf = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "driftline",
                "static_configs": [{"targets": [f"127.0.0.1:{doc['http']['port']}"]}],
            }
        ],
    }
    (tmp_path / "prom.yml").write_text(yaml.safe_dump(conf))
    port = free_port()
    prom = Service(
        [
            binary("prometheus"),
            f"--config.file={tmp_path / 'prom.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        port,
        tmp_path / "prom.log",
    )
    query = urllib.parse.quote('driftline_drift_score{feature="salary",detector="ks"}')

    answers: dict[str, Any] = {}

    async def ask(d: Daemon) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 40  # the first scrape lands some seconds in
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not result:
            code, body = await asyncio.to_thread(get, port, f"/api/v1/query?query={query}")
            result = json.loads(body)["data"]["result"] if code == 200 else []
            await asyncio.sleep(0.5)
        # every rule's and every dashboard panel's expression, against the scraped daemon
        for expr in expressions() + dashboard_expressions():
            q = urllib.parse.quote(expr)
            code, body = await asyncio.to_thread(get, port, f"/api/v1/query?query={q}")
            answers[expr] = (code, json.loads(body))
        code, body = await asyncio.to_thread(get, port, "/api/v1/rules")
        answers["/api/v1/rules"] = (code, json.loads(body))
        return result

    try:
        result = asyncio.run(
            run_until(daemon, lambda: accepted(daemon) >= 4000,
                      then=ask, timeout=90)
        )  # fmt: skip
    finally:
        prom.stop()
    assert result, "Prometheus never had driftline_drift_score for salary"
    for expr, (code, answer) in answers.items():
        assert code == 200 and answer["status"] == "success", (expr, answer)
    groups = answers["/api/v1/rules"][1]["data"]["groups"]
    loaded = [r for g in groups for r in g["rules"]]
    assert len(loaded) == len(expressions())
    assert all(r["health"] != "err" for r in loaded), [r for r in loaded if r["health"] == "err"]
    ratio = answers["driftline_drift_score / driftline_drift_threshold"][1]["data"]["result"]
    assert ratio, "the recording rule's expression finds driftline's series"
    scores = answers['driftline_drift_score{model=~".*", feature=~".*"}'][1]["data"]["result"]
    assert {r["metric"]["feature"] for r in scores} >= {"salary", "age"}  # the dashboard's panel
    (series,) = result
    assert series["metric"]["model"] == "credit-v1" and series["metric"]["job"] == "driftline"
    assert float(series["value"][1]) > 0


def run_cli(doc: dict[str, Any], tmp: Path, until_events: int) -> subprocess.Popen[bytes]:
    tmp.mkdir(parents=True, exist_ok=True)
    proc = start_cli(write_config(tmp, doc))
    wait_events(proc, doc["http"]["port"], until_events, tmp)
    return proc


def test_receiver_down_while_the_daemon_is_killed_and_restarted_loses_nothing(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    produce(broker.bootstrap, topic, episode_stream(seed=4))
    reference = WebhookReceiver().start()  # an uninterrupted run, receiver up throughout
    hook_port = free_port()
    try:
        doc = daemon_config(
            broker.bootstrap, topic, sinks=[{"type": "webhook", "url": reference.url}]
        )
        doc["http"]["port"] = free_port()
        doc["kafka"]["group_id"] = "ref"
        doc["state"] = {"path": str(tmp_path / "ref")}
        proc = run_cli(doc, tmp_path / "r", 9000)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        reference.stop()
    expected = {(a["id"], a["status"], a["severity"]) for a in reference.alerts}
    assert any(s == "resolved" for _, s, _ in expected)

    url = f"http://127.0.0.1:{hook_port}/hook"  # nothing listens there yet
    doc = daemon_config(broker.bootstrap, topic, sinks=[{"type": "webhook", "url": url}])
    doc["http"]["port"] = free_port()
    doc["state"] = {"path": str(tmp_path / "state")}
    proc = run_cli(doc, tmp_path / "a", 9000)
    deadline = time.monotonic() + 30
    while True:  # every alert of the stream is waiting in the outbox
        _code, body = get(doc["http"]["port"], "/status")
        if json.loads(body)["sinks"]["webhook"]["outbox_depth"] == len(expected):
            break
        assert time.monotonic() < deadline, body[-500:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)

    receiver = WebhookReceiver(port=hook_port).start()  # the receiver comes back
    try:
        doc["http"]["port"] = free_port()
        proc = run_cli(doc, tmp_path / "b", 9000)
        deadline = time.monotonic() + 30
        while len({(a["id"], a["status"], a["severity"]) for a in receiver.alerts}) < len(expected):
            assert time.monotonic() < deadline, "alerts missing after the restart"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        receiver.stop()
    got = [(a["id"], a["status"], a["severity"]) for a in receiver.alerts]
    assert set(got) == expected  # every alert, with the ids of the uninterrupted run
    assert "alert(s) from the outbox to deliver" in (tmp_path / "b" / "run.log").read_text()


def test_signed_requests_verify_and_secrets_stay_out_of_logs_and_status(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    produce(broker.bootstrap, topic, loan_events(5000, drift_at=2500, seed=8))
    receiver = WebhookReceiver().start()
    receiver.fail_first = 2  # errors get logged: they must not carry the secrets
    secret, token = "whsec-Q7f2-do-not-log", "tok-8c1e-do-not-log"
    url = receiver.url + "?key=url-secret-do-not-log"
    sinks = [{"type": "webhook", "url": url, "secret": secret, "backoff_s": 0.05}]
    doc = daemon_config(broker.bootstrap, topic, sinks=sinks)
    doc["http"] = {"host": "127.0.0.1", "port": free_port(), "token": token}
    tmp_path.mkdir(exist_ok=True)
    proc = start_cli(write_config(tmp_path, doc))
    port = doc["http"]["port"]
    try:
        deadline = time.monotonic() + 60
        while not receiver.requests:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        assert get(port, "/status")[0] == 401  # no token
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/status", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            status = resp.read().decode()
        assert get(port, "/metrics")[0] == 200 and get(port, "/readyz")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        receiver.stop()
    verify = verify_snippet()
    for headers, body in receiver.requests:
        assert verify(secret.encode(), headers, body)
        assert not verify(secret.encode(), headers, body.replace(b"firing", b"resolved"))
    log = (tmp_path / "run.log").read_text()
    assert "HTTP 500" in log  # the failures were logged ...
    for s in (secret, token, "url-secret-do-not-log"):
        assert s not in log and s not in status  # ... without any secret


def test_the_kafka_sink_writes_alerts_keyed_by_model(broker: EmbeddedBroker, topic: str) -> None:
    produce(broker.bootstrap, topic, loan_events(5000, drift_at=2500, seed=9))
    alerts_topic = f"{topic}.alerts"
    create_topics_sync(broker.bootstrap, [alerts_topic])
    sinks = [{"type": "kafka", "topic": alerts_topic}]
    daemon = build(parse_config(daemon_config(broker.bootstrap, topic, sinks=sinks), env={}))
    asyncio.run(
        run_until(
            daemon,
            lambda: (
                accepted(daemon) >= 5000
                and daemon.sinks[0].stats().sent > 0
                and daemon.sinks[0].stats().outbox_depth == 0
            ),
        )
    )
    sent = daemon.sinks[0].stats().sent

    async def read() -> list[Any]:
        consumer = AIOKafkaConsumer(
            alerts_topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            out: list[Any] = []
            deadline = time.monotonic() + 20
            while len(out) < sent and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out += records
            return out
        finally:
            await consumer.stop()

    records = asyncio.run(read())
    assert len(records) == sent
    assert {r.key for r in records} == {b"credit-v1"}
    alerts = [orjson.loads(r.value)["alert"] for r in records]
    assert any(a["feature"] == "salary" and a["status"] == "firing" for a in alerts)
