"""Delayed labels: the join buffer, prequential metrics, and concept-drift alerts."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import orjson
import pytest
from river.datasets import synth

from monitor.config.schema import parse_config
from monitor.online.labels import JoinCounts, LabelJoin, Performance, change_point, infer_task
from monitor.online.pipeline import Pipeline
from sinks.testing import RecordingSink

from .streams import random_cuts


def test_join_counts_joined_expired_and_orphans() -> None:
    j = LabelJoin(max_pending=3, max_age_s=100.0)
    for k in range(5):  # p0 and p1 are pushed out by size
        j.expect(f"p{k}", k / 10, ts=float(k))
    assert j.label("p0", 1, ts=5.0) is None  # expired: an orphan now
    found = j.label("p3", 1, ts=5.0)
    assert found is not None and found.prediction == 0.3
    assert j.label("p3", 1, ts=5.0) is None  # labelled twice: the second is an orphan
    j.expect("late", 0.5, ts=10.0)
    j.expect("now", 0.5, ts=200.0)  # event time moves on: everything older than 100 s ages out
    assert (j.counts.joined, j.counts.expired, j.counts.orphan) == (1, 5, 2)
    assert list(j.pending) == ["now"]


def test_task_inference() -> None:
    assert infer_task(0.8, 1) == "classification"
    assert infer_task("yes", "no") == "classification"
    assert infer_task(0.8, True) == "classification"
    assert infer_task(3.2, 4.0) == "regression"


def test_classification_metrics_match_a_hand_computation() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random(500)
    labels = (rng.random(500) < probs).astype(int)
    perf = Performance(window=1000)
    perf.add([(float(p), int(y), 0.0) for p, y in zip(probs, labels, strict=True)])
    m = perf.metrics()
    pred = (probs >= 0.5).astype(int)
    tp = int(((pred == 1) & (labels == 1)).sum())
    assert m["accuracy"] == pytest.approx((pred == labels).mean())
    assert m["f1"] == pytest.approx(2 * tp / (pred.sum() + labels.sum()))
    p = np.clip(probs, 1e-15, 1 - 1e-15)
    assert m["log_loss"] == pytest.approx(
        -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    )


def test_regression_metrics_match_a_hand_computation() -> None:
    rng = np.random.default_rng(1)
    y, yhat = rng.normal(size=300), rng.normal(size=300)
    perf = Performance(task="regression", window=200)
    perf.add([(float(a), float(b), 0.0) for a, b in zip(yhat, y, strict=True)])
    err = np.abs(yhat - y)[-200:]
    m = perf.metrics()
    assert m["mae"] == pytest.approx(err.mean())
    assert m["rmse"] == pytest.approx(math.sqrt((err**2).mean()))


def sea_pairs(n_before: int, n_after: int) -> list[tuple[float, bool, float]]:
    """A production model that learnt SEA's first concept, scored on a stream whose concept
    switches (SEA variant 0 -> 2) after ``n_before`` labels."""
    stream = list(synth.SEA(variant=0, seed=1).take(n_before))
    stream += list(synth.SEA(variant=2, seed=2).take(n_after))
    return [(0.9 if x[0] + x[1] > 8 else 0.1, y, 1.7e9 + i) for i, (x, y) in enumerate(stream)]


def test_concept_drift_is_detected_near_the_change_with_error_rates() -> None:
    perf = Performance()
    drifts = []
    pairs = sea_pairs(6000, 6000)
    for lo in range(0, len(pairs), 700):
        drifts += perf.add(pairs[lo : lo + 700])
    assert len(drifts) >= 1
    d = drifts[0]
    assert 6000 <= d.index < 6600
    assert abs(d.change_at - 6000) < 100
    assert d.error_before < 0.02 < 0.05 < d.error_after


def test_no_concept_drift_on_a_stable_concept() -> None:
    perf = Performance()
    pairs = sea_pairs(12000, 0)
    assert sum(len(perf.add(pairs[lo : lo + 1000])) for lo in range(0, 12000, 1000)) == 0


def test_change_point_estimate() -> None:
    rng = np.random.default_rng(2)
    x = np.r_[rng.random(800) < 0.05, rng.random(200) < 0.4].astype(float)
    assert abs(change_point(x) - 800) < 30


def config(inline: bool) -> dict[str, object]:
    return {
        "kafka": {"topic": "p", "labels_topic": None if inline else "l"},
        "defaults": {"reference": {"warmup": 500}},
        "models": {
            "sea": {
                "features": {"x0": "numeric", "x1": "numeric", "x2": "numeric"},
                "prediction": "numeric",
                "task": "classification",
            }
        },
    }


def events(with_labels: bool) -> tuple[list[bytes], list[bytes]]:
    stream = list(synth.SEA(variant=0, seed=1).take(5000)) + list(
        synth.SEA(variant=2, seed=2).take(5000)
    )
    preds, labels = [], []
    for i, (x, y) in enumerate(stream):
        ev = {
            "model": "sea",
            "id": f"q{i}",
            "ts": 1.7e9 + i,
            "features": {f"x{k}": float(v) for k, v in x.items()},
            "prediction": 0.9 if x[0] + x[1] > 8 else 0.1,
        }
        if with_labels:
            ev["label"] = bool(y)
        else:
            labels.append(
                orjson.dumps(
                    {"model": "sea", "id": f"q{i}", "label": bool(y), "ts": 1.7e9 + i + 30}
                )
            )
        preds.append(orjson.dumps(ev))
    return preds, labels


@pytest.mark.parametrize("inline", [True, False])
def test_concept_drift_alert_from_inline_or_delayed_labels(inline: bool) -> None:
    sink = RecordingSink()
    pipe = Pipeline.of(parse_config(config(inline), env={}), [sink])
    preds, labels = events(with_labels=inline)

    async def go() -> None:
        for lo in range(0, len(preds), 1000):
            # delayed labels trail their predictions by one batch
            late = labels[lo - 1000 : lo] if lo and labels else []
            await pipe.process(preds[lo : lo + 1000], late)
        if labels:
            await pipe.process([], labels[-1000:])

    asyncio.run(go())
    concept = [a for a in sink.alerts if a.detector == "concept_drift"]
    assert concept and concept[0].status == "firing" and concept[0].feature is None
    a = concept[0]
    assert a.error_before is not None and a.error_after is not None
    assert a.error_before < a.error_after
    assert a.change_at is not None and abs(a.change_at - 5000) < 150
    perf = pipe.status.models["sea"].performance
    assert perf.labelled == 10000
    assert (perf.joined, perf.orphan) == ((0, 0) if inline else (10000, 0))
    assert all(a.feature is None for a in concept)


def test_labels_that_arrive_before_their_predictions_wait_and_join() -> None:
    j = LabelJoin(max_pending=100, max_age_s=60.0)
    for k in range(50):  # the labels partition was read first
        assert j.label(f"p{k}", k % 2, ts=100.0 + k) is None
    joined = [j.expect(f"p{k}", 0.5, ts=50.0 + k) for k in range(50)]
    assert [e.label for e in joined if e is not None] == [k % 2 for k in range(50)]
    assert (j.counts.joined, j.counts.expired, j.counts.orphan) == (50, 0, 0)
    assert not j.pending and not j.early


def test_early_labels_whose_prediction_never_comes_expire_as_orphans() -> None:
    j = LabelJoin(max_pending=3, max_age_s=60.0)
    for k in range(5):  # two are pushed out by count
        j.label(f"x{k}", 1, ts=float(k))
    assert j.counts.orphan == 2
    j.expect("other", 0.5, ts=100.0)  # event time moves on: the rest age out
    assert j.counts.orphan == 5 and not j.early


def test_the_join_state_round_trips_as_plain_data() -> None:
    j = LabelJoin(max_pending=10, max_age_s=60.0)
    j.expect("a", 0.4, ts=1.0)
    j.label("b", 1, ts=2.0)
    k = LabelJoin(max_pending=10, max_age_s=60.0)
    k.load_state(j.export_state())
    assert k.label("a", 0, ts=3.0) is not None and k.expect("b", 0.9, ts=3.0) is not None
    assert k.counts == JoinCounts(joined=2, expired=0, orphan=0)


@pytest.mark.parametrize("seed", range(3))
def test_concept_drifts_are_the_same_at_any_batch_size(seed: int) -> None:
    """One batch of 12,000 pairs (more than the 4,000 errors kept for the estimate), pairs
    one by one in random runs, and restored mid-way: the same drifts, field for field."""
    pairs = sea_pairs(6000, 6000)
    whole = Performance().add(pairs)
    assert whole and whole[0].error_before < whole[0].error_after
    rng = np.random.default_rng(seed)
    perf, got, restored = Performance(), [], False
    for lo, hi in random_cuts(rng, len(pairs), max_cuts=40):
        if lo >= 3000 and not restored:  # continue from plain data part way
            perf, restored = Performance(), perf.export_state()
            perf.load_state(restored)
        got += perf.add(pairs[lo:hi])
    assert restored and got == whole


def test_one_absurd_regression_error_does_not_blind_concept_drift() -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(size=12000)
    yhat = y + rng.normal(0, 0.1, size=12000)
    yhat[3000] = 1e200  # one absurd prediction
    yhat[8000:] += 0.6  # the model goes wrong
    perf = Performance(task="regression")
    drifts = []
    for lo in range(0, 12000, 500):
        drifts += perf.add(
            [
                (float(a), float(b), 0.0)
                for a, b in zip(yhat[lo : lo + 500], y[lo : lo + 500], strict=True)
            ]
        )
    assert perf.fence is not None and perf.fence < 10
    assert [d for d in drifts if 8000 <= d.index < 8600], drifts
    assert all(d.index >= 8000 for d in drifts)
