"""What a hostile or unlucky world puts on a topic: arbitrary bytes and arbitrary JSON.

Whatever arrives, every record is either accepted or rejected with a known reason, no
exception escapes, and the data-quality counts add up exactly."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.config.schema import parse_config
from monitor.ingest.decode import REJECT_REASONS, Decoder, ModelBatch, decode_labels

CONFIG = parse_config(
    {
        "kafka": {"topic": "p", "max_record_bytes": 4096},
        "models": {
            "m": {
                "features": {"x": "numeric", "y": "numeric", "c": "categorical"},
                "prediction": "numeric",
            },
            "k": {"features": {"c": "categorical"}, "prediction": "categorical"},
        },
    },
    env={},
)
NOW = 1.8e9

# JSON values as a producer in any language might send them, with Python's extensions
# (NaN, Infinity, integers of any size) and deep nesting.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, 1764158400, 1764158400123, 1.764158400123e18]),
    st.text(max_size=20),
    st.sampled_from(["m", "k", "2025-11-26T12:00:00Z", "2025-11-26 12:00:00+01:00", "NaN"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
feature_maps = st.dictionaries(st.sampled_from(["x", "y", "c", "z", ""]), values, max_size=5)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.sampled_from(["m", "k", "other"]), values),
        "features": st.one_of(feature_maps, values),
        "id": st.one_of(st.text(max_size=8), st.integers(), values),
        "ts": st.one_of(st.floats(0, 3e9), st.integers(0, 2 * 10**18), values),
        "prediction": values,
        "label": values,
    },
)


# Mostly well-formed events whose values are anything at all.
plausible = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["m", "k"]),
        "features": st.dictionaries(st.sampled_from(["x", "y", "c", "z"]), scalars, max_size=4),
    },
    optional={
        "id": st.one_of(st.text(max_size=8), st.integers()),
        "ts": st.one_of(st.floats(0, 3e9), st.integers(0, 2 * 10**18), scalars),
        "prediction": scalars,
        "label": scalars,
    },
)


def dump(doc: Any) -> bytes:
    return json.dumps(doc).encode()  # NaN/Infinity literals and big integers included


documents = st.one_of(plausible.map(dump), envelopes.map(dump), values.map(dump))
deep = st.integers(1, 3000).map(
    lambda n: b'{"model": "m", "features": {"x": 1}, "label": ' + b"[" * n + b"]" * n + b"}"
)
records = st.one_of(
    st.binary(max_size=300),
    plausible.map(dump),
    plausible.map(dump),
    documents,
    documents.map(lambda b: b.replace(b'"', b'"\xff', 1)),  # invalid UTF-8 in a string
    documents.map(lambda b: b[: len(b) // 2]),  # cut short
    deep,
    st.none(),
)


def check_batch(batch: ModelBatch, n_series: int) -> None:
    n = len(batch)
    assert batch.numeric.shape[0] == n
    assert np.isfinite(batch.numeric[~np.isnan(batch.numeric)]).all()
    for col in batch.categorical:
        assert len(col) == n and all(v is None or isinstance(v, str) for v in col)
    for counts in (batch.missing, batch.wrong_type, batch.out_of_range):
        assert counts.shape == (n_series,) and (counts >= 0).all()
    # Every value of every series is exactly one of: usable, missing, wrong type, out of range.
    usable = np.r_[
        (~np.isnan(batch.numeric)).sum(axis=0),
        [sum(v is not None for v in col) for col in batch.categorical],
    ]
    assert (usable + batch.missing + batch.wrong_type + batch.out_of_range == n).all()
    assert all(math.isnan(t) or 0 <= t <= NOW + 86_400 for t in batch.ts)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, max_size=12))
def test_any_bytes_are_accepted_or_rejected_with_a_reason_never_raised(
    raws: list[bytes | None],
) -> None:
    decoder = Decoder.of(CONFIG, clock=lambda: NOW)
    batches, rejected = decoder.decode(raws)
    accepted = sorted(i for b in batches.values() for i in b.index)
    assert sorted(accepted + [r.index for r in rejected]) == list(range(len(raws)))
    assert all(r.reason in REJECT_REASONS and r.reason != "internal_error" for r in rejected)
    for model, batch in batches.items():
        check_batch(batch, len(decoder.schemas[model].series))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(records, envelopes.map(dump)), max_size=12))
def test_any_bytes_on_the_labels_topic_are_accepted_or_rejected(raws: list[bytes | None]) -> None:
    labels, rejected = decode_labels(raws, {"m", "k"}, 4096, now=NOW)
    assert len(labels) + len(rejected) == len(raws)
    assert all(r.reason in REJECT_REASONS for r in rejected)
    assert all(isinstance(lab.id, str) and lab.label is not None for lab in labels)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(plausible, envelopes), min_size=1, max_size=20))
def test_a_record_decodes_the_same_alone_in_a_batch_and_on_the_lenient_path(
    docs: list[dict[str, Any]],
) -> None:
    """The same values whether a record comes alone or with others, and whether it takes
    msgspec's typed path or the lenient one (forced by a feature key the model lacks)."""
    decoder = Decoder.of(CONFIG, clock=lambda: NOW)
    raws = [dump(d) for d in docs]
    lenient = [
        dump({**d, "features": {**d["features"], "undeclared": 1}})
        if isinstance(d.get("features"), dict)
        else dump(d)
        for d in docs
    ]
    together, rej_together = decoder.decode(raws)
    slow, rej_slow = decoder.decode(lenient)
    assert [(r.index, r.reason) for r in rej_slow] == [(r.index, r.reason) for r in rej_together]
    for model, got in together.items():
        other = slow[model]
        assert got.index == other.index
        assert np.array_equal(got.numeric, other.numeric, equal_nan=True)
        assert got.categorical == other.categorical
        assert np.array_equal(got.ts, other.ts, equal_nan=True)
        for kind in ("missing", "wrong_type", "out_of_range"):
            assert getattr(got, kind).tolist() == getattr(other, kind).tolist()
    for i, raw in enumerate(raws):
        alone, rej_alone = decoder.decode([raw])
        assert [r.reason for r in rej_alone] == [r.reason for r in rej_together if r.index == i]
        for model, b in alone.items():
            row = together[model].index.index(i)
            assert np.array_equal(b.numeric[0], together[model].numeric[row], equal_nan=True)
            assert [c[0] for c in b.categorical] == [c[row] for c in together[model].categorical]
