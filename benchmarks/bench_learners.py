"""The online learners: how many labelled events each learns per second, and what learning
costs the consume loop.

1. Per learner, test-then-train throughput in its own thread (``OnlineLearner``) on
   Agrawal loan applications (9 features, 3 categorical), min and median of the runs.
2. The daemon over 200,000 events x 20 features in an embedded broker, alternating runs:
   without labels, and with every event labelled inline and a logistic-regression
   challenger learning them. The ratio of their events/s is the cost of learning to
   consumption (the learner runs beside it and samples when it falls behind).

Writes ``results/learners.json`` and ``results/learners.md``.

    python -m benchmarks.bench_learners            # full
    python -m benchmarks.bench_learners --quick    # small sizes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.console import Console
from rich.progress import Progress

from monitor.online.learner import LEARNERS, OnlineLearner

from .bench_daemon import FEATURES, MODEL, alternate, fill, report, run_daemon, worker_args

RESULTS = Path(__file__).parent / "results"
CLASSIFIERS = [name for name in LEARNERS if name != "linear_regression"]


NUMERIC = ["salary", "commission", "age", "hvalue", "hyears", "loan"]
CATEGORICAL = ["elevel", "car", "zipcode"]
Rows = tuple[Any, list[tuple[Any, ...]], list[bool]]


def agrawal_pairs(n: int) -> Rows:
    """Agrawal applications as the daemon hands them over: numeric matrix, categories,
    labels."""
    from river.datasets import synth

    rows = list(synth.Agrawal(classification_function=2, seed=3).take(n))
    num = np.array([[float(x[k]) for k in NUMERIC] for x, _ in rows])
    cats = [tuple(str(x[k]) for k in CATEGORICAL) for x, _ in rows]
    return num, cats, [bool(y) for _, y in rows]


def learner_rate(name: str, pairs: Rows) -> float:
    learner = OnlineLearner(
        name,
        "classification",
        {},
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        queue_size=len(pairs[2]) + 10,
    )
    learner.start()
    learner.drain(timeout=60)  # the process is up (river imported) before the clock starts
    start = time.perf_counter()
    learner.submit(pairs)
    learner.drain(timeout=600)
    took = time.perf_counter() - start
    learner.stop()
    return learner.learned / took


def labelled_events(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 1.0, (n, len(FEATURES)))
    pred = rng.random(n)
    return [
        orjson.dumps(
            {
                "model": MODEL,
                "id": str(i),
                "ts": 1.7e9 + i,
                "features": dict(zip(FEATURES, X[i].tolist(), strict=True)),
                "prediction": float(pred[i]),
                "label": bool(pred[i] > 0.5),
            }
        )
        for i in range(n)
    ]


def with_learner(doc: dict[str, Any]) -> None:
    doc["models"][MODEL]["task"] = "classification"
    doc["models"][MODEL]["online_model"] = {"learner": "logistic_regression", "queue_size": 20_000}


def worker(mode: str, bootstrap: str, topic: str, group: str, n: int) -> None:
    adjust = with_learner if mode == "learning" else None
    report(mode, *asyncio.run(run_daemon(bootstrap, topic, group, n, adjust)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    worker_args(parser, ["plain", "learning"])
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.bootstrap, args.topic, args.group, args.events)
        return

    from monitor.demo.broker import EmbeddedBroker, create_topics

    quick = args.quick
    console = Console()
    sizes = {
        "logistic_regression": 20_000,
        "hoeffding_adaptive_tree": 10_000,
        "adaptive_random_forest": 2_000,
    }
    if quick:
        sizes = {k: v // 10 for k, v in sizes.items()}
    repeats = 2 if quick else 3
    rates: dict[str, list[float]] = {name: [] for name in CLASSIFIERS}
    n = 30_000 if quick else 200_000
    with Progress(console=console) as progress:
        task = progress.add_task("learners", total=repeats * len(CLASSIFIERS))
        for _ in range(repeats):
            for name in CLASSIFIERS:
                rates[name].append(learner_rate(name, agrawal_pairs(sizes[name])))
                progress.advance(task)
        with EmbeddedBroker() as broker:
            asyncio.run(create_topics(broker.bootstrap, ["learn"]))
            values = labelled_events(n)
            asyncio.run(fill(broker.bootstrap, "learn", values))
            del values
            task = progress.add_task("daemon without / with learning", total=2 * repeats)
            runs = alternate(
                "benchmarks.bench_learners",
                ("plain", "learning"),
                broker.bootstrap,
                "learn",
                n,
                repeats,
                on_run=lambda: progress.advance(task),
            )

    def eps(mode: str) -> list[float]:
        return [r["events"] / r["seconds"] for r in runs[mode]]

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "learners_pairs_per_s": {
            k: {"max": max(v), "median": statistics.median(v)} for k, v in rates.items()
        },
        "daemon_events": n,
        "daemon_events_per_s": {m: statistics.median(eps(m)) for m in runs},
        "ratio_learning_vs_plain": statistics.median(eps("learning"))
        / statistics.median(eps("plain")),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "learners-quick" if quick else "learners"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Online learner benchmark",
        "",
        f"Measured {result['date']}. Test-then-train in the learner's thread on Agrawal loan "
        "applications (9 features, 3 categorical); median of the runs.",
        "",
        "| learner | labelled events/s (median) | best |",
        "|---|---|---|",
    ]
    for k, v in result["learners_pairs_per_s"].items():
        lines.append(f"| {k} | {v['median']:,.0f} | {v['max']:,.0f} |")
    lines += [
        "",
        f"The daemon over {n:,} events x {len(FEATURES)} features, every event labelled inline "
        "and a logistic-regression challenger learning them, consumes at "
        f"**{result['ratio_learning_vs_plain']:.2f}** of its events/s without labels "
        f"({result['daemon_events_per_s']['learning']:,.0f} vs "
        f"{result['daemon_events_per_s']['plain']:,.0f} events/s, medians).",
        "",
    ]
    (args.out / f"{name}.md").write_text("\n".join(lines))
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()
