"""The daemon against a bare consume-and-decode loop over the same topic.

500,000 events with 20 numeric features go into an embedded broker (Tansu) once. Then,
alternating, each side runs in its own process (so peak RSS is its own) and consumes the
whole topic in a fresh consumer group:

* ``bare``: aiokafka ``getmany(max_records=5000)``, each value parsed with orjson and the
  batch turned into a float64 array: the floor any Python consumer pays;
* ``daemon``: ``driftline``'s daemon with PSI, KS and ADWIN on every feature and on the
  prediction, offsets committed after every batch.

Throughput is measured from the first record to the last (the group join is excluded) and
reported as events/s, min and median, with the ratio daemon / bare. Writes
``results/daemon.json`` and ``results/daemon.md``.

    python -m benchmarks.bench_daemon            # 500k events, 3 runs per side
    python -m benchmarks.bench_daemon --quick    # 50k events, 2 runs per side
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.progress import Progress

RESULTS = Path(__file__).parent / "results"
FEATURES = [f"f{i:02d}" for i in range(20)]
MODEL = "bench-v1"


def events(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 1.0, (n, len(FEATURES)))
    X[n // 2 :, :3] += 0.5  # three features drift half way
    pred = rng.random(n)
    return [
        orjson.dumps(
            {
                "model": MODEL,
                "id": str(i),
                "ts": 1.7e9 + i,
                "features": dict(zip(FEATURES, X[i].tolist(), strict=True)),
                "prediction": float(pred[i]),
            }
        )
        for i in range(n)
    ]


async def fill(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        for v in values:
            await producer.send(topic, v, key=MODEL.encode())
        await producer.flush()
    finally:
        await producer.stop()


def config(bootstrap: str, topic: str, group: str) -> dict[str, Any]:
    return {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "topic": topic,
            "group_id": group,
            "session_timeout_ms": 2000,
            "heartbeat_interval_ms": 300,
            "max_batch_records": 5000,
            "fetch_timeout_ms": 200,
        },
        "http": {"port": 0},
        "state": {"memory_only": True},  # the throughput of detection, not of checkpoints
        "defaults": {"reference": {"warmup": 2000}, "detectors": ["psi", "ks", "adwin"]},
        "models": {
            MODEL: {"features": dict.fromkeys(FEATURES, "numeric"), "prediction": "numeric"}
        },
    }


async def run_bare(bootstrap: str, topic: str, group: str, n: int) -> tuple[float, int]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    await consumer.start()
    seen = 0
    first = 0.0
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                if not first:
                    first = time.perf_counter()
                rows = []
                for r in records:
                    doc = orjson.loads(r.value)
                    feats = doc["features"]
                    rows.append([feats.get(f) for f in FEATURES] + [doc.get("prediction")])
                np.array(rows, dtype=np.float64)
                seen += len(records)
        return time.perf_counter() - first, seen
    finally:
        await consumer.stop()


async def run_daemon(
    bootstrap: str,
    topic: str,
    group: str,
    n: int,
    adjust: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[float, int]:
    """The daemon over the topic; ``adjust`` may change its configuration document first."""
    from detectors import ADWIN, KS, PSI
    from monitor.app.build import build
    from monitor.config.schema import parse_config

    # Load the compiled kernels before the clock starts, as a long-running daemon has.
    warm = np.random.default_rng(0).normal(size=(600, 2))
    for det in (ADWIN(), KS(warm, window=100, stride=10), PSI(warm, window=100)):
        det.update(warm)
    doc = config(bootstrap, topic, group)
    if adjust is not None:
        adjust(doc)
    daemon = build(parse_config(doc, env={}))
    task = asyncio.create_task(daemon.run())

    def seen() -> int:  # events accepted plus records rejected, from the status snapshot
        snap = daemon.snapshot().pipeline
        return sum(m.events for m in snap.models.values()) + sum(snap.rejected.values())

    first = 0.0
    while seen() < n:
        if task.done():
            raise RuntimeError(f"daemon stopped: {task.result()}")
        if not first and seen():
            first = time.perf_counter()
        await asyncio.sleep(0.005)
    took = time.perf_counter() - first
    daemon.request_stop()
    await task
    return took, seen()


def report(mode: str, seconds: float, seen: int) -> None:
    """A worker's one JSON line, read by :func:`alternate`."""
    out = {"mode": mode, "seconds": seconds, "events": seen, "peak_rss_mib": peak_rss_mib()}
    print(json.dumps(out))


