"""Sinks without a network: wrappers, the outbox, signatures, formats, plugins, config."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from monitor.app.build import build_sinks
from monitor.config.schema import load_config, parse_config
from monitor.errors import ConfigError
from sinks.alertmanager import to_alertmanager
from sinks.base import AlertLike, DeliveryError, SinkStats, redact_url
from sinks.outbox import Outbox, OutboxFile
from sinks.registry import assemble
from sinks.webhook import WebhookSink, sign, slack_message
from sinks.wrappers import Batch, Dedup, RateLimit, Retry

ROOT = Path(__file__).parent.parent


class A:
    def __init__(self, i: int, status: str = "firing") -> None:
        self.id, self.status = f"dl-{i}", status

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "model": "m", "feature": "x",
                "detector": "ks", "severity": "warning", "score": 0.5, "threshold": 0.1,
                "summary": f"x drifted ({self.id})", "started_at": "2026-11-27T00:00:00Z",
                "ended_at": None}  # fmt: skip


class Flaky:
    """A transport that fails ``fail`` times with ``error``, then records deliveries."""

    name = "flaky"

    def __init__(self, fail: int = 0, error: DeliveryError | None = None) -> None:
        self.fail, self.error = fail, error
        self.calls: list[list[str]] = []
        self.delivered: list[tuple[str, str]] = []
        self._stats = SinkStats()

    async def start(self) -> None:
        return None

    async def emit(self, alerts: Sequence[AlertLike]) -> None:
        self.calls.append([a.id for a in alerts])
        if self.fail > 0:
            self.fail -= 1
            assert self.error is not None
            raise self.error
        self.delivered += [(a.id, a.status) for a in alerts]

    async def flush(self, timeout: float) -> bool:
        return True

    async def close(self, timeout: float = 5.0) -> None:
        return None

    def stats(self) -> SinkStats:
        return self._stats


def retryable(after: float | None = None) -> DeliveryError:
    return DeliveryError("http_5xx", "HTTP 503", retryable=True, retry_after=after)


def test_retry_backs_off_honours_retry_after_and_gives_up_on_4xx() -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    inner = Flaky(fail=3, error=retryable())
    asyncio.run(Retry(inner, retries=5, base_s=1.0, cap_s=3.0, sleep=sleep).emit([A(1)]))
    assert inner.delivered == [("dl-1", "firing")] and len(inner.calls) == 4
    assert 0.5 <= slept[0] <= 1.0 and 1.0 <= slept[1] <= 2.0 and 1.5 <= slept[2] <= 3.0
    assert inner.stats().retries == 3

    slept.clear()
    inner = Flaky(fail=1, error=retryable(after=7.0))
    asyncio.run(Retry(inner, sleep=sleep).emit([A(1)]))
    assert slept == [7.0]

    refused = DeliveryError("http_4xx", "HTTP 400", retryable=False)
    inner = Flaky(fail=1, error=refused)
    with pytest.raises(DeliveryError, match="400"):
        asyncio.run(Retry(inner, sleep=sleep).emit([A(1)]))
    assert len(inner.calls) == 1  # never retried


def test_batch_dedup_and_rate_limit() -> None:
    inner = Flaky()
    asyncio.run(Batch(inner, 2).emit([A(i) for i in range(5)]))
    assert inner.calls == [["dl-0", "dl-1"], ["dl-2", "dl-3"], ["dl-4"]]

    inner = Flaky()
    dedup = Dedup(inner)
    asyncio.run(dedup.emit([A(1), A(2)]))
    asyncio.run(dedup.emit([A(1), A(2, "resolved"), A(1)]))
    assert inner.delivered == [("dl-1", "firing"), ("dl-2", "firing"), ("dl-2", "resolved")]
    assert inner.stats().deduplicated == 2

    now = [0.0]
    limit = RateLimit(Flaky(), per_s=2.0, burst=2, clock=lambda: now[0])
    assert limit.wait_s() == 0.0
    limit._tokens -= 2  # two deliveries spent the burst
    assert limit.wait_s() == pytest.approx(0.5)
    now[0] = 0.5
    assert limit.wait_s() == 0.0


def test_the_outbox_survives_a_crash_and_delivers_in_order(tmp_path: Path) -> None:
    async def first() -> None:
        box = Outbox(Flaky(fail=10**9, error=retryable()), tmp_path, pause_s=60)
        await box.start()
        await box.emit([A(1), A(2)])
        await box.emit([A(1, "resolved")])
        assert box.stats().outbox_depth == 3 and await box.flush(0.01)
        # SIGKILL: nothing closes; a torn line from a write cut short is left behind.
        with (tmp_path / "flaky.outbox").open("ab") as fh:
            fh.write(b'A {"id": "dl-9", "sta')
        box.file.close()  # (the process is gone: so are its file handles)

    async def second() -> Flaky:
        inner = Flaky()
        box = Outbox(inner, tmp_path)
        await box.start()
        assert await box.wait_idle(5)
        await box.close()
        return inner

    asyncio.run(first())
    inner = asyncio.run(second())
    assert inner.delivered == [("dl-1", "firing"), ("dl-2", "firing"), ("dl-1", "resolved")]
    assert OutboxFile(tmp_path / "flaky.outbox").replay() == {}  # all done


def test_a_full_outbox_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    async def go() -> Outbox:
        box = Outbox(Flaky(fail=10**9, error=retryable()), tmp_path, max_alerts=3, pause_s=60)
        await box.start()
        await box.emit([A(i) for i in range(5)])
        box.file.close()
        return box

    box = asyncio.run(go())
    st = box.stats()
    assert [k[0] for k in box.pending] == ["dl-2", "dl-3", "dl-4"]
    assert st.outbox_dropped == 2 and st.failures["overflow"] == 2
    assert [k[0] for k in OutboxFile(tmp_path / "flaky.outbox").replay()] == [
        "dl-2",
        "dl-3",
        "dl-4",
    ]


def test_a_refused_batch_leaves_the_outbox_and_is_counted(tmp_path: Path) -> None:
    refused = DeliveryError("http_4xx", "HTTP 422", retryable=False)
    inner = Flaky(fail=1, error=refused)

    async def go() -> Outbox:
        box = assemble(inner, outbox_dir=tmp_path)
        await box.start()
        for i in (1, 2):
            await box.emit([A(i)])
            assert await box.wait_idle(5)
        await box.close(1)
        return box

    box = asyncio.run(go())
    assert box.stats().failures == {"http_4xx": 1} and box.stats().sent == 1
    assert inner.delivered == [("dl-2", "firing")] and not box.pending


def test_compaction_keeps_only_what_is_pending(tmp_path: Path) -> None:
    async def go() -> Outbox:
        box = Outbox(Flaky(), tmp_path, max_batch=10)
        await box.start()
        for i in range(700):
            await box.emit([A(i)])
        assert await box.wait_idle(10)
        await box.close(1)
        return box

    box = asyncio.run(go())
    assert box.file.lines < 1000 and OutboxFile(box.file.path).replay() == {}


def verify_snippet() -> Any:
    """The README's verification snippet, run as written."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(import hashlib, hmac, time\n.*?)```", readme, re.S)
    assert block, "the README has a verification snippet"
    scope: dict[str, Any] = {}
    exec(textwrap.dedent(block.group(1)), scope)
    return scope["verify"]


