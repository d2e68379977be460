"""The online challenger: test-then-train, adaptation on concept drift, /predict."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from monitor.app.build import build, build_learners
from monitor.config.plan import plan
from monitor.config.schema import parse_config
from monitor.ingest.source import MemorySource
from monitor.online.learner import OnlineLearner, make_model, river_features
from monitor.online.pipeline import Pipeline
from monitor.state.stores import LocalStore
from sinks.testing import RecordingSink

from .conftest import sea_stream

N_BEFORE, N_AFTER = 5000, 8000


def sea_events() -> list[bytes]:
    """SEA with a concept switch after N_BEFORE events; labels inline."""
    return sea_stream(N_BEFORE, N_AFTER)[0]


def config(learner: str, http: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "kafka": {"topic": "p"},
        "defaults": {"reference": {"warmup": 1000}},
        "models": {
            "sea": {
                "features": {"x0": "numeric", "x1": "numeric", "x2": "numeric"},
                "prediction": "numeric",
                "task": "classification",
                "online_model": {"learner": learner, **extra},
            }
        },
        **({"http": {"port": 0}} if http else {}),
    }


@pytest.mark.parametrize("learner", ["logistic_regression", "hoeffding_adaptive_tree"])
def test_concept_drift_is_caught_and_the_learner_recovers(learner: str) -> None:
    sink = RecordingSink()
    plans = plan(parse_config(config(learner), env={}))
    learners = build_learners(plans)
    pipe = Pipeline(plans, learners=learners, sinks=[sink])
    learners["sea"].start()
    try:
        values = sea_events()
        for lo in range(0, len(values), 1000):
            asyncio.run(pipe.process(values[lo : lo + 1000]))
        learners["sea"].drain()
    finally:
        learners["sea"].stop()
    concept = [a for a in sink.alerts if a.detector == "concept_drift" and a.status == "firing"]
    assert concept, "no concept_drift alert"
    first = concept[0]
    assert N_BEFORE <= first.start_event < N_BEFORE + 1000  # a bounded delay
    assert first.adaptation and learner in first.adaptation
    # The features never drift: no data-drift alert on them.
    assert not [a for a in sink.alerts if a.feature in ("x0", "x1", "x2")]
    pipe.publish()
    fixed = pipe.status.models["sea"].performance.metrics["accuracy"]
    online = learners["sea"].metrics()["accuracy"]
    assert fixed is not None and online is not None
    assert online > fixed, (online, fixed)  # the last 1000 labels, all after the drift
    assert learners["sea"].adaptations >= 1


def test_river_features_and_learner_choices() -> None:
    assert river_features({"a": 1.0, "c": "x", "m": None}, one_hot=False) == {"a": 1.0, "c": "x"}
    with pytest.raises(ValueError, match="classification"):
        make_model("logistic_regression", "regression", {})
    with pytest.raises(ValueError, match="unknown learner"):
        make_model("svm", "classification", {})
    assert make_model("adaptive_random_forest", "regression", {"seed": 1}) is not None


def test_config_requires_a_task_that_fits_the_learner() -> None:
    doc = config("logistic_regression")
    doc["models"]["sea"]["task"] = "regression"
    with pytest.raises(Exception, match="does not fit task regression"):
        parse_config(doc, env={})
    del doc["models"]["sea"]["task"]
    with pytest.raises(Exception, match="needs the model's task"):
        parse_config(doc, env={})


def test_a_full_backlog_drops_batches_instead_of_blocking() -> None:
    learner = OnlineLearner(
        "logistic_regression", "classification", {}, numeric=["x"], categorical=[], queue_size=10
    )
    for b in range(5):  # not started: nothing is learned yet, the backlog fills up
        learner.submit(
            (
                np.arange(b * 5, b * 5 + 5, dtype=float)[:, None],
                [()] * 5,
                [i % 2 == 0 for i in range(5)],
            )
        )
    assert learner.lag == 10 and learner.dropped == 15
    learner.start()
    learner.drain()
    assert learner.learned == 10 and learner.lag == 0
    assert asyncio.run(learner.predict({"x": 3.0}))["learned"] == 10
    learner.stop()


def post(port: int | None, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_predict_endpoint_answers_and_refuses_bad_input() -> None:
    doc = config("logistic_regression", http=True)
    values = sea_events()[:3000]
    daemon = build(parse_config(doc, env={}), source=MemorySource(values), sinks=[], store=None)

    async def go() -> dict[str, tuple[int, dict[str, Any]]]:
        task = asyncio.create_task(daemon.run())
        while daemon.parts.learners["sea"].learned < 3000:
            await asyncio.sleep(0.05)
        out = {}
        cases = {
            "good": ("/models/sea/predict", {"features": {"x0": 9.0, "x1": 9.0, "x2": 1.0}}),
            "low": ("/models/sea/predict", {"features": {"x0": 0.5, "x1": 0.5, "x2": None}}),
            "no_features": ("/models/sea/predict", {"x0": 1}),
            "bad_type": ("/models/sea/predict", {"features": {"x0": "high"}}),
            "unknown_feature": ("/models/sea/predict", {"features": {"zz": 1}}),
            "unknown_model": ("/models/nope/predict", {"features": {}}),
        }
        for name, (path, body) in cases.items():
            out[name] = await asyncio.to_thread(post, daemon.http_port, path, orjson.dumps(body))
        out["not_json"] = await asyncio.to_thread(
            post, daemon.http_port, "/models/sea/predict", b"{oops"
        )
        daemon.request_stop()
        await task
        return out

    got = asyncio.run(go())
    code, body = got["good"]
    assert code == 200 and body["prediction"] is True and body["proba"]["true"] > 0.5
    assert body["learned"] == 3000
    assert got["low"][0] == 200 and got["low"][1]["prediction"] is False
    for case in ("no_features", "bad_type", "unknown_feature", "not_json"):
        assert got[case][0] == 400 and got[case][1]["error"], case
    assert "x0" in got["bad_type"][1]["error"] and "zz" in got["unknown_feature"][1]["error"]
    assert got["unknown_model"][0] == 404


@pytest.mark.e2e  # learner processes, three daemons per learner
@pytest.mark.parametrize("learner", ["logistic_regression", "hoeffding_adaptive_tree"])
def test_the_learner_is_checkpointed_with_its_partition_and_continues_exactly(
    learner: str, tmp_path: Any
) -> None:
    """A daemon with a local store stops halfway; a second one restores the partition, the
    learner included, and answers predictions exactly as one that never stopped."""
    values = sea_events()[:6000]
    probes = [{"x0": float(a), "x1": float(b), "x2": 5.0} for a in range(0, 10, 3) for b in (1, 8)]

    def run(part: list[bytes], state: Any) -> list[dict[str, Any]]:
        doc = config(learner, params={"seed": 3} if "tree" in learner else {})
        doc["state"] = {"path": str(state), "checkpoint_every_events": 10_000_000}
        daemon = build(
            parse_config(doc, env={}),
            source=MemorySource(part),
            sinks=[],
            store=LocalStore(state),
        )

        async def go() -> list[dict[str, Any]]:
            task = asyncio.create_task(daemon.run())
            lrn = daemon.parts.learners["sea"]
            # Finished batches (not merely counted ones): their pairs are with the learner.
            while daemon.snapshot().daemon.positions.get(("memory", 0), 0) < len(part):
                await asyncio.sleep(0.05)
            await asyncio.to_thread(lrn.drain)
            answers = [await lrn.predict(p) for p in probes]
            answers.append({"adaptations": lrn.adaptations, "dropped": lrn.dropped})
            daemon.request_stop()
            assert await task == 0
            return answers

        return asyncio.run(go())

    whole = run(values, tmp_path / "a")
    run(values[:3000], tmp_path / "b")  # stops cleanly: a final checkpoint
    resumed = run(values, tmp_path / "b")  # restored: reads on from offset 3000
    assert [a.get("learned") for a in whole[:-1]] == [6000] * len(probes)
    assert resumed[-1] == whole[-1]
    assert resumed == whole  # same model, same probabilities, same count of pairs learned


def test_stopping_a_learner_with_a_backlog_it_never_read_does_not_block_exit(
    tmp_path: Path,
) -> None:
    """The learner process is stopped (terminated) while megabytes it never read wait in
    its pipe: the parent must still exit at once (it used to hang at exit, its queue's
    feeder thread writing into a pipe nobody read)."""
    script = tmp_path / "backlog.py"
    script.write_text(
        "import numpy as np\n"
        "from monitor.online.learner import OnlineLearner\n"
        "learner = OnlineLearner('logistic_regression', 'classification', {},\n"
        "    numeric=['x'], categorical=[], queue_size=10**9)\n"
        "learner.start()\n"
        "for _ in range(40):  # far more than it learns before it is stopped\n"
        "    learner.submit((np.zeros((20_000, 1)), [()] * 20_000, [True] * 20_000))\n"
        "learner.stop(timeout=0.5)\n"
        "print('stopped')\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"
