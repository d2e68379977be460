"""Accepting a drift as the new normal: re-baselines from the recent or the next events, of
every series or some, their alerts, their checkpoints, a reference file that changed, and
the HTTP endpoint (fast tier: in-process, in-memory source; the real-broker tests repeat
it through the command line)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest

from monitor.config.plan import plan
from monitor.config.schema import parse_config
from monitor.ingest.source import MemorySource
from monitor.online import commands
from monitor.online.model_monitor import RebaselineError
from monitor.online.model_state import ModelState
from monitor.online.pipeline import Pipeline
from monitor.online.reference import Reference, write_reference
from monitor.state.stores import MemoryStore
from sinks.testing import RecordingSink

from .test_daemon import count, daemon, events, run, until

N = 6000


def stream(n: int, shift_at: int | None, seed: int = 0, start: int = 0) -> list[bytes]:
    """Model m: x (numeric) shifts by 3 sigma at ``shift_at``; c (categorical) never."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        x = float(rng.normal(3.0 if shift_at is not None and i >= shift_at else 0.0, 1.0))
        out.append(
            orjson.dumps(
                {
                    "model": "m",
                    "ts": 1.7e9 + i,
                    "features": {"x": x, "y": float(rng.normal()), "c": str(rng.integers(4))},
                }
            )
        )
    return out


def config(**alerting: Any) -> Any:
    return parse_config(
        {
            "kafka": {"topic": "t"},
            "defaults": {"reference": {"warmup": 1000, "keep_recent": 3000}},
            "alerting": {"resolve_after_events": 1000, "cooldown_events": 500, **alerting},
            "models": {"m": {"features": {"x": "numeric", "y": "numeric", "c": "categorical"}}},
        },
        env={},
    )


def feed(p: Pipeline, values: list[bytes], batch: int = 500) -> list[Any]:
    alerts = []
    for i in range(0, len(values), batch):
        alerts += asyncio.run(p.process(values[i : i + batch])).alerts
    return alerts


def drifted() -> tuple[Pipeline, list[Any]]:
    p = Pipeline.of(config())
    return p, feed(p, stream(N, shift_at=3000))


def test_from_recent_makes_the_last_events_the_reference_and_resolves_the_open_episodes() -> None:
    p, alerts = drifted()
    firing = {a.id for a in alerts if a.status == "firing" and a.feature == "x"}
    assert firing, "the 3-sigma shift of x must fire"
    done = commands.rebaseline(p, "m", "recent", 2000, None)
    mon = p.models["m"].monitor
    # exactly the last 2000 events, value for value
    x = np.array([orjson.loads(v)["features"]["x"] for v in stream(N, shift_at=3000)])
    assert np.array_equal(mon.reference.numeric[:, 0], x[-2000:])
    assert done.answer["reference"]["version"] == 2
    assert done.answer["reference"]["source"] == "recent"
    assert done.answer["reference"]["events"] == 2000
    assert done.answer["reference"]["at_event"] == N
    resolved = [a for a in done.alerts if a.feature is not None]
    ended = {a.id for a in alerts if a.status == "resolved"}
    open_before = {a.id for a in alerts if a.status == "firing" and a.feature} - ended
    assert {a.id for a in resolved} == open_before
    assert resolved and all(a.resolution == "rebaselined" for a in resolved)
    assert all(a.status == "resolved" and a.at_event == N for a in resolved)
    assert not [f for f, _, _ in p.models["m"].alerts.firing() if f is not None]
    # the shifted level is now normal: more of it fires nothing on x
    later = feed(p, stream(4000, shift_at=0, seed=5, start=N))
    assert not [a for a in later if a.status == "firing" and a.feature == "x"]


def test_only_the_series_named_are_rebaselined_and_the_others_keep_their_reference() -> None:
    p, _ = drifted()
    mon = p.models["m"].monitor
    old = mon.reference
    assert old is not None
    commands.rebaseline(p, "m", "recent", 2500, ["x"])
    new = mon.reference
    assert new is not None and new.n_events == 2500  # the longer of the two
    assert np.array_equal(new.numeric[:1000, 1], old.numeric[:, 1])  # y as it was
    assert np.isnan(new.numeric[1000:, 1]).all()  # padded with missing values
    assert new.categorical[0][:1000] == old.categorical[0]
    assert mon.info.features == ("x",)