def test_signatures_verify_with_the_documented_snippet_and_tampering_fails() -> None:
    verify = verify_snippet()
    sink = WebhookSink("http://127.0.0.1:1/hook", secret="s3cret")
    body = sink.body([A(1)])
    ts = "1800000000"
    headers = {"X-Driftline-Timestamp": ts, "X-Driftline-Signature": sign(b"s3cret", ts, body)}
    expected = hmac.new(b"s3cret", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Driftline-Signature"] == "v1=" + expected

    import time

    now = str(int(time.time()))
    fresh = {"X-Driftline-Timestamp": now, "X-Driftline-Signature": sign(b"s3cret", now, body)}
    assert verify(b"s3cret", fresh, body)
    assert not verify(b"s3cret", fresh, body.replace(b"dl-1", b"dl-2"))  # tampered body
    assert not verify(b"other", fresh, body)  # wrong secret
    assert not verify(b"s3cret", headers, body)  # signed long ago: a replay


def test_slack_format_and_alertmanager_shape() -> None:
    msg = slack_message([A(1).to_dict(), A(2, "resolved").to_dict()])
    assert msg["text"] == "driftline: 1 firing, 1 resolved" and len(msg["blocks"]) == 2
    assert "FIRING" in msg["blocks"][0]["text"]["text"]
    am = to_alertmanager({**A(3).to_dict(), "feature": None, "detector": "multiple",
                          "features": ["x", "y"]})  # fmt: skip
    assert am["labels"] == {
        "alertname": "DriftlineModelDrift",
        "model": "m",
        "detector": "multiple",
        "severity": "warning",
        "alert_id": "dl-3",
    }
    assert am["annotations"]["features"] == "x, y" and "endsAt" not in am


def test_urls_are_redacted() -> None:
    assert redact_url("https://user:pw@hooks.example.com/T/B/secret?k=v") == (
        "https://hooks.example.com/..."
    )
    assert redact_url("http://127.0.0.1:9093") == "http://127.0.0.1:9093"


ENV = {
    "ALERT_WEBHOOK_URL": "https://hooks.example.com/services/T/B/tok",
    "WEBHOOK_SECRET": "wh-secret-42",
    "ALERTMANAGER_URL": "http://127.0.0.1:9093",
}


def test_the_issue_configuration_is_accepted_as_written(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "examples" / "delivery.yaml", env=ENV)
    assert [s.type for s in cfg.sinks] == ["webhook", "alertmanager", "kafka", "log"]
    assert "wh-secret-42" not in repr(cfg) and "wh-secret-42" not in cfg.model_dump_json()
    cfg = cfg.model_copy(update={"outbox": cfg.outbox.model_copy(update={"path": tmp_path})})
    sinks = build_sinks(cfg)
    assert [s.name for s in sinks] == ["webhook", "alertmanager", "kafka", "log"]


def test_bad_sink_settings_are_listed() -> None:
    doc = {
        "kafka": {"topic": "t", "security_protocol": "SASL_SSL"},
        "models": {"m": {"features": {"x": "numeric"}}},
        "sinks": [
            {"type": "webhook", "url": "ftp://x", "secret": "abc"},
            {"type": "alertmanager"},
            {"type": "webhook", "url": "http://a", "name": "dup"},
            {"type": "log", "name": "dup"},
        ],
    }
    with pytest.raises(ConfigError) as err:
        parse_config(doc, env={})
    text = str(err.value)
    assert "kafka: " in text and "sasl_mechanism" in text
    assert "sinks.0.url" in text and "sinks.1.url" in text
    assert "abc" not in text


def test_a_plugin_sink_is_found_by_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "demo_sink.py").write_text(
        textwrap.dedent(
            """
            from sinks.base import SinkStats

            class Collect:
                got = []
                def __init__(self, name, prefix):
                    self.name, self.prefix, self._stats = name, prefix, SinkStats()
                async def start(self): pass
                async def emit(self, alerts):
                    Collect.got += [self.prefix + a.id for a in alerts]
                async def flush(self, timeout): return True
                async def close(self, timeout=5.0): pass
                def stats(self): return self._stats

            def make_sink(options, *, name):
                return Collect(name, options["prefix"])
            """
        )
    )
    info = tmp_path / "demo_sink-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-sink\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[driftline.sinks]\ncollect = demo_sink:make_sink\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = parse_config(
        {
            "kafka": {"topic": "t"},
            "models": {"m": {"features": {"x": "numeric"}}},
            "sinks": [{"type": "collect", "options": {"prefix": "got:"}, "retries": 0}],
            "state": {"path": str(tmp_path / "state")},  # its outbox, not the working dir's
        },
        env={},
    )
    (sink,) = build_sinks(cfg)
    assert sink.name == "collect"

    async def go() -> None:
        await sink.start()
        await sink.emit([A(1)])
        await sink.close(5)

    asyncio.run(go())
    assert sys.modules["demo_sink"].Collect.got == ["got:dl-1"]


