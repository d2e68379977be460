"""What a hostile or unlucky world does to a running daemon, against a real broker (Tansu),
real HTTP receivers and the real ``driftline`` command: poison records, a backlog on both
topics, a sink down at start, the broker killed and restarted empty under load, epoch
milliseconds, and a restart in the middle of a drift with the configuration as written."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from monitor.app.build import build
from monitor.config.schema import parse_config
from monitor.demo.broker import EmbeddedBroker, create_topics_sync, free_port

from .conftest import (
    WebhookReceiver,
    accepted,
    daemon_config,
    loan_events,
    produce,
    sea_stream,
)
from .test_e2e_kafka import get, output_of, run_until, start_cli, wait_http, write_config

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def cli(config: Path, cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``driftline run`` as a child, stopped with SIGTERM at the end (exit 0 required),
    killed if the test failed first."""
    proc = start_cli(config, cwd=cwd)
    try:
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, output_of(config)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def status(port: int) -> dict[str, Any]:
    code, body = get(port, "/status")
    assert code == 200, body
    return dict(json.loads(body))


def wait_status(port: int, ok: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = status(port)
            if ok(last):
                return last
        except (OSError, AssertionError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out; last status: {json.dumps(last)[:2000]}")


def event(i: int, **over: Any) -> bytes:
    doc: dict[str, Any] = {
        "model": "credit-v1",
        "ts": 1764158400.0 + i,
        "features": {"salary": 52000.0, "age": 41, "elevel": "2"},
        "prediction": 0.5,
    }
    doc.update(over)
    return orjson.dumps(doc)


async def read_topic(bootstrap: str, topic: str, n: int, timeout: float = 20) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


def test_poison_records_are_dead_lettered_once_and_never_read_again_after_a_restart(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    good = loan_events(3000, drift_at=None, seed=8)
    poison = [
        # valid JSON with a number beyond float64: accepted, counted as out of range
        b'{"model": "credit-v1", "features": {"salary": 1e400, "age": 30, "elevel": "1"}}',
        # epoch milliseconds: accepted, the same instant as seconds
        event(0, ts=1764158400000),
        # a 2 KB record nested a thousand levels deep
        b'{"model": "credit-v1", "features": {}, "label": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        # invalid UTF-8 inside a feature string
        b'{"model": "credit-v1", "features": {"elevel": "\xff\xfe"}}',
        b"\x00\x01\x02 not json at all",
    ]
    produce(broker.bootstrap, topic, good[:1500] + poison + good[1500:])
    port = free_port()
    doc = daemon_config(broker.bootstrap, topic, state={"path": str(tmp_path / "state")})
    doc["http"]["port"] = port
    config = write_config(tmp_path, doc)

    with cli(config):
        # The dead letters go out beside the batch that read them: wait for both.
        s = wait_status(
            port,
            lambda s: s["models"]["credit-v1"]["events"] == 3002 and s["dead_letters"]["sent"],
        )
        assert s["dead_letters"]["sent"] == {"bad_json": 3}
        assert s["models"]["credit-v1"]["series"]["salary"]["out_of_range"] == 1
        assert s["models"]["credit-v1"]["last_event_ts"] < 2e9  # never year 55,000
    dlq = asyncio.run(read_topic(broker.bootstrap, f"{topic}.dlq", 3))
    assert sorted(r.offset for r in dlq) == [0, 1, 2]
    assert {dict(r.headers)["driftline-reason"] for r in dlq} == {b"bad_json"}
    log = output_of(config)
    assert "rejected record (bad_json)" in log  # every reject is logged (rate-limited)

    with cli(config):  # a restart: resumes after what was processed
        produce(broker.bootstrap, topic, loan_events(100, drift_at=None, seed=9))
        s = wait_status(port, lambda s: s["models"]["credit-v1"]["events"] == 3102)
        assert s["dead_letters"]["sent"] == {}  # nothing was read twice
    assert len(asyncio.run(read_topic(broker.bootstrap, f"{topic}.dlq", 4, timeout=3))) == 3


def test_a_backlog_on_both_topics_joins_every_label_and_alerts_the_concept_drift(
    broker: EmbeddedBroker, topic: str, receiver: WebhookReceiver
) -> None:
    """Both topics filled first, then the daemon started: the labels partition is read far
    ahead of the predictions, and every label still meets its prediction."""
    labels_topic = f"{topic}.labels"
    create_topics_sync(broker.bootstrap, [labels_topic])
    preds, labels = sea_stream(12_000, 12_000, inline=False)
    produce(broker.bootstrap, labels_topic, labels, key=b"sea")
    produce(broker.bootstrap, topic, preds, key=b"sea")
    doc = daemon_config(broker.bootstrap, topic, sinks=[{"type": "webhook", "url": receiver.url}])
    doc["kafka"]["labels_topic"] = labels_topic
    doc["models"] = {
        "sea": {
            "features": {"x0": "numeric", "x1": "numeric", "x2": "numeric"},
            "prediction": "numeric",
            "task": "classification",
        }
    }
    daemon = build(parse_config(doc, env={}))

    def joined() -> int:
        return int(daemon.snapshot().pipeline.models["sea"].performance.joined)

    asyncio.run(
        run_until(
            daemon,
            lambda: (
                joined() == 24_000
                and any(a["detector"] == "concept_drift" for a in receiver.alerts)
            ),
            timeout=120,
        )
    )
    perf = daemon.snapshot().pipeline.models["sea"].performance
    assert (perf.joined, perf.orphan, perf.expired, perf.labelled) == (24_000, 0, 0, 24_000)
    concept = next(a for a in receiver.alerts if a["detector"] == "concept_drift")
    assert abs(concept["change_at"] - 12_000) < 300
    assert concept["error_before"] < concept["error_after"]


def test_a_sink_whose_broker_is_down_at_start_stops_nothing(
    broker: EmbeddedBroker, topic: str, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    produce(broker.bootstrap, topic, loan_events(5000, drift_at=3000))
    doc = daemon_config(
        broker.bootstrap,
        topic,
        sinks=[
            {"type": "kafka", "topic": "alerts", "bootstrap_servers": f"127.0.0.1:{free_port()}"},
            {"type": "webhook", "url": receiver.url},
        ],
        state={"path": str(tmp_path / "state")},
    )
    daemon = build(parse_config(doc, env={}))

    async def check(d: Any) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while d.snapshot().daemon.sinks["kafka"].failures.get("kafka", 0) < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        return dict(await asyncio.to_thread(lambda: status(d.http_port)))

    s = asyncio.run(
        run_until(daemon, lambda: accepted(daemon) == 5000 and len(receiver.alerts) > 0, then=check)
    )
    assert s["sinks"]["kafka"]["outbox_depth"] > 0 and s["sinks"]["webhook"]["sent"] > 0
    assert (tmp_path / "state" / "outbox" / "kafka.outbox").exists()  # kept for later


class Producer(threading.Thread):
    """Load: events at a steady pace until stopped, surviving the broker's absence."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.stop_event = threading.Event()
        self.sent = 0

    def run(self) -> None:
        values = loan_events(100_000, drift_at=None, seed=11)

        async def go() -> None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
            await producer.start()
            try:
                while not self.stop_event.is_set():
                    try:
                        await producer.send_and_wait(self.topic, values[self.sent % len(values)])
                        self.sent += 1
                    except Exception:
                        await asyncio.sleep(0.2)
                    if self.sent % 50 == 0:
                        await asyncio.sleep(0.01)
            finally:
                await producer.stop()

        asyncio.run(go())


def test_the_broker_killed_and_restarted_empty_under_load_is_shown_and_survived(
    tmp_path: Path,
) -> None:
    kafka_port = free_port()
    broker = EmbeddedBroker(port=kafka_port).start()
    topics = ["p", "p.dlq"]
    create_topics_sync(broker.bootstrap, topics)
    port = free_port()
    doc = daemon_config(broker.bootstrap, "p", state={"path": str(tmp_path / "state")})
    doc["http"]["port"] = port
    config = write_config(tmp_path, doc)
    load = Producer(broker.bootstrap, "p")
    load.start()
    proc = start_cli(config)
    try:
        wait_status(port, lambda s: s["models"]["credit-v1"]["events"] >= 3000)
        broker.kill()  # under load
        killed = time.monotonic()
        s = wait_status(port, lambda s: s["kafka"]["connected"] is False, timeout=15)
        assert time.monotonic() - killed < 10  # a lost broker shows within seconds
        assert s["kafka"]["last_error"] and s["ready"] is True
        metrics = get(port, "/metrics")[1].decode()
        assert "driftline_kafka_connected 0.0" in metrics
        before = s["models"]["credit-v1"]["events"]

        broker = EmbeddedBroker(port=kafka_port).start()  # back, but empty
        create_topics_sync(broker.bootstrap, topics)
        s = wait_status(
            port,
            lambda s: (
                s["kafka"]["connected"]
                and s["models"]["credit-v1"]["events"] >= before + 1000
                and sum(s["kafka"]["offset_resets"].values()) >= 1
            ),
            timeout=120,
        )
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        load.stop_event.set()
        if proc.poll() is None:
            proc.kill()
        broker.stop()
    log = output_of(config)
    assert "lost the connection to Kafka" in log and "connected to Kafka again" in log
    assert "starting over at" in log or "offsets moved back" in log  # logged, not silent


@pytest.mark.parametrize(("saved", "new"), [(3000, 2000), (3000, 4000)])
def test_a_saved_position_the_new_log_cannot_honour_starts_over_and_says_so(
    tmp_path: Path, saved: int, new: int
) -> None:
    """The broker came back empty (or the topic was recreated): with fewer records than
    the checkpoint's position, or more but other ones, the partition starts over at the
    beginning of the new log, logged and counted; no event of it is skipped."""
    kafka_port = free_port()
    broker = EmbeddedBroker(port=kafka_port).start()
    create_topics_sync(broker.bootstrap, ["p", "p.dlq"])
    produce(broker.bootstrap, "p", loan_events(saved, drift_at=None, seed=1))
    port = free_port()
    doc = daemon_config(broker.bootstrap, "p", state={"path": str(tmp_path / "state")})
    doc["http"]["port"] = port
    config = write_config(tmp_path, doc)
    try:
        with cli(config):
            wait_status(port, lambda s: s["models"]["credit-v1"]["events"] == saved)
        broker.stop()
        broker = EmbeddedBroker(port=kafka_port).start()
        create_topics_sync(broker.bootstrap, ["p", "p.dlq"])
        produce(broker.bootstrap, "p", loan_events(new, drift_at=None, seed=2))
        with cli(config):
            s = wait_status(port, lambda s: s["models"]["credit-v1"]["events"] == saved + new)
            reason = "after_log_end" if new < saved else "log_replaced"
            assert s["kafka"]["offset_resets"].get(reason) == 1, s["kafka"]
    finally:
        broker.stop()
    assert "starting over at 0" in output_of(config)


def test_epoch_milliseconds_give_alerts_at_the_right_time(
    broker: EmbeddedBroker, topic: str, receiver: WebhookReceiver
) -> None:
    values = [  # as Java and Go producers often send them: milliseconds since 1970
        orjson.dumps({**orjson.loads(v), "ts": 1_764_158_400_000 + i * 1000})
        for i, v in enumerate(loan_events(5000, drift_at=3000))
    ]
    produce(broker.bootstrap, topic, values)
    doc = daemon_config(broker.bootstrap, topic, sinks=[{"type": "webhook", "url": receiver.url}])
    daemon = build(parse_config(doc, env={}))
    asyncio.run(run_until(daemon, lambda: accepted(daemon) == 5000 and len(receiver.alerts) > 0))
    firing = [a for a in receiver.alerts if a["status"] == "firing"]
    assert firing and all(a["started_at"].startswith("2025-11-26T") for a in firing)


def test_the_configuration_as_written_keeps_a_drift_across_a_restart(
    broker: EmbeddedBroker, topic: str, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """No ``state`` section: state and outbox go to ``data/``; a restart in the middle of a
    drift keeps the reference (no silent re-baselining) and the firing alerts, and resolves
    them when the data comes back."""
    produce(broker.bootstrap, topic, loan_events(4500, drift_at=3000))
    port = free_port()
    doc = daemon_config(broker.bootstrap, topic, sinks=[{"type": "webhook", "url": receiver.url}])
    del doc["state"]  # as the README's example: nothing said about state
    doc["http"]["port"] = port
    config = write_config(tmp_path, doc)
    with cli(config, cwd=tmp_path):
        s = wait_status(port, lambda s: s["models"]["credit-v1"]["events"] == 4500)
        wait_http(
            port,
            "/status",
            lambda c, b: any(a["feature"] == "salary" for a in json.loads(b)["alerts_firing"]),
        )
        firing = {a["id"] for a in status(port)["alerts_firing"] if a["feature"] == "salary"}
    assert list((tmp_path / "data").glob("*.ckpt")) and (tmp_path / "data" / "outbox").is_dir()

    with cli(config, cwd=tmp_path):  # the same directory, the same state
        s = wait_status(port, lambda s: s["state"]["restores"].get("restored") == 1)
        ref = s["models"]["credit-v1"]["reference"]
        assert {k: ref[k] for k in ("ready", "events", "warmup", "version", "source")} == {
            "ready": True,
            "events": 1000,
            "warmup": 1000,
            "version": 1,  # the reference warmed up before the restart, not a new one
            "source": "warmup",
        }
        assert firing <= {a["id"] for a in s["alerts_firing"]}  # still firing
        produce(broker.bootstrap, topic, loan_events(3000, drift_at=None, seed=21))
        wait_status(port, lambda s: s["models"]["credit-v1"]["events"] == 7500)
        deadline = time.monotonic() + 30
        while not firing <= {a["id"] for a in receiver.alerts if a["status"] == "resolved"}:
            assert time.monotonic() < deadline, "the firing alerts were not resolved"
            time.sleep(0.1)
    assert "restored partition 0" in output_of(config)
    assert "memory_only" not in output_of(config)


def test_memory_only_state_is_a_choice_the_daemon_warns_about(tmp_path: Path) -> None:
    port = free_port()
    doc = daemon_config(f"127.0.0.1:{free_port()}", "p")  # memory_only, no broker needed
    doc["http"]["port"] = port
    config = write_config(tmp_path, doc)
    with cli(config):
        wait_http(port, "/healthz", lambda code, _: code == 200)
    assert "state.memory_only" in output_of(config)


def test_a_stop_with_the_broker_gone_still_ends_within_its_bound(tmp_path: Path) -> None:
    broker = EmbeddedBroker().start()
    try:
        create_topics_sync(broker.bootstrap, ["p", "p.dlq"])
        produce(broker.bootstrap, "p", loan_events(2000, drift_at=None))
        port = free_port()
        doc = daemon_config(broker.bootstrap, "p", state={"path": str(tmp_path / "state")})
        doc["http"]["port"] = port
        doc["shutdown_timeout_s"] = 4
        config = write_config(tmp_path, doc)
        proc = start_cli(config)
        try:
            wait_status(port, lambda s: s["models"]["credit-v1"]["events"] == 2000)
            broker.kill()  # commits now wait for a coordinator that is gone
            time.sleep(1.0)
            stopped = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, output_of(config)[-3000:]
            assert time.monotonic() - stopped < 25
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        broker.stop()