def test_from_next_watches_the_others_meanwhile_and_takes_exactly_the_next_events() -> None:
    p, _ = drifted()
    done = commands.rebaseline(p, "m", "next", 1500, ["x"])
    assert done.answer["reference"]["pending"]["events"] == 1500
    mon = p.models["m"].monitor
    assert mon.info.version == 1
    later = stream(2000, shift_at=0, seed=6, start=N)
    # y drifts meanwhile: it is still watched; x raises nothing while its reference fills
    for i, v in enumerate(later):
        doc = orjson.loads(v)
        doc["features"]["y"] += 4.0
        later[i] = orjson.dumps(doc)
    alerts = feed(p, later, batch=250)
    assert [a for a in alerts if a.status == "firing" and a.feature == "y"]
    x_fired = [a for a in alerts if a.status == "firing" and a.feature == "x"]
    assert not [a for a in x_fired if a.at_event < N + 1500]
    assert mon.info.version == 2 and mon.info.source == "next" and mon.pending is None
    x = np.array([orjson.loads(v)["features"]["x"] for v in later[:1500]])
    assert np.array_equal(mon.reference.numeric[:, 0], x)


def test_a_rebaseline_survives_a_checkpoint_and_the_pending_one_too() -> None:
    cfg = config()
    for source in ("recent", "next"):
        p, _ = drifted()
        commands.rebaseline(p, "m", source, 1200, ["x", "c"])
        state = p.models["m"].export_state()
        restored = ModelState.from_state(plan(cfg)["m"], state)
        q = Pipeline.of(cfg)
        q.states.models["m"] = restored
        more = stream(3000, shift_at=0, seed=7, start=N)
        a, b = feed(p, more), feed(q, more)
        assert [x.to_dict() for x in a] == [x.to_dict() for x in b]
        assert q.models["m"].monitor.info == p.models["m"].monitor.info
        assert q.models["m"].monitor.info.version == 2


def test_what_cannot_be_done_says_why_with_its_http_status() -> None:
    p = Pipeline.of(config())
    with pytest.raises(RebaselineError) as unknown:
        commands.rebaseline(p, "nobody", "recent", 100, None)
    assert unknown.value.status == 404
    with pytest.raises(RebaselineError) as unseen:
        commands.rebaseline(p, "m", "recent", 100, None)
    assert unseen.value.status == 409 and "owns its partition" in str(unseen.value)
    feed(p, stream(500, shift_at=None))
    with pytest.raises(RebaselineError) as warming:
        commands.rebaseline(p, "m", "recent", 100, None)
    assert "warming up" in str(warming.value)
    feed(p, stream(1500, shift_at=None, start=500))
    cases = [
        (("recent", 5000, None), 400, "keep_recent"),
        (("recent", 2500, None), 409, "only 2000 recent events"),
        (("recent", 10, None), 400, "at least 20"),
        (("recent", 100, ["nope"]), 400, "no series ['nope']"),
        (("sideways", 100, None), 400, "'from' must be"),
    ]
    for args, status, words in cases:
        with pytest.raises(RebaselineError) as info:
            commands.rebaseline(p, "m", *args)
        assert info.value.status == status and words in str(info.value), (args, info.value)
    assert p.models["m"].monitor.info.version == 1  # nothing changed


def test_a_new_drift_after_a_rebaseline_fires_at_once_without_a_cooldown() -> None:
    p, _ = drifted()
    commands.rebaseline(p, "m", "recent", 2000, None)
    back = feed(p, stream(3000, shift_at=None, seed=8, start=N))  # back to the old level
    fired = [a for a in back if a.status == "firing" and a.feature == "x"]
    assert fired and fired[0].at_event < N + 1000


