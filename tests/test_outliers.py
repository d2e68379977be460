"""One absurd value must not blind a detector for the rest of the stream."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest

from monitor.config.schema import parse_config
from monitor.online.pipeline import Pipeline
from sinks.testing import RecordingSink


def stream(n: int, outlier_at: int, shift_at: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, n)
    x[shift_at:] += 3.0
    x[outlier_at] = 1e200
    return [
        orjson.dumps({"model": "m", "ts": 1.7e9 + i, "features": {"x": float(v)}})
        for i, v in enumerate(x)
    ]


def run(fence_iqr: float | None) -> tuple[RecordingSink, Pipeline]:
    cfg = parse_config(
        {
            "kafka": {"topic": "p"},
            "defaults": {
                "reference": {"warmup": 2000},
                "detectors": ["adwin"],
                "params": {"outliers": {"fence_iqr": fence_iqr}},
            },
            "models": {"m": {"features": {"x": "numeric"}}},
        },
        env={},
    )
    sink = RecordingSink()
    pipe = Pipeline.of(cfg, [sink])
    values = stream(20_000, outlier_at=4000, shift_at=12_000)

    async def go() -> None:
        for lo in range(0, len(values), 1000):
            await pipe.process(values[lo : lo + 1000])

    asyncio.run(go())
    return sink, pipe


@pytest.mark.parametrize("fenced", [True, False])
def test_a_single_huge_value_does_not_blind_adwin_to_a_later_shift(fenced: bool) -> None:
    sink, pipe = run(10.0 if fenced else None)
    fired = [a.start_event for a in sink.alerts if a.status == "firing" and a.feature == "x"]
    outliers = pipe.status.models["m"].series[0].outliers
    if fenced:
        assert outliers == 1  # counted as data quality
        assert fired and all(12_000 <= e < 12_500 for e in fired)
    else:  # what a plain ADWIN (river's too) does: blind for good after the 1e200
        assert outliers == 0
        assert not fired
