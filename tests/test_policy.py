"""The alert policy through the real pipeline: episodes, resolve, cooldown, severity,
model-level alerts, and deterministic ids whatever the batching."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest

from monitor.alerting.alerts import Alert
from monitor.config.schema import Config, parse_config
from monitor.online.pipeline import Pipeline
from sinks.testing import RecordingSink


def config(**alerting: object) -> Config:
    return parse_config(
        {
            "kafka": {"topic": "p"},
            # The policy is tested on the detectors it was written against, at thresholds
            # near their former defaults (alpha 1e-5 per check, ADWIN delta 2e-4).
            "defaults": {
                "reference": {"warmup": 1000},
                "detectors": ["psi", "ks", "adwin"],
                "false_alerts_per_100k_events": 0.03,
                "params": {"adwin": {"delta": 2e-4}},
            },
            "alerting": {"resolve_after_events": 2000, "cooldown_events": 1000, **alerting},
            "models": {
                "m": {
                    "features": {"a": "numeric", "b": "numeric", "c": "categorical"},
                    "prediction": "numeric",
                }
            },
        },
        env={},
    )


def stream(n: int, shifted: tuple[int, int], seed: int = 0, features: str = "ab") -> list[bytes]:
    """Events whose features in ``features`` shift during ``shifted`` (event range)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        on = shifted[0] <= i < shifted[1]
        feats = {
            "a": float(rng.normal(3.0 if on and "a" in features else 0.0, 1.0)),
            "b": float(rng.normal(0.0, 1.0)) + (2.5 if on and "b" in features else 0.0),
            "c": str(rng.choice(3)),
        }
        out.append(
            orjson.dumps(
                {
                    "model": "m",
                    "ts": 1.7e9 + i,
                    "features": feats,
                    "prediction": float(rng.random()),
                }
            )
        )
    return out


def run(cfg: Config, values: list[bytes], cuts: list[tuple[int, int]]) -> list[Alert]:
    sink = RecordingSink()
    pipe = Pipeline.of(cfg, [sink])

    async def go() -> None:
        for lo, hi in cuts:
            await pipe.process(values[lo:hi])

    asyncio.run(go())
    return sink.alerts


def key(a: Alert) -> tuple[str, str | None, str]:
    return (a.id, a.feature, a.status)


def test_a_shift_fires_once_per_key_and_resolves_after_quiet() -> None:
    values = stream(12000, (4000, 7000))
    alerts = run(config(), values, [(i, i + 500) for i in range(0, 12000, 500)])
    firing = [a for a in alerts if a.status == "firing"]
    resolved = [a for a in alerts if a.status == "resolved"]
    feats = {(a.feature, a.detector) for a in firing}
    assert ("a", "ks") in feats and ("b", "psi") in feats and ("a", "adwin") in feats
    assert all(a.feature in ("a", "b", None) for a in firing)  # nothing on stable series
    # KS and PSI open one episode each per feature for the whole shift (an escalation to
    # critical re-sends the episode with the same id).
    for det in ("ks", "psi"):
        assert len({a.id for a in firing if a.detector == det and a.feature == "a"}) == 1
    # Every episode that fired was resolved after the shift ended, with the same id.
    assert {a.id for a in firing} == {a.id for a in resolved}
    for a in resolved:
        assert a.ended_at is not None
        if a.detector in ("ks", "psi"):
            # "differs from the reference": lasts until the shift is over (plus the quiet period)
            assert a.at_event >= 7000 + 2000
        elif a.detector == "adwin":
            # "the series changed": ADWIN adapts to the new level and falls quiet
            assert a.at_event == a.start_event + 2000
    assert all(4000 <= a.start_event < 5000 for a in firing if a.detector != "adwin")


def test_a_stable_stream_raises_no_alert() -> None:
    values = stream(15000, (0, 0), seed=3)
    assert run(config(), values, [(i, i + 1000) for i in range(0, 15000, 1000)]) == []


