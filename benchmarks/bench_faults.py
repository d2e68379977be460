"""What the hostile world costs: a flood of malformed records, and scrapes during heavy
consumption, each against the same daemon on clean traffic, in one run.

Topics are filled once in an embedded broker (Tansu); then, alternating, each mode runs
the daemon in its own process over its own topic in a fresh consumer group:

* ``clean``: 100,000 valid events (20 numeric features, PSI+KS+ADWIN on each);
* ``flood``: 100,000 malformed records (bad JSON), every one dead-lettered to a
  dead-letter topic and acknowledged before its batch is committed;
* ``mixed``: the clean events with one record in ten malformed;
* ``scraped_20hz``: the clean events while another process scrapes ``/metrics`` and
  ``/status`` 20 times a second each (Prometheus scrapes every 15 s by default);
* ``scraped``: the same, scraping back to back as fast as the daemon answers (the worst
  case), recording every scrape's latency and status.

Reported: records/s (min, median), the cost per record relative to ``clean``, and for
``scraped`` the scrapes made, their errors and their p50/p99 latency. Writes
``results/faults.json`` and ``results/faults.md``.

    python -m benchmarks.bench_faults            # 100k records per mode, 3 runs each
    python -m benchmarks.bench_faults --quick    # 20k, 2 runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress

from .bench_daemon import config as daemon_config
from .bench_daemon import events, fill, peak_rss_mib

RESULTS = Path(__file__).parent / "results"
MODES = ("clean", "flood", "mixed", "scraped_20hz", "scraped")
BAD = b'{"model": "bench-v1", "features": {"f00": 1.0,'  # cut short: bad JSON


def records(mode: str, n: int) -> list[bytes]:
    if mode == "flood":
        return [BAD + str(i).encode() for i in range(n)]
    values = events(n)
    if mode == "mixed":
        for i in range(0, n, 10):
            values[i] = BAD + str(i).encode()
    return values


def topic_of(mode: str) -> str:
    return "bench-clean" if mode.startswith("scraped") else f"bench-{mode}"


async def scrape(port: int, until: float, out: Path, rate: float = 0.0) -> None:
    """Scrape /metrics and /status, back to back or ``rate`` times a second each, until
    ``until`` or SIGTERM; write every latency and the count of errors to ``out``."""
    import signal

    import aiohttp

    latencies: list[float] = []
    errors = 0
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    written = time.monotonic()

    def save() -> None:
        out.write_text(json.dumps({"latencies": latencies, "errors": errors}))

    up = False  # connection errors count only once the daemon has answered
    save()  # the worker waits for this file before it starts the daemon
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < until and not stop.is_set():
            if time.monotonic() - written > 0.2:  # a report even if killed before the end
                save()
                written = time.monotonic()
            for path in ("/metrics", "/status"):
                start = time.perf_counter()
                try:
                    async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
                        await resp.read()
                        errors += resp.status != 200
                        up = True
                except aiohttp.ClientError:
                    if not up:
                        await asyncio.sleep(0.02)
                        continue
                    errors += 1
                latencies.append(time.perf_counter() - start)
            if rate:
                await asyncio.sleep(1.0 / rate)
    save()


async def run_mode(mode: str, bootstrap: str, group: str, n: int) -> dict[str, Any]:
    from detectors import ADWIN, KS, PSI
    from monitor.app.build import build
    from monitor.config.schema import parse_config

    warm = np.random.default_rng(0).normal(size=(600, 2))
    for det in (ADWIN(), KS(warm, window=100, stride=10), PSI(warm, window=100)):
        det.update(warm)  # the compiled kernels loaded before the clock starts
    from monitor.demo.broker import free_port

    doc = daemon_config(bootstrap, topic_of(mode), group)
    doc["kafka"]["dead_letter_topic"] = "bench-dlq"
    doc["http"]["port"] = port = free_port()
    scraper = None
    report = Path(f"/tmp/driftline-scrapes-{group}.json")
    report.unlink(missing_ok=True)
    if mode.startswith("scraped"):  # started first: it scrapes as soon as the port answers
        rate = "20" if mode == "scraped_20hz" else "0"
        scraper = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_faults",
                "--scraper",
                str(port),
                "--report",
                str(report),
                "--rate",
                rate,
            ],
            stdout=subprocess.DEVNULL,  # never hold the worker's output pipe open
            stderr=subprocess.DEVNULL,
        )
        while not report.exists():
            await asyncio.sleep(0.05)
    daemon = build(parse_config(doc, env={}))
    task = asyncio.create_task(daemon.run())

    def seen() -> int:
        snap = daemon.snapshot().pipeline
        return sum(m.events for m in snap.models.values()) + sum(snap.rejected.values())

    while daemon.http_port is None:
        await asyncio.sleep(0.01)
    first = 0.0
    while seen() < n:
        if task.done():
            raise RuntimeError(f"daemon stopped: {task.result()}")
        if not first and seen():
            first = time.perf_counter()
        await asyncio.sleep(0.005)
    took = time.perf_counter() - first
    out: dict[str, Any] = {"mode": mode, "seconds": took, "records": seen()}
    if scraper is not None:
        scraper.terminate()
        try:  # the daemon must answer its last scrape meanwhile: wait off the loop
            await asyncio.to_thread(scraper.wait, 10)
        except subprocess.TimeoutExpired:
            scraper.kill()
        if report.exists():
            out["scrapes"] = json.loads(report.read_text())
            report.unlink()
    sent = sum(daemon.snapshot().daemon.dead_lettered.values())
    out["dead_lettered"] = sent
    daemon.request_stop()
    await task
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k records, 2 runs per mode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--scraper", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scraper is not None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(scrape(args.scraper, time.monotonic() + 600, args.report, args.rate))
        return
    if args.worker:
        print(
            json.dumps(asyncio.run(run_mode(args.worker, args.bootstrap, args.group, args.events)))
        )
        return

    from monitor.demo.broker import EmbeddedBroker, create_topics

    n = 20_000 if args.quick else 100_000
    repeats = 2 if args.quick else args.repeats
    console = Console()
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    with EmbeddedBroker() as broker, Progress(console=console) as progress:
        topics = sorted({topic_of(m) for m in MODES} | {"bench-dlq"})
        asyncio.run(create_topics(broker.bootstrap, topics))
        task = progress.add_task("producing", total=3)
        for mode in ("clean", "flood", "mixed"):
            asyncio.run(fill(broker.bootstrap, topic_of(mode), records(mode, n)))
            progress.advance(task)
        task = progress.add_task("consuming (modes alternating)", total=len(MODES) * repeats)
        for i in range(repeats):
            for mode in MODES:
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.bench_faults",
                        "--worker",
                        mode,
                        "--bootstrap",
                        broker.bootstrap,
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
                progress.advance(task)

    def rate(mode: str) -> list[float]:
        return [r["records"] / r["seconds"] for r in runs[mode]]

    clean = statistics.median(rate("clean"))
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "records_per_mode": n,
        "records_per_s": {
            m: {"min": min(rate(m)), "median": statistics.median(rate(m))} for m in MODES
        },
        "cost_per_record_vs_clean": {m: clean / statistics.median(rate(m)) for m in MODES},
        "runs": runs,
    }
    for mode in ("scraped_20hz", "scraped"):
        lat = [x for r in runs[mode] for x in r.get("scrapes", {}).get("latencies", [])]
        if lat:
            q = np.percentile(lat, [50, 99]) * 1000
            result[f"{mode}_scrapes"] = {
                "count_per_run": statistics.median(
                    len(r.get("scrapes", {}).get("latencies", [])) for r in runs[mode]
                ),
                "errors": sum(r.get("scrapes", {}).get("errors", 0) for r in runs[mode]),
                "p50_ms": float(q[0]),
                "p99_ms": float(q[1]),
                "max_ms": float(max(lat) * 1000),
            }
        for r in runs[mode]:  # the summary above is kept, not every latency
            if "scrapes" in r:
                r["scrapes"]["count"] = len(r["scrapes"].pop("latencies"))
    args.out.mkdir(parents=True, exist_ok=True)
    name = "faults-quick" if args.quick else "faults"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    cost = result["cost_per_record_vs_clean"]
    lines = [
        "# Faults benchmark: malformed floods and scrapes",
        "",
        f"Measured {result['date']}: {n:,} records per mode, {repeats} runs each, modes "
        "alternating, each in its own process (`python -m benchmarks.bench_faults`).",
        "",
        "| mode | records/s (median) | cost per record vs clean |",
        "|---|---|---|",
    ]
    for m in MODES:
        lines.append(f"| {m} | {result['records_per_s'][m]['median']:,.0f} | {cost[m]:.2f} |")
    for mode, what in (("scraped_20hz", "20 a second each"), ("scraped", "back to back")):
        if f"{mode}_scrapes" in result:
            sc = result[f"{mode}_scrapes"]
            lines += [
                "",
                f"`{mode}`: /metrics and /status scraped {what}: {sc['count_per_run']:,.0f} "
                f"scrapes per run, {sc['errors']} errors, latency p50 {sc['p50_ms']:.1f} ms, "
                f"p99 {sc['p99_ms']:.1f} ms, max {sc['max_ms']:.0f} ms.",
            ]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()
