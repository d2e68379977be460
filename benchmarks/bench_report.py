"""How big the replay's report gets, and how quickly a browser paints it: 100,000 events of
20 numeric features (PSI+KS+ADWIN on each and on the prediction), replayed with
``--report``, then opened three times in Debian's headless chromium (no network) to
measure the first contentful paint and the time until every plot is drawn. Writes
``results/report.json`` and ``results/report.md``.

    python -m benchmarks.bench_report
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from .bench_daemon import RESULTS, config, events

N = 100_000


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    work = Path(tempfile.mkdtemp(prefix="driftline-report-"))
    data = work / "events.jsonl"
    data.write_bytes(b"\n".join(events(N)) + b"\n")
    cfg = work / "driftline.yaml"
    cfg.write_text(yaml.safe_dump(config("127.0.0.1:9", "t", "g")))
    report = work / "report.html"
    start = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "replay",
            "-c",
            str(cfg),
            "-i",
            str(data),
            "--report",
            str(report),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    replay_s = time.perf_counter() - start
    plots = int(out.stdout.split("report written to")[1].split("(")[1].split()[0])
    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--window-size=1400,1000",
        "--host-resolver-rules=MAP * ~NOTFOUND",
    ):
        options.add_argument(arg)
    paints, drawn_s = [], []
    for _ in range(3):
        chrome = webdriver.Chrome(
            service=Service(str(shutil.which("chromedriver"))), options=options
        )
        try:
            t0 = time.perf_counter()
            chrome.get(report.as_uri())
            while (
                chrome.execute_script(
                    "return [...document.querySelectorAll('.js-plotly-plot')]"
                    ".filter(d => d.querySelector('.main-svg')).length"
                )
                < plots
            ):
                time.sleep(0.05)
            drawn_s.append(time.perf_counter() - t0)
            paints.append(
                chrome.execute_script(
                    "return performance.getEntriesByName('first-contentful-paint')[0].startTime"
                )
            )
        finally:
            chrome.quit()
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": N,
        "features": 20,
        "plots": plots,
        "report_bytes": report.stat().st_size,
        "replay_with_report_s": replay_s,
        "first_contentful_paint_ms": {"min": min(paints), "median": statistics.median(paints)},
        "all_plots_drawn_s": {"min": min(drawn_s), "median": statistics.median(drawn_s)},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Report benchmark",
        "",
        f"Measured {result['date']}: a replay of {N:,} events x 20 numeric features with "
        "`--report`, opened 3 times in headless chromium with no network "
        "(`python -m benchmarks.bench_report`).",
        "",
        "| what | value |",
        "|---|---|",
        f"| plots | {plots} |",
        f"| report size | {result['report_bytes'] / 1e6:.1f} MB |",
        "| first contentful paint (median) | "
        f"{result['first_contentful_paint_ms']['median']:.0f} ms |",
        f"| every plot drawn (median) | {result['all_plots_drawn_s']['median']:.1f} s |",
    ]
    (RESULTS / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