def test_a_changed_reference_file_replaces_the_checkpointed_reference(tmp_path: Path) -> None:
    path = tmp_path / "m.ref.json"
    doc = {
        "kafka": {"topic": "t"},
        "alerting": {"resolve_after_events": 1000, "cooldown_events": 500},
        "models": {
            "m": {
                "features": {"x": "numeric", "y": "numeric", "c": "categorical"},
                "reference": {"file": str(path)},
            }
        },
    }
    cfg = parse_config(doc, env={})
    rng = np.random.default_rng(1)
    cats = [[str(v) for v in rng.integers(4, size=1000)]]
    write_reference(Reference("m", rng.normal(size=(1000, 2)), cats), plan(cfg)["m"], path)
    p = Pipeline.of(cfg)
    alerts = feed(p, stream(4000, shift_at=1000))
    assert [a for a in alerts if a.status == "firing" and a.feature == "x"]
    saved = p.models["m"].export_state()

    same = ModelState.from_state(plan(cfg)["m"], saved)  # the file as it was: kept
    assert same.unsent == [] and same.monitor.info.version == 1

    shifted = rng.normal(size=(1000, 2)) + np.array([3.0, 0.0])
    write_reference(Reference("m", shifted, cats), plan(cfg)["m"], path)
    moved = ModelState.from_state(plan(cfg)["m"], saved)
    assert moved.monitor.info.source == "file" and moved.monitor.info.version == 2
    assert np.array_equal(moved.monitor.reference.numeric, shifted)
    assert moved.unsent and all(a.resolution == "rebaselined" for a in moved.unsent)
    assert {a.feature for a in moved.unsent if a.feature} == {"x"}


# -- over HTTP, in-process -----------------------------------------------------------------
async def post(port: int, path: str, body: Any, token: str | None) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    url = f"http://127.0.0.1:{port}{path}"
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return r.status, json.loads(await r.read())


def test_the_endpoint_needs_a_token_checks_its_body_and_rebaselines_with_one() -> None:
    values = events(6000, shift_at=3000)
    for token in (None, "s3cret"):
        sink = RecordingSink()
        http = {"port": 0} if token is None else {"port": 0, "token": token}
        d = daemon(MemorySource(values), MemoryStore(), sink=sink, http=http)
        answers: dict[str, tuple[int, Any]] = {}

        async def calls(d: Any = d, token: str | None = token, answers: Any = answers) -> None:
            port = d.http_port
            good = json.dumps({"from": "recent", "events": 2000, "features": ["x"]})
            answers["none"] = await post(port, "/models/m/reference", good, None)
            answers["wrong"] = await post(port, "/models/m/reference", good, "nope")
            answers["bad"] = await post(port, "/models/m/reference", '{"from": 1}', token)
            answers["model"] = await post(port, "/models/zz/reference", good, token)
            answers["ok"] = await post(port, "/models/m/reference", good, token)
            answers["next"] = await post(
                port, "/models/m/reference", json.dumps({"from": "next", "events": 500}), token
            )
            if token is not None:
                await until(d, lambda: d.snapshot().pipeline.models["m"].reference["version"] == 2)

        assert run(d, lambda d=d: count(d) == 6000, calls) == 0
        if token is None:
            assert {v[0] for v in answers.values()} == {403}
            assert "http.token" in answers["none"][1]["error"]
            assert d.snapshot().pipeline.models["m"].reference["version"] == 1
            continue
        assert answers["none"][0] == 401 and answers["wrong"][0] == 401
        assert answers["bad"][0] == 400 and answers["model"][0] == 404
        code, body = answers["ok"]
        assert code == 200, body
        assert body["reference"]["version"] == 2 and body["reference"]["features"] == ["x"]
        assert body["reference"]["events"] == 2000
        rebased = [a for a in sink.alerts if a.resolution == "rebaselined"]
        assert {a.id for a in rebased if a.feature} == set(body["resolved"])
        assert body["resolved"] and all(a.feature == "x" for a in rebased if a.feature)
        assert answers["next"][0] == 202
        assert answers["next"][1]["reference"]["pending"]["events"] == 500
