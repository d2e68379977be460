"""Decoding: the wire contract, reject reasons and data-quality counts."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from monitor.config.schema import parse_config
from monitor.ingest.decode import Decoder

CONFIG = parse_config(
    {
        "kafka": {"topic": "p", "max_record_bytes": 10_000},
        "models": {
            "credit-v1": {
                "features": {"salary": "numeric", "age": "numeric", "elevel": "categorical"},
                "prediction": "numeric",
            }
        },
    },
    env={},
)


def event(**over: object) -> bytes:
    doc: dict[str, object] = {
        "model": "credit-v1",
        "id": "0f8e",
        "ts": 1764158400.25,
        "features": {"salary": 52000.0, "age": 41, "elevel": "2"},
        "prediction": 0.83,
        "label": 1,
    }
    doc.update(over)
    return orjson.dumps(doc)


def test_the_contract_example_decodes() -> None:
    batches, rejected = Decoder.of(CONFIG).decode([event()])
    assert rejected == []
    b = batches["credit-v1"]
    assert b.numeric.tolist() == [[52000.0, 41.0, 0.83]]
    assert b.categorical == [["2"]]
    assert b.ids == ["0f8e"] and b.ts == [1764158400.25] and b.labels == [1]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"[1, 2]", "not_an_object"),
        (orjson.dumps({"features": {}}), "missing_model"),
        (orjson.dumps({"model": 3, "features": {}}), "wrong_type"),
        (orjson.dumps({"model": "other", "features": {}}), "unknown_model"),
        (orjson.dumps({"model": "credit-v1"}), "missing_features"),
        (orjson.dumps({"model": "credit-v1", "features": [1]}), "wrong_type"),
        (event(ts="yesterday"), "bad_timestamp"),
        (event(ts="2025-11-26T12:00:00"), "bad_timestamp"),  # no UTC offset
        (event(ts=-5), "bad_timestamp"),  # before 1970
        (event(ts=True), "bad_timestamp"),
        (event(ts=4102444800.0), "bad_timestamp"),  # 2100: beyond the clock + 1 day
        (event(id=1.5), "wrong_type"),
        (event(id=[1]), "wrong_type"),
        (b'{"model": "credit-v1", "features": {"salary": 1}, "ts": NaN}', "bad_timestamp"),
        (b'{"model": "credit-v1", "features": {"salary": "\xff"}}', "bad_json"),
        (
            b'{"model": "credit-v1", "features": {}, "label": ' + b"[" * 3000 + b"]" * 3000 + b"}",
            "bad_json",
        ),
        (
            b'{"model": "credit-v1", "features": {"x": ' + b"[" * 3000 + b"]" * 3000 + b"}}",
            "bad_json",
        ),
        (b"x" * 10_001, "oversized"),
        (b"", "empty"),
        (None, "empty"),
    ],
)
def test_unusable_envelopes_are_rejected_with_a_reason(raw: bytes | None, reason: str) -> None:
    batches, rejected = Decoder.of(CONFIG).decode([event(), raw, event()])
    assert [(r.index, r.reason) for r in rejected] == [(1, reason)]
    assert rejected[0].detail
    assert batches["credit-v1"].index == [0, 2]


def test_odd_feature_values_are_data_quality_not_rejections() -> None:
    values = [
        event(features={"salary": "lots", "age": None, "elevel": 2, "extra": 1}),
        event(features={"salary": 1.0, "elevel": {"x": 1}}),
        event(features={"salary": True, "age": 3, "elevel": 2.0}, prediction="yes"),
        b'{"model": "credit-v1", "features": {"salary": 1e400, "age": NaN, "elevel": "1"},'
        b' "prediction": -Infinity}',
        b'{"model": "credit-v1", "features": {"salary": ' + b"9" * 400 + b', "age": 1e-320,'
        b' "elevel": ' + b"7" * 30 + b"}, " + b'"prediction": {"p": 1}}',
    ]
    batches, rejected = Decoder.of(CONFIG).decode(values)
    assert rejected == []
    b = batches["credit-v1"]
    assert np.isnan(b.numeric[0, 0]) and np.isnan(b.numeric[1, 1])
    assert b.numeric[2, 0] == 1.0  # a boolean counts as 1
    assert b.numeric[4, 1] == 1e-320  # tiny (subnormal) values are values
    # series order: salary, age, prediction, elevel
    assert b.wrong_type.tolist() == [1, 0, 2, 1]
    assert b.out_of_range.tolist() == [2, 0, 1, 0]
    assert b.missing.tolist() == [0, 3, 0, 0]  # null, absent, NaN
    assert b.categorical == [["2", None, "2", "1", "7" * 30]]  # 2, "2" and 2.0 are one
    assert b.schema_violations == 1
    # What the label join sees: predictions as sent when usable, else nothing.
    assert b.predictions == [0.83, 0.83, None, None, None]


def test_fast_and_slow_numeric_paths_agree() -> None:
    rng = np.random.default_rng(0)
    clean = [
        event(features={"salary": float(v), "age": 30, "elevel": "1"}) for v in rng.normal(size=50)
    ]
    dirty = [*clean, event(features={"salary": "x", "age": 30, "elevel": "1"})]
    fast = Decoder.of(CONFIG).decode(clean)[0]["credit-v1"]
    slow = Decoder.of(CONFIG).decode(dirty)[0]["credit-v1"]
    assert np.array_equal(fast.numeric, slow.numeric[:50])
    assert fast.missing.tolist() == slow.missing.tolist() == [0, 0, 0, 0]


def test_timestamps_in_any_unit_and_rfc3339_variants_are_the_same_instant() -> None:
    second = 1764158400
    forms = [
        second,
        float(second),
        second * 1000,  # milliseconds (Java, Go)
        second * 1_000_000,  # microseconds
        second * 1_000_000_000,  # nanoseconds
        "2025-11-26T12:00:00Z",
        "2025-11-26t12:00:00z",
        "2025-11-26 12:00:00+00:00",
        "2025-11-26T13:00:00+01:00",
        "2025-11-26T12:00:00.000000000Z",
        str(second * 1000),
    ]
    batches, rejected = Decoder.of(CONFIG).decode([event(ts=f) for f in forms])
    assert rejected == []
    assert batches["credit-v1"].ts == [float(second)] * len(forms)


def test_an_absent_ts_takes_the_record_timestamp_when_it_is_plausible() -> None:
    stamps = [1.7e9, math.nan, 9.2e15, -1.0]  # set freely by producers: far future, negative
    batches, rejected = Decoder.of(CONFIG).decode([event(ts=None)] * 4, stamps)
    ts = batches["credit-v1"].ts
    assert rejected == [] and ts[0] == 1.7e9 and all(math.isnan(t) for t in ts[1:])


def test_integer_ids_are_ids() -> None:
    big = event().replace(b'"0f8e"', str(2**80).encode())
    batches, rejected = Decoder.of(CONFIG).decode([event(id=17), big])
    assert rejected == [] and batches["credit-v1"].ids == ["17", str(2**80)]
