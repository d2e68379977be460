"""Reloading the configuration: what may change live and what needs a restart, thresholds
that change while detectors keep their windows (and across checkpoints), and the reload
endpoint of an in-process daemon (the real-broker tests send SIGHUP to the command)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yaml

from monitor.app.build import build
from monitor.config.plan import plan
from monitor.config.reload import changes
from monitor.config.schema import parse_config
from monitor.ingest.source import MemoryDeadLetters, MemorySource
from monitor.online.model_state import ModelState
from monitor.online.pipeline import Pipeline
from monitor.state.stores import MemoryStore
from sinks.testing import RecordingSink

from .test_daemon import count, events, run, until
from .test_rebaseline import feed, stream

BASE: dict[str, Any] = {
    "kafka": {"topic": "t"},
    "defaults": {"reference": {"warmup": 1000}},
    "models": {"m": {"features": {"x": "numeric", "y": "numeric", "c": "categorical"}}},
}


def cfg(**over: Any) -> Any:
    doc = json.loads(json.dumps(BASE))
    for key, value in over.items():
        doc[key] = value
    return parse_config(doc, env={})


@pytest.mark.parametrize(
    ("over", "live", "restart"),
    [
        ({"alerting": {"cooldown_events": 7}}, ["alerting"], []),
        ({"sinks": [{"type": "log"}]}, ["sinks"], []),
        ({"logging": {"level": "DEBUG"}}, ["logging"], []),
        ({"http": {"token": "t0k"}}, ["http.token"], []),
        ({"http": {"port": 9999}}, [], ["http"]),
        ({"kafka": {"topic": "u"}}, [], ["kafka"]),
        ({"labels": {"window": 50}}, [], ["labels"]),
        ({"state": {"memory_only": True}}, [], ["state"]),
        (
            {"defaults": {"reference": {"warmup": 1000}, "params": {"ks": {"alpha": 1e-3}}}},
            ["models.m (detector thresholds)"],
            [],
        ),
        (
            {"defaults": {"reference": {"warmup": 1000}, "params": {"ks": {"window": 300}}}},
            [],
            ["models.m (its series, detectors or their windows)"],
        ),
        (
            {"defaults": {"reference": {"warmup": 2000}}},
            [],
            ["models.m.reference"],
        ),
        (
            {"models": {"m": {"features": {"x": "numeric", "y": "numeric"}}}},
            [],
            ["models.m (its series, detectors or their windows)"],
        ),
        (
            {"models": {**BASE["models"], "n": {"features": {"z": "numeric"}}}},
            [],
            ["models.n (added)"],
        ),
    ],
)
def test_what_a_reload_may_change_live_and_what_needs_a_restart(
    over: dict[str, Any], live: list[str], restart: list[str]
) -> None:
    got = changes(cfg(), cfg(**over))
    assert (got.live, got.restart) == (live, restart)


def tuned(alpha: float) -> Any:
    params = {"ks": {"alpha": alpha}, "psi": {"alpha": alpha}, "categorical": {"alpha": alpha}}
    return cfg(defaults={"reference": {"warmup": 1000}, "params": params})


def ks_of(state: ModelState) -> Any:
    bank = state.monitor.bank
    assert bank is not None
    return next(g.det for g in bank.groups if g.detector == "ks")


def test_a_threshold_changes_while_the_detectors_keep_their_windows() -> None:
    p = Pipeline.of(tuned(1e-5))
    feed(p, stream(3000, shift_at=None))
    state = p.models["m"]
    before = ks_of(state).export_state(include_reference=False)
    old_threshold = ks_of(state).update(np.empty((0, 2))).threshold.copy()
    state.reconfigure(plan(tuned(1e-2))["m"])
    after = ks_of(state).export_state(include_reference=False)
    assert np.array_equal(before["ring"], after["ring"])  # the windows as they were
    assert np.array_equal(before["n_seen"], after["n_seen"])
    assert after["params"]["alpha"] == 1e-2
    new_threshold = ks_of(state).update(np.empty((0, 2))).threshold
    assert (new_threshold < old_threshold).all()  # a looser alpha, a lower critical D
    # the same as a daemon that ran with the new threshold over the same windows
    more = stream(2000, shift_at=0, seed=3, start=3000)
    q = Pipeline.of(tuned(1e-2))
    q.states.models["m"] = ModelState.from_state(plan(tuned(1e-2))["m"], state.export_state())
    assert [a.to_dict() for a in feed(p, more)] == [a.to_dict() for a in feed(q, more)]


def test_a_checkpoint_is_restored_under_new_thresholds_and_an_old_fingerprint_still_loads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = Pipeline.of(tuned(1e-5))
    feed(p, stream(3000, shift_at=None))
    saved = p.models["m"].export_state()
    restored = ModelState.from_state(plan(tuned(1e-3))["m"], saved)
    assert restored.monitor.events == 3000 and ks_of(restored).alpha == 1e-3
    legacy = {**saved, "fingerprint": plan(tuned(1e-5))["m"].fingerprint(legacy=True)}
    assert ModelState.from_state(plan(tuned(1e-5))["m"], legacy).monitor.events == 3000
    # thresholds that make x and y share detectors differently: fresh detectors, same
    # reference, a warning
    split = cfg(
        defaults={"reference": {"warmup": 1000}},
        models={
            "m": {
                "features": {
                    "x": "numeric",
                    "y": {"type": "numeric", "params": {"ks": {"alpha": 1e-3}}},
                    "c": "categorical",
                }
            }
        },
    )
    with caplog.at_level(logging.WARNING):
        moved = ModelState.from_state(plan(split)["m"], saved)
    assert "share detectors differently" in caplog.text
    assert moved.monitor.reference is not None
    assert np.array_equal(moved.monitor.reference.numeric, p.models["m"].monitor.reference.numeric)
    assert ks_of(moved).export_state()["n_seen"].max() == 0


def test_alerting_changes_apply_to_open_episodes() -> None:
    slow = cfg(alerting={"resolve_after_events": 5000, "cooldown_events": 500})
    quick = cfg(alerting={"resolve_after_events": 300, "cooldown_events": 500})
    calm = stream(2000, shift_at=None, seed=9, start=4000)
    ended = {}
    for name, after in (("kept", slow), ("reloaded", quick)):
        p = Pipeline.of(slow)
        alerts = feed(p, stream(4000, shift_at=2000))
        assert [a for a in alerts if a.status == "firing" and a.feature == "x"]
        p.models["m"].reconfigure(plan(after)["m"])
        ended[name] = [a for a in feed(p, calm) if a.status == "resolved" and a.feature == "x"]
    assert ended["kept"] == []  # 5000 quiet events cannot pass in 2000
    assert ended["reloaded"] and all(a.resolution == "quiet" for a in ended["reloaded"])


# -- the endpoint, in-process ----------------------------------------------------------------
def write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(doc))


async def post(port: int, token: str | None) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    url = f"http://127.0.0.1:{port}/-/reload"
    async with aiohttp.ClientSession() as http, http.post(url, headers=headers) as r:
        return r.status, json.loads(await r.read())


async def metrics(port: int) -> str:
    await asyncio.sleep(0.3)  # past the page cache (0.25 s)
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return await r.text()


def test_the_reload_endpoint_applies_refuses_and_reports(tmp_path: Path) -> None:
    path = tmp_path / "driftline.yaml"
    doc: dict[str, Any] = {
        "kafka": {"topic": "memory", "max_batch_records": 500, "fetch_timeout_ms": 20},
        "http": {"port": 0, "token": "s3cret"},
        "defaults": {"reference": {"warmup": 1000}},
        "alerting": {"resolve_after_events": 1000, "cooldown_events": 500},
        "models": {"m": {"features": {"x": "numeric", "y": "numeric"}}},
        "state": {"memory_only": True},
    }
    write(path, doc)
    src = MemorySource(events(3000))
    d = build(
        parse_config(yaml.safe_load(path.read_text()), env={}),
        source=src,
        store=MemoryStore(),
        sinks=[RecordingSink()],
        dead_letters=MemoryDeadLetters(),
        learners={},
        probe_interval_s=0.05,
        config_path=path,
    )
    seen: dict[str, Any] = {}

    async def steps() -> None:
        port = d.http_port
        assert port is not None
        seen["no token"] = await post(port, None)
        write(path, {**doc, "alerting": {"resolve_after_events": 300, "cooldown_events": 50}})
        seen["alerting"] = await post(port, "s3cret")
        seen["quiet"] = d.pipeline.models["m"].alerts.keys.quiet
        seen["after ok"] = await metrics(port)
        write(path, {**doc, "kafka": {**doc["kafka"], "topic": "elsewhere"}})
        seen["topic"] = await post(port, "s3cret")
        path.write_text("kafka: [unclosed")
        seen["yaml"] = await post(port, "s3cret")
        seen["after bad"] = await metrics(port)
        seen["status"] = d.snapshot().daemon.reload
        write(path, {**doc, "http": {"port": 0, "token": "n3w"}})
        seen["token"] = await post(port, "s3cret")
        seen["old token"] = await post(port, "s3cret")
        src.append(0, events(1000, seed=2)[:1000])
        await until(d, lambda: count(d) == 4000)

    assert run(d, lambda: count(d) == 3000, steps) == 0
    assert seen["no token"][0] == 401
    assert seen["alerting"] == (200, {"status": "reloaded", "changed": ["alerting"]})
    assert seen["quiet"] == 300
    assert "driftline_config_last_reload_successful 1.0" in seen["after ok"]
    code, body = seen["topic"]
    assert code == 409 and body["restart"] == ["kafka"] and "restart" in body["error"]
    code, body = seen["yaml"]
    assert code == 400 and "not valid YAML" in body["error"]
    assert "driftline_config_last_reload_successful 0.0" in seen["after bad"]
    assert seen["status"].successful is False and "YAML" in seen["status"].error
    assert seen["token"][0] == 200 and seen["old token"][0] == 401  # the new token rules
    assert d.config.kafka.topic == "memory"  # the refused change never applied