def test_alertmanager_re_sends_firing_alerts_until_resolved(tmp_path: Path) -> None:
    from aiohttp import web

    from sinks.alertmanager import AlertmanagerSink

    posts: list[list[str]] = []

    async def receive(request: web.Request) -> web.Response:
        posts.append([a["labels"]["alert_id"] for a in await request.json()])
        return web.Response(text="ok")

    async def until(check: Any, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not check():
            assert asyncio.get_running_loop().time() < deadline, posts
            await asyncio.sleep(0.01)

    async def go() -> None:
        app = web.Application()
        app.router.add_post("/api/v2/alerts", receive)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            sink = AlertmanagerSink(url, directory=tmp_path, resend_interval_s=0.05)
            await sink.start()
            await sink.emit([A(1), A(2)])
            await until(lambda: len(posts) >= 3)
            assert posts[-1] == ["dl-1", "dl-2"]  # re-sent while firing
            again = AlertmanagerSink(url, directory=tmp_path)
            await again.start()  # a restarted daemon knows what is firing
            assert sorted(again.firing) == ["dl-1", "dl-2"]
            await again.close()
            await sink.emit([A(1, "resolved"), A(2, "resolved")])
            n = len(posts)
            await asyncio.sleep(0.3)
            assert len(posts) == n  # nothing firing: nothing re-sent
            await sink.close()
        finally:
            await runner.cleanup()

    asyncio.run(go())


def test_a_sink_whose_broker_is_down_at_start_delays_delivery_only(tmp_path: Path) -> None:
    """A Kafka sink pointing at nothing: starting it does not fail, its alerts wait in the
    outbox (on disk), and every failed attempt is counted."""
    from monitor.demo.broker import free_port
    from sinks.kafka import KafkaSink

    async def go() -> Outbox:
        transport = KafkaSink(
            "alerts", bootstrap_servers=f"127.0.0.1:{free_port()}", request_timeout_ms=500
        )
        box = assemble(transport, outbox_dir=tmp_path, retries=0)
        box.pause_s = 0.05
        await box.start()  # does not raise
        await box.emit([A(1)])
        assert await box.flush(0.01)  # durable on disk already
        for _ in range(200):
            if box.stats().failures.get("kafka", 0) >= 2:
                break
            await asyncio.sleep(0.05)
        await box.close(0.1)
        return box

    box = asyncio.run(go())
    assert box.stats().failures["kafka"] >= 2 and box.stats().sent == 0
    assert [k[0] for k in OutboxFile(tmp_path / "kafka.outbox").replay()] == ["dl-1"]


class Fatal(BaseException):
    """What no ``except Exception`` catches: it kills the task it is raised in."""


def test_a_dead_delivery_task_is_reported_and_restarted(tmp_path: Path) -> None:
    inner = Flaky()

    async def go() -> None:
        box = Outbox(inner, tmp_path)
        await box.start()
        assert box.check() is None
        real = inner.emit

        async def dies(alerts: Any) -> None:
            raise Fatal("boom")

        inner.emit = dies  # type: ignore[method-assign]
        await box.emit([A(1)])
        for _ in range(100):
            if box.check() is not None:
                break
            await asyncio.sleep(0.01)
        assert "boom" in str(box.check())
        inner.emit = real  # type: ignore[method-assign]
        await box.restart()
        assert await box.wait_idle(5) and box.check() is None
        await box.close(1)

    asyncio.run(go())
    assert inner.delivered == [("dl-1", "firing")]


def test_a_failing_disk_keeps_alerts_in_memory_and_says_so(tmp_path: Path) -> None:
    inner = Flaky(fail=10**9, error=retryable())

    async def go() -> Outbox:
        box = Outbox(inner, tmp_path, pause_s=60)
        await box.start()
        box.file.accepted = lambda alerts: (_ for _ in ()).throw(OSError(28, "No space"))  # type: ignore[method-assign]
        await box.emit([A(1)])
        assert box.stats().outbox_write_failures == 1 and len(box.pending) == 1
        assert not await box.flush(0.05)  # not safe: a checkpoint must wait
        del box.file.accepted  # the disk works again: the next emit rewrites the file
        await box.emit([A(2)])
        assert await box.flush(0.01)
        box.file.close()
        return box

    asyncio.run(go())
    assert [k[0] for k in OutboxFile(tmp_path / "flaky.outbox").replay()] == ["dl-1", "dl-2"]


def test_kafka_secrets_pass_through_and_stay_hidden() -> None:
    from monitor.ingest.kafka import client_options

    doc = {
        "kafka": {
            "topic": "t",
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "driftline",
            "sasl_plain_password": "sasl-pw-do-not-log",
            "fetch_timeout_ms": 0,  # invalid: an error is reported
        },
        "models": {"m": {"features": {"x": "numeric"}}},
    }
    with pytest.raises(ConfigError) as err:
        parse_config(doc, env={})
    assert "fetch_timeout_ms" in str(err.value) and "sasl-pw" not in str(err.value)
    doc["kafka"]["fetch_timeout_ms"] = 100
    cfg = parse_config(doc, env={})
    assert "sasl-pw" not in repr(cfg) and "sasl-pw" not in cfg.model_dump_json()
    options = client_options(cfg.kafka)
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "driftline"
    assert options["sasl_plain_password"] == "sasl-pw-do-not-log"


def test_kafka_tls_settings_build_an_ssl_context() -> None:
    from monitor.ingest.kafka import client_options

    ca = Path(__file__).parent / "data" / "test-ca.pem"  # a throwaway self-signed CA
    cfg = parse_config(
        {
            "kafka": {"topic": "t", "security_protocol": "SSL", "ssl_cafile": str(ca)},
            "models": {"m": {"features": {"x": "numeric"}}},
        },
        env={},
    )
    options = client_options(cfg.kafka)
    assert options["security_protocol"] == "SSL"
    (cert,) = options["ssl_context"].get_ca_certs()
    assert dict(x[0] for x in cert["subject"])["commonName"] == "driftline test CA"
