"""Shared fixtures: a real Kafka-protocol broker (Tansu) and a real webhook receiver."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml
from aiohttp import web
from aiokafka import AIOKafkaProducer

from monitor.demo.broker import EmbeddedBroker, create_topics_sync, free_port

_topic_ids = itertools.count()


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def topic(broker: EmbeddedBroker, request: pytest.FixtureRequest) -> str:
    """A fresh topic (and its dead-letter topic) per test."""
    name = f"t{next(_topic_ids)}-{request.node.name[:40]}".replace("[", "-").replace("]", "")
    create_topics_sync(broker.bootstrap, [name, f"{name}.dlq"])
    return name


def loan_events(n: int, drift_at: int | None, seed: int = 0) -> list[bytes]:
    """Prediction events; from ``drift_at`` on, salaries drop by 30%."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        drift = drift_at is not None and i >= drift_at
        salary = float(rng.normal(52000.0, 8000.0)) * (0.7 if drift else 1.0)
        out.append(
            orjson.dumps(
                {
                    "model": "credit-v1",
                    "id": f"e{i}",
                    "ts": 1764158400.0 + i,
                    "features": {
                        "salary": salary,
                        "age": int(rng.integers(20, 70)),
                        "elevel": str(int(rng.integers(0, 5))),
                    },
                    "prediction": float(rng.random()),
                }
            )
        )
    return out


def sea_stream(n_before: int, n_after: int, inline: bool = True) -> tuple[list[bytes], list[bytes]]:
    """River's SEA with a concept switch after ``n_before`` events (function 0 -> 2, the
    features stable), scored by a production model that knows the first concept. Labels
    come inline, or (``inline=False``) as label records 30 s after their predictions."""
    from river.datasets import synth

    stream = list(synth.SEA(variant=0, seed=1).take(n_before))
    stream += list(synth.SEA(variant=2, seed=2).take(n_after))
    preds, labels = [], []
    for i, (x, y) in enumerate(stream):
        event: dict[str, Any] = {
            "model": "sea",
            "id": f"q{i}",
            "ts": 1.7e9 + i,
            "features": {f"x{k}": float(v) for k, v in x.items()},
            "prediction": 0.9 if x[0] + x[1] > 8 else 0.1,
        }
        if inline:
            event["label"] = bool(y)
        else:
            labels.append(
                orjson.dumps(
                    {"model": "sea", "id": f"q{i}", "label": bool(y), "ts": 1.7e9 + i + 30}
                )
            )
        preds.append(orjson.dumps(event))
    return preds, labels


def produce(
    bootstrap: str,
    topic: str,
    values: list[bytes],
    key: bytes = b"credit-v1",
    partition: int | None = None,
) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        try:
            for v in values:
                await producer.send(topic, v, key=key, partition=partition)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(go())


def accepted(daemon: Any, model: str = "credit-v1") -> int:
    """Events a running daemon has accepted for ``model`` (from its status snapshot)."""
    return int(daemon.snapshot().pipeline.models[model].events)


def daemon_config(bootstrap: str, topic: str, **over: Any) -> dict[str, Any]:
    """A daemon configuration for tests; state is memory-only unless ``state=`` says
    otherwise (the default data directory would be the working directory's)."""
    doc: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "topic": topic,
            "group_id": f"{topic}-g",
            "dead_letter_topic": f"{topic}.dlq",
            "session_timeout_ms": 2000,
            "heartbeat_interval_ms": 300,
            "fetch_timeout_ms": 200,
        },
        "http": {"host": "127.0.0.1", "port": 0},
        "defaults": {"reference": {"warmup": 1000}},
        "alerting": {"resolve_after_events": 1000, "cooldown_events": 500},
        "models": {
            "credit-v1": {
                "features": {"salary": "numeric", "age": "numeric", "elevel": "categorical"},
                "prediction": "numeric",
            }
        },
        "sinks": [],
        "state": {"memory_only": True},
    }
    for key, value in over.items():
        doc[key] = value
    return doc


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 collecting the JSON bodies POSTed to /hook."""

    def __init__(self, port: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []  # headers, raw body
        self.port = port
        self.fail_first = 0  # answer 500 to this many requests first
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return [a for body in self.bodies for a in body["alerts"]]

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

        async def hook(request: web.Request) -> web.Response:
            if self.fail_first > 0:
                self.fail_first -= 1
                return web.Response(status=500)
            raw = await request.read()
            self.requests.append((dict(request.headers), raw))
            self.bodies.append(orjson.loads(raw))
            return web.Response(text="ok")

        async def start() -> web.AppRunner:
            app = web.Application()
            app.router.add_post("/hook", hook)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", self.port)
            await site.start()
            self.port = int(runner.addresses[0][1])
            return runner

        self._runner = self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def start(self) -> WebhookReceiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver().start()
    yield r
    r.stop()


def ready(port: int) -> bool:
    """Whether a service on ``port`` answers ``/-/ready`` with 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError:
        return False


class Service:
    """A Debian daemon on a loopback port, ready when ``/-/ready`` answers 200."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if ready(port):
                    return
            except OSError:
                pass
            assert self.proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"{argv[0]} never became ready: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is needed (scripts/test.sh installs it from Debian)"
    return path


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: WebhookReceiver) -> Iterator[Service]:
    """Alertmanager routing every alert, at once, to ``receiver`` (resolved ones too)."""
    conf = {
        "route": {
            "receiver": "hook",
            "group_by": ["alert_id"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "hook", "webhook_configs": [{"url": receiver.url, "send_resolved": True}]}
        ],
    }
    (tmp_path / "am.yml").write_text(yaml.safe_dump(conf))
    port = free_port()
    service = Service(
        [
            binary("prometheus-alertmanager"),
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        port,
        tmp_path / "am.log",
    )
    yield service
    service.stop()