def worker_args(parser: argparse.ArgumentParser, modes: list[str]) -> None:
    """The hidden arguments :func:`alternate` passes to a worker process."""
    parser.add_argument("--worker", choices=modes, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=None, help=argparse.SUPPRESS)


def worker(mode: str, bootstrap: str, topic: str, group: str, n: int) -> None:
    run = run_bare if mode == "bare" else run_daemon
    report(mode, *asyncio.run(run(bootstrap, topic, group, n)))


def peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM belongs to the address space made at
    exec; ``ru_maxrss`` would also count the parent's memory from before the fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def alternate(
    module: str,
    modes: tuple[str, ...],
    bootstrap: str,
    topic: str,
    n: int,
    repeats: int,
    on_run: Any = None,
) -> dict[str, list[dict[str, Any]]]:
    """Run ``python -m module --worker MODE`` for each mode in turn, ``repeats`` times, each
    in a fresh consumer group over the same topic; returns each worker's JSON line."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for i in range(repeats):
        for mode in modes:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    module,
                    "--worker",
                    mode,
                    "--bootstrap",
                    bootstrap,
                    "--topic",
                    topic,
                    "--group",
                    f"{mode}-{i}",
                    "--events",
                    str(n),
                ],
                capture_output=True,
                text=True,
                timeout=900,
                check=True,
            )
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
            if on_run is not None:
                on_run()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50k events, 2 runs per side")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=["bare", "daemon"], help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.bootstrap, args.topic, args.group, args.events)
        return

    from monitor.demo.broker import EmbeddedBroker, create_topics

    n = args.events or (50_000 if args.quick else 500_000)
    repeats = 2 if args.quick else args.repeats
    console = Console()
    with EmbeddedBroker() as broker, Progress(console=console) as progress:
        topic = "bench"
        asyncio.run(create_topics(broker.bootstrap, [topic]))
        task = progress.add_task(f"producing {n:,} events", total=1)
        t0 = time.perf_counter()
        values = events(n)
        asyncio.run(fill(broker.bootstrap, topic, values))
        produce_s = time.perf_counter() - t0
        del values  # the workers are forked from this process: keep it small
        progress.advance(task)
        task = progress.add_task("consuming (bare / daemon, alternating)", total=2 * repeats)
        runs = alternate(
            "benchmarks.bench_daemon",
            ("bare", "daemon"),
            broker.bootstrap,
            topic,
            n,
            repeats,
            on_run=lambda: progress.advance(task),
        )

    def rates(mode: str) -> list[float]:
        return [r["events"] / r["seconds"] for r in runs[mode]]

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": n,
        "features": len(FEATURES),
        "detectors": ["psi", "ks", "adwin"],
        "produce_events_per_s": n / produce_s,
        "runs": runs,
        "bare_events_per_s": {
            "max": max(rates("bare")),
            "median": statistics.median(rates("bare")),
        },
        "daemon_events_per_s": {
            "max": max(rates("daemon")),
            "median": statistics.median(rates("daemon")),
        },
        "ratio_best": max(rates("daemon")) / max(rates("bare")),
        "ratio_median": statistics.median(rates("daemon")) / statistics.median(rates("bare")),
        "peak_rss_mib": {m: max(r["peak_rss_mib"] for r in runs[m]) for m in runs},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "daemon-quick" if args.quick else "daemon"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = "\n".join(
        [
            "# Daemon benchmark",
            "",
            f"Measured {result['date']}: {n:,} events x {len(FEATURES)} numeric features in an "
            "embedded Tansu broker; each side consumes the whole topic in its own process, "
            f"alternating, {repeats} runs each. Throughput from first to last record.",
            "",
            "| side | events/s (best) | events/s (median) | peak RSS (MiB) |",
            "|---|---|---|---|",
            f"| bare `getmany` + orjson -> numpy | {result['bare_events_per_s']['max']:,.0f} | "
            f"{result['bare_events_per_s']['median']:,.0f} | "
            f"{result['peak_rss_mib']['bare']:.0f} |",
            f"| driftline daemon, PSI+KS+ADWIN on 21 series, commits per batch | "
            f"{result['daemon_events_per_s']['max']:,.0f} | "
            f"{result['daemon_events_per_s']['median']:,.0f} | "
            f"{result['peak_rss_mib']['daemon']:.0f} |",
            "",
            f"Ratio daemon / bare: **{result['ratio_median']:.2f}** (median), "
            f"{result['ratio_best']:.2f} (best runs).",
            "",
        ]
    )
    (args.out / f"{name}.md").write_text(md)
    console.print(md)


if __name__ == "__main__":
    main()
