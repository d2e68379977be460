"""The daemon in-process, over an in-memory source and store: its ordering guarantees and
its failure model, each in seconds (the real-broker tests repeat the important ones)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

from monitor.app.build import build
from monitor.app.daemon import Daemon
from monitor.config.schema import parse_config
from monitor.ingest.source import MemoryDeadLetters, MemorySource
from monitor.state.codec import decode_first
from monitor.state.stores import MemoryStore
from sinks.registry import assemble
from sinks.testing import RecordingSink

from .conftest import sea_stream
from .test_checkpoint import same

BATCH = 500


def events(n: int, shift_at: int | None = None, seed: int = 0, model: str = "m") -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = float(rng.normal(3.0 if shift_at is not None and i >= shift_at else 0.0, 1.0))
        out.append(
            orjson.dumps(
                {
                    "model": model,
                    "id": f"{model}-{i}",
                    "ts": 1.7e9 + i,
                    "features": {"x": x, "y": float(rng.normal())},
                }
            )
        )
    return out


def config(**over: Any) -> Any:
    doc: dict[str, Any] = {
        "kafka": {
            "topic": "memory",
            "max_batch_records": BATCH,
            "fetch_timeout_ms": 20,
            "dead_letter_topic": "dlq",
        },
        "http": {"port": 0},
        "defaults": {"reference": {"warmup": 1000}},
        "alerting": {"resolve_after_events": 1000, "cooldown_events": 500},
        "models": {
            "m": {"features": {"x": "numeric", "y": "numeric"}},
            "n": {"features": {"x": "numeric", "y": "numeric"}},
        },
        "state": {"checkpoint_every_events": 2000, "checkpoint_every_s": 3600},
    }
    doc.update(over)
    return parse_config(doc, env={})


def daemon(
    source: MemorySource,
    store: MemoryStore | None,
    *,
    sink: RecordingSink | None = None,
    dead: MemoryDeadLetters | None = None,
    **over: Any,
) -> Daemon:
    return build(
        config(**over),
        source=source,
        store=store,
        sinks=[sink if sink is not None else RecordingSink()],
        dead_letters=dead if dead is not None else MemoryDeadLetters(),
        learners={},
        probe_interval_s=0.05,
    )


async def until(d: Daemon, done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def count(d: Daemon, model: str = "m") -> int:
    return d.snapshot().pipeline.models[model].events


def run(d: Daemon, done: Callable[[], bool], then: Callable[[], Any] | None = None) -> int:
    async def go() -> int:
        task = asyncio.create_task(d.run())
        try:
            await until(d, lambda: task.done() or done())
            if then is not None:
                result = then()
                if asyncio.iscoroutine(result):
                    await result
        finally:
            d.request_stop()
        return await asyncio.wait_for(task, 30)

    return asyncio.run(go())


def crash(d: Daemon, done: Callable[[], bool]) -> None:
    """Run until ``done``, then stop without a final checkpoint (as a SIGKILL would)."""

    async def go() -> None:
        task = asyncio.create_task(d.run())
        await until(d, done)
        task.cancel()
        finished, _ = await asyncio.wait({task}, timeout=30)
        if not finished:  # seen once in CI: say where every task waits, then fail
            from monitor.app.daemon import dump_tasks

            dump_tasks()
            raise AssertionError("the cancelled daemon did not stop within 30 s")
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())


def newest(store: MemoryStore, name: str) -> dict[str, Any]:
    found = decode_first([("memory", d) for d in reversed(store.data.get(name, []))])
    assert found is not None
    return found[0]


def checkpoint_offsets(store: MemoryStore, name: str) -> dict[Any, int]:
    return {tuple(tp): o for tp, o in newest(store, name)["offsets"]}


def state_of(store: MemoryStore, name: str) -> dict[str, Any]:
    found = decode_first(asyncio.run(store.get(name)))
    assert found is not None
    state = found[0]
    state.pop("written_at")
    return state


# -- ordering ----------------------------------------------------------------------------
def test_without_a_store_a_batch_is_committed_only_after_its_alerts_and_dead_letters() -> None:
    values = events(6000, shift_at=3000)
    values[1234] = b"{broken"
    src = MemorySource(values)
    seen: list[tuple[int, int]] = []  # (first event of the alerts, committed offset) at emit

    class Watching(RecordingSink):
        async def emit(self, alerts: Any) -> None:
            first = min(a.at_event for a in alerts)
            seen.append((first, src.committed.get(("memory", 0), 0)))
            await super().emit(alerts)

    sink, dead = Watching(), MemoryDeadLetters()
    d = daemon(src, None, sink=sink, dead=dead, state={"memory_only": True})
    assert run(d, lambda: src.committed.get(("memory", 0)) == 6000) == 0
    assert [(r.offset, reason) for r, reason, _ in dead.sent] == [(1234, "bad_json")]
    firing = [a for a in sink.alerts if a.status == "firing"]
    assert firing and all(a.start_event >= 2999 for a in firing)
    # When a batch's alerts were emitted, that batch was not committed yet (offsets run one
    # ahead of event numbers after the rejected record).
    assert seen and all(committed <= first + 1 for first, committed in seen)


def test_with_a_store_commits_follow_checkpoints_and_never_pass_them() -> None:
    src, store = MemorySource(events(7000)), MemoryStore()
    commits: list[dict[Any, int]] = []
    real = src.commit

    async def commit(offsets: Any) -> None:
        saved = checkpoint_offsets(store, "driftline.memory.0")
        assert all(o <= saved.get(tp, 0) for tp, o in offsets.items())  # never past one
        commits.append(dict(offsets))
        await real(offsets)

    src.commit = commit  # type: ignore[method-assign]
    d = daemon(src, store)
    assert run(d, lambda: count(d) == 7000) == 0
    assert len(commits) >= 3  # every 2000 events, and the final one
    assert src.committed[("memory", 0)] == 7000


def test_after_a_crash_the_restart_ends_in_the_state_of_an_uninterrupted_run() -> None:
    values = events(9000, shift_at=5000)
    ref_store, ref_sink = MemoryStore(), RecordingSink()
    ref = daemon(MemorySource(values), ref_store, sink=ref_sink)
    assert run(ref, lambda: count(ref) == 9000) == 0

    store, sink, src = MemoryStore(), RecordingSink(), MemorySource(values)
    first = daemon(src, store, sink=sink)
    crash(first, lambda: count(first) >= 6300)  # mid-drift, 300+ events after a checkpoint
    again = MemorySource(values)
    again.committed = dict(src.committed)  # what the group remembers
    second = daemon(again, store, sink=sink)
    assert run(second, lambda: count(second) == 9000) == 0
    assert second.snapshot().daemon.restores == {"restored": 1}
    same(state_of(store, "driftline.memory.0"), state_of(ref_store, "driftline.memory.0"))
    # Alerts raised after the last checkpoint are raised again, with the same ids.
    assert {a.id for a in sink.alerts} == {a.id for a in ref_sink.alerts}


def test_a_scripted_rebalance_hands_a_partition_over_through_the_store() -> None:
    logs = {0: events(5000, shift_at=3000, model="m"), 1: events(5000, shift_at=3000, model="n")}
    ref_store = MemoryStore()
    ref = daemon(MemorySource(logs), ref_store)
    assert run(ref, lambda: count(ref, "m") == 5000 and count(ref, "n") == 5000) == 0

    store = MemoryStore()
    half = {0: logs[0], 1: logs[1][:2500]}
    a_src = MemorySource(half)
    a = daemon(a_src, store)

    async def handover() -> None:
        await a_src.rebalance([0])  # the group gives partition 1 to another instance

    assert run(a, lambda: count(a, "n") == 2500 and count(a, "m") == 5000, then=handover) == 0
    assert a.snapshot().daemon.partitions == (0,)
    b_src = MemorySource(logs, partitions=[1])
    b_src.committed = dict(a_src.committed)
    b = daemon(b_src, store)
    assert run(b, lambda: count(b, "n") == 5000) == 0
    assert b.snapshot().daemon.restores == {"restored": 1}
    for p in (0, 1):
        same(state_of(store, f"driftline.memory.{p}"), state_of(ref_store, f"driftline.memory.{p}"))


# -- faults --------------------------------------------------------------------------------
def test_a_store_that_cannot_be_written_is_retried_and_nothing_is_committed_past_it() -> None:
    src, store = MemorySource(events(4000)), MemoryStore()
    d = daemon(src, store)

    async def fail_then_recover() -> None:
        store.fail = OSError(28, "No space left on device")
        src.append(0, events(4000, seed=1)[:4000])
        await until(d, lambda: d.snapshot().daemon.checkpoint_failures >= 1 and count(d) == 8000)
        snap = d.snapshot().daemon
        assert "No space left" in (snap.checkpoint_error or "")
        assert src.committed[("memory", 0)] <= 4000  # not past the last durable checkpoint
        store.fail = None
        await until(d, lambda: d.snapshot().daemon.checkpoint_error is None, timeout=10)

    assert run(d, lambda: count(d) == 4000, then=fail_then_recover) == 0
    assert src.committed[("memory", 0)] == 8000


def test_a_store_that_cannot_be_read_pauses_its_partition_until_it_can() -> None:
    src, store = MemorySource(events(3000)), MemoryStore()
    store.fail = KafkaConnectionError("changelog broker away")
    d = daemon(src, store)
    d.owner.first_try_s = 0.05

    async def recover() -> None:
        await asyncio.sleep(0.3)
        assert count(d) == 0 and d.snapshot().daemon.restoring  # paused, not started afresh
        store.fail = None
        await until(d, lambda: count(d) == 3000)

    assert run(d, lambda: bool(d.snapshot().daemon.restoring), then=recover) == 0
    assert d.snapshot().daemon.restores == {"fresh": 1}


def test_a_dead_letter_topic_that_fails_makes_its_batch_wait_and_loses_nothing() -> None:
    values = events(3000)
    values[2100] = b"\xff\xfe"
    src, dead = MemorySource(values), MemoryDeadLetters()
    dead.fail = KafkaConnectionError("dlq away")
    d = daemon(src, None, dead=dead, state={"memory_only": True})
    d.dead_letters.backoff.start = 0.01

    async def recover() -> None:
        await until(d, lambda: d.snapshot().daemon.dead_letter_failures >= 2)
        assert src.committed.get(("memory", 0), 0) <= 2000  # the batch holding it waits
        dead.fail = None
        await until(d, lambda: src.committed.get(("memory", 0)) == 3000)

    assert run(d, lambda: count(d) >= 2000, then=recover) == 0
    assert [(r.offset, reason) for r, reason, _ in dead.sent] == [(2100, "bad_json")]


def test_an_error_while_handling_a_model_rejects_its_records_and_monitoring_goes_on() -> None:
    src, dead = MemorySource(events(3000)), MemoryDeadLetters()
    d = daemon(src, None, dead=dead, state={"memory_only": True})
    state = d.pipeline.models["m"]
    real, calls = state.monitor.process, [0]

    def flaky(batch: Any, on_ready: Any = None) -> Any:
        calls[0] += 1
        if calls[0] == 3:
            raise ZeroDivisionError("a bug")
        return real(batch, on_ready)

    state.monitor.process = flaky  # type: ignore[method-assign]
    assert run(d, lambda: src.committed.get(("memory", 0)) == 3000) == 0
    reasons = {reason for _, reason, _ in dead.sent}
    assert reasons == {"internal_error"} and len(dead.sent) == BATCH
    assert "ZeroDivisionError" in dead.sent[0][2]
    snap = d.snapshot().pipeline
    assert snap.internal_errors == 1 and snap.rejected == {"internal_error": BATCH}
    assert count(d) == 3000 - BATCH


def test_a_batch_whose_processing_fails_as_a_whole_is_rejected_not_a_crash_loop() -> None:
    src, dead = MemorySource(events(3000)), MemoryDeadLetters()
    d = daemon(src, None, dead=dead, state={"memory_only": True})
    real, calls = d.pipeline.publish, [0]

    def flaky(touched: Any = None) -> None:
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("a bug after the models were processed")
        real(touched)

    d.pipeline.publish = flaky  # type: ignore[method-assign]
    assert run(d, lambda: src.committed.get(("memory", 0)) == 3000) == 0
    assert {reason for _, reason, _ in dead.sent} == {"internal_error"} and len(dead.sent) == BATCH
    assert d.snapshot().daemon.internal_errors == 1


def test_refused_credentials_stop_the_daemon_with_exit_status_2() -> None:
    src = MemorySource(events(100))
    src.fail = SaslAuthenticationFailed("bad password")
    d = daemon(src, None, state={"memory_only": True})
    assert run(d, lambda: False) == 2


def test_a_broker_away_is_retried_shown_and_survived() -> None:
    src = MemorySource(events(2000))
    d = daemon(src, None, state={"memory_only": True})

    async def outage() -> None:
        src.fail = KafkaConnectionError("broker away")
        await until(d, lambda: not d.snapshot().daemon.connected)
        assert "broker away" in (d.snapshot().daemon.kafka_error or "")
        assert d.snapshot().daemon.ready  # a sidecar's readiness ignores broker outages
        src.fail = None
        src.append(0, events(2000, seed=3))
        await until(d, lambda: count(d) == 4000 and d.snapshot().daemon.connected)

    assert run(d, lambda: count(d) == 2000, then=outage) == 0


def test_a_sink_task_that_dies_is_restarted_and_counted() -> None:
    class Fatal(BaseException):
        pass

    inner = RecordingSink()
    real, calls = inner.emit, [0]

    async def dies_once(alerts: Any) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise Fatal("boom")
        await real(alerts)

    inner.emit = dies_once  # type: ignore[method-assign]
    sink = assemble(inner)
    src = MemorySource(events(5000, shift_at=2000))
    d = build(
        config(state={"memory_only": True}),
        source=src,
        sinks=[sink],
        dead_letters=MemoryDeadLetters(),
        learners={},
        probe_interval_s=0.05,
    )
    assert run(d, lambda: count(d) == 5000 and len(inner.alerts) > 0) == 0
    (component,) = [c for c in d.snapshot().daemon.components if c.name == "sink:recording"]
    assert component.restarts >= 1


def test_thousands_of_scrapes_during_consumption_see_whole_batches_only() -> None:
    """The status is published once per batch: a scrape can only ever see a whole number
    of batches, whatever it races with."""
    import aiohttp

    n = 60_000
    src = MemorySource(events(n, shift_at=30_000))
    d = daemon(src, None, state={"memory_only": True})
    seen: list[int] = []
    errors: list[str] = []

    async def scrape() -> None:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{d.http_port}"
            while count(d) < n:
                for path in ("/metrics", "/status"):
                    async with http.get(url + path) as resp:
                        if resp.status != 200:
                            errors.append(f"{path}: {resp.status}")
                        elif path == "/status":
                            seen.append((await resp.json())["models"]["m"]["events"])
                        else:
                            await resp.read()

    assert run(d, lambda: d.http_port is not None, then=scrape) == 0
    assert not errors and len(seen) > 100
    assert all(e % BATCH == 0 for e in seen) and seen == sorted(seen)


@pytest.mark.e2e  # a real learner process, killed
def test_a_learner_process_killed_mid_run_is_restarted_and_monitoring_goes_on(
    tmp_path: Any,
) -> None:
    values = sea_stream(6000, 0)[0]
    cfg = config(
        models={
            "sea": {
                "features": {"x0": "numeric", "x1": "numeric", "x2": "numeric"},
                "task": "classification",
                "online_model": {"learner": "logistic_regression"},
            }
        },
        state={"memory_only": True},
    )
    src = MemorySource(values[:3000])
    d = build(cfg, source=src, sinks=[], dead_letters=MemoryDeadLetters(), probe_interval_s=0.05)
    learner = d.parts.learners["sea"]

    async def kill() -> None:
        os.kill(learner.proc.process.pid, signal.SIGKILL)
        await until(d, lambda: learner.restarts >= 1 and learner.alive, timeout=60)
        src.append(0, values[3000:])
        await until(d, lambda: count(d, "sea") == 6000)
        await asyncio.to_thread(learner.drain)

    assert run(d, lambda: learner.learned >= 1000, then=kill) == 0
    snap = d.snapshot()
    (component,) = [c for c in snap.daemon.components if c.name == "learner:sea"]
    assert component.restarts >= 1 and snap.pipeline.models["sea"].learner is not None
    assert learner.learned > 0 and learner.error is None


def test_any_authorization_header_gets_401_or_200_never_a_server_error() -> None:
    import socket

    src = MemorySource(events(10))
    d = daemon(src, None, state={"memory_only": True}, http={"port": 0, "token": "s3cret"})
    answers: list[bytes] = []

    def raw(header: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", d.http_port or 0), timeout=5) as conn:
            conn.sendall(
                b"GET /status HTTP/1.1\r\nHost: x\r\n" + header + b"Connection: close\r\n\r\n"
            )
            return conn.recv(100).split(b"\r\n", 1)[0]

    async def probe() -> None:
        for header in (
            "Authorization: Bearer é\r\n".encode(),  # UTF-8
            "Authorization: Bearer é\r\n".encode("latin-1"),  # not UTF-8 at all
            b"Authorization: Bearer \xff\xfe\r\n",
            b"",
            b"Authorization: Bearer s3cret\r\n",
        ):
            answers.append(await asyncio.to_thread(raw, header))

    assert run(d, lambda: d.http_port is not None, then=probe) == 0
    assert [a.split(b" ")[1] for a in answers] == [b"401"] * 4 + [b"200"]


def test_lag_is_exported_per_partition_and_in_event_time() -> None:
    src = MemorySource(events(3000))
    seen: dict[str, str] = {}

    async def scrape() -> None:
        import aiohttp

        d.source.logs[0].extend(events(700, seed=5))  # records the daemon has not fetched
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{d.http_port}/metrics") as r,
        ):
            seen["metrics"] = await r.text()

    d = daemon(src, MemoryStore())
    assert run(d, lambda: count(d) == 3000, scrape) == 0
    text = seen["metrics"]
    lag = [x for x in text.splitlines() if x.startswith("driftline_kafka_consumergroup_lag{")]
    (line,) = lag  # one partition, labelled as kafka_exporter labels its series
    labels, value = line.rsplit(" ", 1)
    assert labels == (
        'driftline_kafka_consumergroup_lag{consumergroup="driftline",partition="0",topic="memory"}'
    )
    assert 0 <= float(value) <= 700  # the daemon may have fetched some of them already
    event_lag = [
        x for x in text.splitlines() if x.startswith('driftline_event_lag_seconds{model="m"}')
    ]
    # the events are from 2023: years behind the wall clock
    assert event_lag and float(event_lag[0].split()[-1]) > 3 * 365 * 86400
