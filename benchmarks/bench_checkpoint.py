"""Checkpoints: their time and size per 1,000 monitored series, and what they cost the
consume loop.

1. Ten models x 100 numeric features (1,000 series, each with PSI, KS and ADWIN) warmed up
   and fed, all on one partition; then one checkpoint of that partition timed, min and
   median of the runs: snapshot + encode + write to the local store (atomic, fsync), and
   to the Kafka changelog store (chunked, acknowledged); restoring it from the changelog
   by a fresh store (read to the end, reassemble, verify); and its size.
2. The daemon over 200,000 events x 20 features in an embedded broker, alternating runs:
   checkpoints off, every 10,000 events to a local directory, and every 10,000 events to
   a changelog topic. The ratios of their events/s to "off" are the cost.

Writes ``results/checkpoint.json`` and ``results/checkpoint.md``.

    python -m benchmarks.bench_checkpoint [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.console import Console

from monitor.config.schema import parse_config
from monitor.online.pipeline import Pipeline
from monitor.state.changelog import ChangelogStore
from monitor.state.codec import decode, encode
from monitor.state.stores import LocalStore

from .bench_daemon import alternate, events, fill, report, run_daemon, worker_args

RESULTS = Path(__file__).parent / "results"


def pipe_config(n_models: int, n_features: int) -> Any:
    names = [f"f{i:03d}" for i in range(n_features)]
    return parse_config(
        {
            "kafka": {"topic": "t"},
            "defaults": {"reference": {"warmup": 2000}},
            "models": {
                f"m{k}": {"features": dict.fromkeys(names, "numeric")} for k in range(n_models)
            },
        },
        env={},
    )


def wide_pipeline(n_models: int, n_features: int, n_events: int) -> Pipeline:
    names = [f"f{i:03d}" for i in range(n_features)]
    pipe = Pipeline.of(pipe_config(n_models, n_features))
    rng = np.random.default_rng(0)
    for k in range(n_models):
        X = rng.normal(size=(n_events, n_features))
        values = [
            orjson.dumps(
                {"model": f"m{k}", "features": dict(zip(names, row.tolist(), strict=True))}
            )
            for row in X
        ]
        for lo in range(0, n_events, 1000):
            asyncio.run(pipe.process(values[lo : lo + 1000]))
    return pipe


def local(doc: dict[str, Any]) -> None:
    doc["state"] = {
        "path": tempfile.mkdtemp(prefix="driftline-bench-"),
        "checkpoint_every_events": 10_000,
        "checkpoint_every_s": 3600,
    }


def changelog(doc: dict[str, Any]) -> None:
    doc["state"] = {
        "changelog_topic": f"{doc['kafka']['group_id']}.changelog",
        "checkpoint_every_events": 10_000,
        "checkpoint_every_s": 3600,
    }


MODES = {"off": None, "local": local, "changelog": changelog}


def worker(mode: str, bootstrap: str, topic: str, group: str, n: int) -> None:
    report(mode, *asyncio.run(run_daemon(bootstrap, topic, group, n, MODES[mode])))


async def changelog_times(
    bootstrap: str, data: bytes, repeats: int
) -> tuple[list[float], list[float]]:
    """Seconds to write ``data`` as one checkpoint to a changelog topic, and to restore
    it with a fresh store (which reads the topic from the start)."""
    writes, reads = [], []
    for i in range(repeats):
        topic = f"bench-changelog-{i}"
        store = ChangelogStore(topic, bootstrap_servers=bootstrap)
        await store.start()
        start = time.perf_counter()
        await store.put("g/t/0", data)
        writes.append(time.perf_counter() - start)
        await store.stop()
        fresh = ChangelogStore(topic, bootstrap_servers=bootstrap)
        await fresh.start()
        start = time.perf_counter()
        found = await fresh.get("g/t/0")
        reads.append(time.perf_counter() - start)
        await fresh.stop()
        assert found
    return writes, reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    worker_args(parser, list(MODES))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.bootstrap, args.topic, args.group, args.events)
        return

    from monitor.demo.broker import EmbeddedBroker, create_topics

    console = Console()
    repeats = 2 if args.quick else 3
    console.print("building 10 models x 100 features ...")
    pipe = wide_pipeline(10, 100, 2500 if args.quick else 4000)
    store_dir = Path(tempfile.mkdtemp(prefix="driftline-ckpt-"))
    store = LocalStore(store_dir)
    times, restore_times = [], []
    path = None
    for _ in range(5):
        start = time.perf_counter()
        data = encode({"pipeline": pipe.export(0), "offsets": [(("t", 0), 0)]})
        path = store.save("bench", data)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        Pipeline.of(pipe_config(10, 100)).restore(0, decode(path.read_bytes())["pipeline"])
        restore_times.append(time.perf_counter() - start)
    assert path is not None
    size = path.stat().st_size
    n = 30_000 if args.quick else 200_000
    with EmbeddedBroker() as broker:
        console.print("changelog store: write and restore ...")
        writes, reads = asyncio.run(changelog_times(broker.bootstrap, data, 3))
        asyncio.run(create_topics(broker.bootstrap, ["ck"]))
        values = events(n)
        asyncio.run(fill(broker.bootstrap, "ck", values))
        del values
        runs = alternate(
            "benchmarks.bench_checkpoint",
            tuple(MODES),
            broker.bootstrap,
            "ck",
            n,
            repeats,
        )

    def eps(mode: str) -> float:
        return statistics.median(r["events"] / r["seconds"] for r in runs[mode])

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "series": 1000,
        "checkpoint_seconds": {"min": min(times), "median": statistics.median(times)},
        "restore_seconds": {"min": min(restore_times), "median": statistics.median(restore_times)},
        "checkpoint_bytes": size,
        "changelog_write_seconds": {"min": min(writes), "median": statistics.median(writes)},
        "changelog_restore_seconds": {"min": min(reads), "median": statistics.median(reads)},
        "daemon_events": n,
        "events_per_s": {m: eps(m) for m in runs},
        "ratio_local_vs_off": eps("local") / eps("off"),
        "ratio_changelog_vs_off": eps("changelog") / eps("off"),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "checkpoint-quick" if args.quick else "checkpoint"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = "\n".join(
        [
            "# Checkpoint benchmark",
            "",
            f"Measured {result['date']}.",
            "",
            "| what | value |",
            "|---|---|",
            "| series (10 models x 100 numeric features, PSI+KS+ADWIN each) | 1,000 |",
            f"| checkpoint to a local directory (export, pickle, fsync, rename), median | "
            f"{result['checkpoint_seconds']['median'] * 1000:.0f} ms |",
            f"| checkpoint size | {size / 1e6:.1f} MB |",
            f"| restoring it (read, check, unpickle plain data, rebuild the detectors), median | "
            f"{result['restore_seconds']['median'] * 1000:.0f} ms |",
            f"| the same checkpoint to a changelog topic (chunked, acknowledged), median | "
            f"{statistics.median(writes) * 1000:.0f} ms |",
            f"| restoring it from the changelog with a fresh store, median | "
            f"{statistics.median(reads) * 1000:.0f} ms |",
            f"| daemon events/s, checkpoints every 10,000 events to a directory vs off "
            f"({n:,} events x 20 features) | {result['ratio_local_vs_off']:.2f} |",
            f"| the same, to a changelog topic, vs off | {result['ratio_changelog_vs_off']:.2f} |",
            "",
        ]
    )
    (args.out / f"{name}.md").write_text(md)
    console.print(md)


if __name__ == "__main__":
    main()
