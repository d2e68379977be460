"""Scale-out: two ``driftline run`` processes in one group share a multi-partition topic;
one is killed and the other takes its partitions over from the changelog topic. Compared
with one uninterrupted instance over the same stream: the same final state per partition
and the same alert ids."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiokafka import AIOKafkaProducer

from monitor.demo.broker import EmbeddedBroker, create_topics_sync, free_port
from monitor.state.changelog import ChangelogStore
from monitor.state.codec import decode_first
from monitor.state.stores import LocalStore

from .conftest import WebhookReceiver, daemon_config, loan_events
from .test_checkpoint import same
from .test_e2e_kafka import get, start_cli, write_config

pytestmark = pytest.mark.e2e  # a real broker (and real services)


MODELS = 4  # model i is keyed to partition i
N = 6000  # events per model
DRIFT = 4000


def stream(model: int) -> list[bytes]:
    events = loan_events(N, drift_at=DRIFT, seed=100 + model)
    return [e.replace(b'"model":"credit-v1"', f'"model":"m{model}"'.encode()) for e in events]


def produce(bootstrap: str, topic: str, lo: int, hi: int) -> None:
    """Events ``lo:hi`` of every model, each model to its own partition."""

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        try:
            for m in range(MODELS):
                for value in stream(m)[lo:hi]:
                    await producer.send(topic, value, key=f"m{m}".encode(), partition=m)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(go())


class Instance:
    running: ClassVar[list[Instance]] = []  # every instance started, stopped at the end

    def __init__(self, doc: dict[str, Any], tmp: Path) -> None:
        self.port = free_port()
        doc = json.loads(json.dumps(doc))
        doc["http"]["port"] = self.port
        tmp.mkdir(parents=True, exist_ok=True)
        self.log = tmp / "run.log"
        self.proc: subprocess.Popen[bytes] = start_cli(write_config(tmp, doc))
        Instance.running.append(self)

    def status(self) -> dict[str, Any]:
        code, body = get(self.port, "/status")
        assert code == 200
        result: dict[str, Any] = json.loads(body)
        return result

    def wait(self, ok: Any, timeout: float = 90) -> None:
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                code, body = get(self.port, "/status")
                last = json.loads(body) if code == 200 else None
                if last is not None and ok(last):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.proc.send_signal(signal.SIGUSR1)  # where it is stuck, into its log
        time.sleep(1)
        self.proc.kill()
        summary = (
            None
            if last is None
            else {
                "partitions": last["partitions"],
                "events": {m: v["events"] for m, v in last["models"].items()},
                "state": last["state"],
            }
        )
        raise AssertionError(f"timed out; last status: {summary}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0


def owned(status: dict[str, Any]) -> set[int]:
    return {int(p) for p in status["partitions"]}


def events_of(status: dict[str, Any]) -> dict[str, int]:
    return {
        m: status["models"][m]["events"] for p in status["partitions"].values() for m in p["models"]
    }


def config(bootstrap: str, topic: str, group: str, hook: str, state: dict[str, Any]) -> Any:
    doc = daemon_config(bootstrap, topic, sinks=[{"type": "webhook", "url": hook}])
    model = doc["models"].pop("credit-v1")
    doc["models"] = {f"m{i}": model for i in range(MODELS)}
    doc["kafka"]["group_id"] = group
    doc["kafka"]["max_batch_records"] = 500
    doc["state"] = {**state, "checkpoint_every_events": 1000}
    return doc


def test_two_instances_split_the_partitions_and_one_takes_over_when_the_other_dies(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = "scaleout"
    create_topics_sync(broker.bootstrap, [topic, f"{topic}.dlq"], partitions=MODELS)
    produce(broker.bootstrap, topic, 0, 3000)
    ref_hook, hook = WebhookReceiver().start(), WebhookReceiver().start()
    changelog = {"changelog_topic": f"{topic}.changelog"}
    try:
        a = Instance(config(broker.bootstrap, topic, "fo", hook.url, changelog), tmp_path / "a")
        a.wait(lambda s: owned(s) == set(range(MODELS)) and sum(events_of(s).values()) == 12000)

        # A second instance joins: the partitions split, and those handed over continue
        # from A's checkpoint (taken on revocation), not from a fresh warm-up.
        b = Instance(config(broker.bootstrap, topic, "fo", hook.url, changelog), tmp_path / "b")
        b.wait(lambda s: len(owned(s)) == 2 and set(events_of(s).values()) == {3000})
        a.wait(lambda s: len(owned(s)) == 2)
        b_parts = owned(b.status())
        assert owned(a.status()) == set(range(MODELS)) - b_parts
        assert b.status()["state"]["restores"] == {"restored": 2}

        # B works through part of the drift, then dies without a word.
        produce(broker.bootstrap, topic, 3000, 4500)
        b.wait(lambda s: set(events_of(s).values()) == {4500})
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(30)
        produce(broker.bootstrap, topic, 4500, N)

        # A takes B's partitions over from the changelog and finishes the stream.
        a.wait(
            lambda s: owned(s) == set(range(MODELS)) and set(events_of(s).values()) == {N},
            timeout=120,
        )
        assert a.status()["state"]["restores"]["restored"] == 2
        a.stop()
        log = a.log.read_text()
        for p in b_parts:
            assert f"restored partition {p} from {topic}.changelog" in log

        # The same stream through one uninterrupted instance.
        ref = Instance(
            config(broker.bootstrap, topic, "ref", ref_hook.url, {"path": str(tmp_path / "ref")}),
            tmp_path / "r",
        )
        ref.wait(lambda s: set(events_of(s).values()) == {N} and len(events_of(s)) == MODELS)
        ref.stop()
    finally:
        for inst in Instance.running:
            if inst.proc.poll() is None:
                inst.proc.kill()  # a failed step leaves no daemon running
                inst.proc.wait(30)
        Instance.running.clear()
        hook.stop()
        ref_hook.stop()

    async def final(p: int) -> dict[str, Any]:
        store = ChangelogStore(f"{topic}.changelog", bootstrap_servers=broker.bootstrap)
        await store.start()
        try:
            found = decode_first(await store.get(f"fo/{topic}/{p}"))
        finally:
            await store.stop()
        assert found is not None
        return {k: v for k, v in found[0].items() if k != "written_at"}

    for p in range(MODELS):
        expected = decode_first(LocalStore(tmp_path / "ref").load(f"ref.{topic}.{p}"))
        assert expected is not None
        expected[0].pop("written_at")
        same(asyncio.run(final(p)), expected[0])  # nothing lost, nothing counted twice

    ref_ids = {x["id"] for x in ref_hook.alerts}
    got_ids = {x["id"] for x in hook.alerts}
    assert got_ids == ref_ids  # no episode invented or doubled (re-deliveries keep the id)
    drifted = {x["model"] for x in ref_hook.alerts if x["feature"] == "salary"}
    assert drifted == {f"m{i}" for i in range(MODELS)}  # every model's drift caught
