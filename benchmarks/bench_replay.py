"""``driftline replay`` over a file against the daemon over a topic, on the same events.

The events of ``bench_daemon`` (20 numeric features, PSI+KS+ADWIN on every series and on
the prediction) go once into an embedded broker (Tansu) and once into a JSON Lines file.
Then, alternating, each side runs in its own process: ``daemon`` consumes the topic in a
fresh consumer group (from the first record to the last); ``replay`` runs the replay
pipeline over the file (reading and decoding included). Reported: events/s (best, median)
and the ratio replay / daemon. Writes ``results/replay.json`` and ``results/replay.md``.

    python -m benchmarks.bench_replay            # 500k events, 3 runs per side
    python -m benchmarks.bench_replay --quick    # 50k events, 2 runs per side
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from .bench_daemon import (
    FEATURES,
    RESULTS,
    alternate,
    config,
    events,
    fill,
    report,
    run_daemon,
    worker_args,
)


def events_file(topic: str) -> Path:
    return Path(f"/tmp/driftline-bench-replay-{topic}.jsonl")


async def run_replay(topic: str) -> tuple[float, int]:
    from detectors import ADWIN, KS, PSI
    from monitor.config.schema import parse_config
    from monitor.replay.inputs import lines
    from monitor.replay.replay import Replay

    warm = np.random.default_rng(0).normal(size=(600, 2))
    for det in (ADWIN(), KS(warm, window=100, stride=10), PSI(warm, window=100)):
        det.update(warm)  # the compiled kernels loaded before the clock starts
    cfg = parse_config(config("127.0.0.1:9", topic, "replay"), env={})
    result = await Replay(cfg).run(lines([str(events_file(topic))]))
    return result.seconds, result.events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50k events, 2 runs per side")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    worker_args(parser, ["daemon", "replay"])
    args = parser.parse_args()
    if args.worker == "replay":
        report("replay", *asyncio.run(run_replay(args.topic)))
        return
    if args.worker == "daemon":
        report(
            "daemon", *asyncio.run(run_daemon(args.bootstrap, args.topic, args.group, args.events))
        )
        return

    from monitor.demo.broker import EmbeddedBroker, create_topics

    n = 50_000 if args.quick else 500_000
    repeats = 2 if args.quick else args.repeats
    topic = "bench-replay"
    console = Console()
    with EmbeddedBroker() as broker, Progress(console=console) as progress:
        asyncio.run(create_topics(broker.bootstrap, [topic]))
        task = progress.add_task(f"producing {n:,} events (topic and file)", total=1)
        values = events(n)
        asyncio.run(fill(broker.bootstrap, topic, values))
        events_file(topic).write_bytes(b"\n".join(values) + b"\n")
        del values
        progress.advance(task)
        task = progress.add_task("daemon / replay, alternating", total=2 * repeats)
        runs = alternate(
            "benchmarks.bench_replay",
            ("daemon", "replay"),
            broker.bootstrap,
            topic,
            n,
            repeats,
            on_run=lambda: progress.advance(task),
        )
    events_file(topic).unlink(missing_ok=True)

    def rates(mode: str) -> list[float]:
        return [r["events"] / r["seconds"] for r in runs[mode]]

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": n,
        "features": len(FEATURES),
        "runs": runs,
        "events_per_s": {
            m: {"max": max(rates(m)), "median": statistics.median(rates(m))} for m in runs
        },
        "ratio_median": statistics.median(rates("replay")) / statistics.median(rates("daemon")),
        "ratio_best": max(rates("replay")) / max(rates("daemon")),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "replay-quick" if args.quick else "replay"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    eps = result["events_per_s"]
    lines = [
        "# Replay benchmark",
        "",
        f"Measured {result['date']}: {n:,} events x {len(FEATURES)} numeric features, PSI+KS+ADWIN "
        f"on every series; each side in its own process, alternating, {repeats} runs each "
        "(`python -m benchmarks.bench_replay`).",
        "",
        "| side | events/s (best) | events/s (median) |",
        "|---|---|---|",
        *(
            f"| {label} | {eps[m]['max']:,.0f} | {eps[m]['median']:,.0f} |"
            for m, label in (
                ("daemon", "daemon over the topic (Tansu)"),
                ("replay", "`driftline replay` over the file"),
            )
        ),
        "",
        f"Ratio replay / daemon: **{result['ratio_median']:.2f}** (median), "
        f"{result['ratio_best']:.2f} (best runs).",
    ]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()