@pytest.mark.parametrize("seed", range(3))
def test_whole_alert_documents_do_not_depend_on_batching(seed: int) -> None:
    """Every field of every alert (ids, evidence, p-values, windows, summaries, times) is
    the same whether the stream comes in one batch or in random batches of 1 to 5,000."""
    values = stream(16000, (4000, 7000), seed=5)
    ref = [a.to_dict() for a in run(config(), values, [(0, 16000)])]
    assert len(ref) > 10 and any(a["p_value"] for a in ref)
    rng = np.random.default_rng(seed)
    cuts, lo = [], 0
    while lo < len(values):  # batch sizes from 1 to 5,000, small ones included
        hi = min(len(values), lo + int(rng.choice([1, 7, 100, 999, 2500, 5000])))
        cuts.append((lo, hi))
        lo = hi
    got = [a.to_dict() for a in run(config(), values, cuts)]
    assert got == ref


def test_model_level_alert_when_features_drift_together() -> None:
    values = stream(12000, (4000, 7000), seed=1, features="ab")
    alerts = run(config(), values, [(0, 12000)])
    model_level = [a for a in alerts if a.feature is None]
    assert [a.status for a in model_level] == ["firing", "resolved"]
    assert model_level[0].detector == "multiple" and set(model_level[0].features or []) == {
        "a",
        "b",
    }
    one = run(config(), stream(12000, (4000, 7000), seed=1, features="a"), [(0, 12000)])
    assert not [a for a in one if a.feature is None]


def test_cooldown_suppresses_a_new_episode_right_after_a_resolve() -> None:
    # Two shifts 2500 events apart: with a long cooldown the second cannot open an episode.
    values = stream(16000, (4000, 5500), seed=2, features="a")
    values[8000:9500] = stream(9500, (8000, 9500), seed=9, features="a")[8000:9500]
    short = run(config(cooldown_events=0), values, [(0, 16000)])
    long = run(config(cooldown_events=20000), values, [(0, 16000)])
    n_short = len({a.id for a in short if a.status == "firing" and a.detector == "ks"})
    n_long = len({a.id for a in long if a.status == "firing" and a.detector == "ks"})
    assert n_short == 2 and n_long == 1


def test_severity_follows_the_detecting_score() -> None:
    alerts = run(config(), stream(9000, (4000, 9000), features="b"), [(0, 9000)])
    firing = {a.detector: a for a in alerts if a.status == "firing" and a.feature == "b"}
    assert firing["psi"].severity == "critical"  # a 2.5-sigma shift: score >> threshold
    assert firing["psi"].score is not None and firing["psi"].threshold is not None
    assert firing["psi"].score >= 2 * firing["psi"].threshold
    assert firing["adwin"].score is not None and firing["adwin"].score > 1.0


@pytest.mark.parametrize("field", ["reference_summary", "current_summary", "window_size"])
def test_alerts_carry_context(field: str) -> None:
    alerts = run(config(), stream(6000, (3000, 6000), features="a"), [(0, 6000)])
    ks = next(a for a in alerts if a.detector == "ks")
    assert ks.to_dict()[field] is not None
    assert ks.p_value is not None and ks.p_value < 1e-3


def test_the_default_detectors_alerts_do_not_depend_on_batching() -> None:
    """The same with the shipped defaults (CUSUM banks, KS, PSI, the chi-squared test and
    category-share CUSUMs at the default target), whose calibrated thresholds and restarts
    after each alarm must not depend on where a batch ends either."""
    doc = {
        "kafka": {"topic": "p"},
        "defaults": {"reference": {"warmup": 1000}},
        "alerting": {"resolve_after_events": 2000, "cooldown_events": 1000},
        "models": {
            "m": {
                "features": {"a": "numeric", "b": "numeric", "c": "categorical"},
                "prediction": "numeric",
            }
        },
    }
    values = stream(16000, (4000, 7000), seed=5)
    ref = [a.to_dict() for a in run(parse_config(doc, env={}), values, [(0, 16000)])]
    assert {a["detector"] for a in ref} >= {"cusum", "ks", "psi"}
    rng = np.random.default_rng(11)
    cuts, lo = [], 0
    while lo < len(values):
        hi = min(len(values), lo + int(rng.choice([1, 7, 100, 999, 2500, 5000])))
        cuts.append((lo, hi))
        lo = hi
    assert [a.to_dict() for a in run(parse_config(doc, env={}), values, cuts)] == ref
