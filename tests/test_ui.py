"""The live status page, ``/ui``, in a real headless browser (Debian's chromium through
selenium, its own chromedriver, every host but the loopback unresolvable) against a running
daemon while events flow: it renders the models, the series with their scores and recent
history, the firing alerts, and logs no error in the console."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.ingest.source import MemorySource
from monitor.state.stores import MemoryStore

from .test_daemon import count, daemon, events, until

pytestmark = pytest.mark.e2e

SHOTS = Path(__file__).parent.parent / "docs" / "screenshots"


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, (
        "chromium and chromium-driver are needed (scripts/test.sh installs them)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no network but ours
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def test_the_status_page_shows_the_daemon_live_in_a_real_browser(
    browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    src = MemorySource(events(3000, shift_at=None))
    d = daemon(
        MemorySource([]) if False else src, MemoryStore(), http={"port": 0, "token": "s3cret"}
    )

    def page(check: Any, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, browser.page_source[:3000]
            time.sleep(0.2)

    async def visit() -> None:
        port = d.http_port
        await asyncio.to_thread(browser.get, f"http://127.0.0.1:{port}/ui")
        # without the token the answer says how to give it
        assert "open /ui?token=" in browser.find_element(By.TAG_NAME, "body").text
        await asyncio.to_thread(browser.get, f"http://127.0.0.1:{port}/ui?token=s3cret")
        await asyncio.to_thread(
            page, lambda: browser.execute_script("return document.body.dataset.ready") == "1"
        )
        # events flow: a drift on x of model m, while the page refreshes itself
        for k in range(6):
            src.append(0, events(1000, shift_at=0, seed=10 + k)[:1000])
            await asyncio.sleep(0.4)
        await until(d, lambda: count(d) == 9000)
        await asyncio.to_thread(
            page, lambda: "dl-" in browser.find_element(By.ID, "firing-body").text
        )
        await asyncio.sleep(2.5)  # one more refresh: every sparkline has samples
        models = browser.find_elements(By.CSS_SELECTOR, "section.model")
        assert [m.find_element(By.TAG_NAME, "h2").text.split()[0] for m in models] == ["m", "n"]
        first = models[0].text
        assert "9,000 events" in first or "9000 events" in first.replace(",", "")
        assert "version 1 from warmup" in first
        assert browser.find_elements(By.CSS_SELECTOR, "section.model svg.spark path")
        firing = browser.find_element(By.ID, "firing-body").text
        assert " x " in f" {firing} " and "ks" in firing
        SHOTS.mkdir(parents=True, exist_ok=True)
        shot = tmp_path / "status-page.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("DRIFTLINE_SCREENSHOTS"):
            shutil.copy(shot, SHOTS / "status-page.png")
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        # the first visit, before the token, was refused by design; nothing else may fail
        assert all("401" in e["message"] for e in errors), errors

    async def go() -> None:
        task = asyncio.create_task(d.run())
        try:
            await until(d, lambda: count(d) == 3000)
            await visit()
        finally:
            d.request_stop()
            assert await asyncio.wait_for(task, 30) == 0

    asyncio.run(go())
