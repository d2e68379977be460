"""Contract tests every detector must pass: batch-split invariance, exact state
round-trips, per-series reset, parameter validation and missing-value handling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from detectors import (
    ADWIN,
    CUSUM,
    KS,
    PSI,
    CategoricalCUSUM,
    CategoricalDrift,
    Detector,
    DriftResult,
)

from .streams import random_cuts

N_SERIES = 4


def _numeric_data(rng: np.random.Generator, n: int) -> np.ndarray:
    X = rng.normal(0.0, 1.0, (n, N_SERIES))
    X[n // 2 :, 1] += 1.0  # one series drifts
    X[n // 2 :, 3] *= 2.5  # one changes variance
    return X


def _codes(rng: np.random.Generator, n: int) -> np.ndarray:
    X = rng.choice(4, size=(n, N_SERIES), p=[0.4, 0.3, 0.2, 0.1]).astype(np.float64)
    X[n // 2 :, 2] = rng.choice([0, 1, 2, 3, -1, 9], size=n - n // 2)
    return X


Factory = Callable[[np.random.Generator], Detector]

FACTORIES: dict[str, tuple[Factory, Callable[[np.random.Generator, int], np.ndarray]]] = {
    "adwin": (lambda rng: ADWIN(delta=0.01, clock=4), _numeric_data),
    "adwin_parallel": (lambda rng: ADWIN(delta=0.01, clock=4, parallel=True), _numeric_data),
    "ks": (
        lambda rng: KS(rng.normal(0, 1, (300, N_SERIES)), window=80, stride=7, alpha=0.05),
        _numeric_data,
    ),
    "ks_asymp": (
        lambda rng: KS(rng.normal(0, 1, (300, N_SERIES)), window=60, stride=5, method="asymp"),
        _numeric_data,
    ),
    "psi": (
        lambda rng: PSI(rng.normal(0, 1, (500, N_SERIES)), bins=8, window=100, stride=9),
        _numeric_data,
    ),
    "psi_fixed": (
        lambda rng: PSI(rng.normal(0, 1, (500, N_SERIES)), window=50, stride=50, threshold="fixed"),
        _numeric_data,
    ),
    "cusum": (lambda rng: CUSUM(rng.normal(0, 1, (300, N_SERIES)), arl=5000), _numeric_data),
    "categorical_cusum": (
        lambda rng: CategoricalCUSUM(
            rng.choice(4, size=(400, N_SERIES), p=[0.4, 0.3, 0.2, 0.1]), arl=5000
        ),
        _codes,
    ),
    "categorical": (
        lambda rng: CategoricalDrift(
            rng.choice(4, size=(400, N_SERIES), p=[0.4, 0.3, 0.2, 0.1]), window=90, stride=11
        ),
        _codes,
    ),
}


@pytest.fixture(params=sorted(FACTORIES))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _make(kind: str, seed: int) -> tuple[Detector, np.ndarray]:
    factory, data = FACTORIES[kind]
    rng = np.random.default_rng(seed)
    return factory(rng), data(rng, 1500)


def _feed(
    det: Detector, X: np.ndarray, cuts: list[tuple[int, int]]
) -> tuple[list[list[int]], DriftResult]:
    hits: list[list[int]] = [[] for _ in range(X.shape[1])]
    result = None
    for lo, hi in cuts:
        result = det.update(X[lo:hi])
        for s, rows in enumerate(result.detections):
            hits[s].extend((rows + lo).tolist())
    assert result is not None
    return hits, result


def _evidence(det: Detector, X: np.ndarray, cuts: list[tuple[int, int]]) -> list[Any]:
    """Every detection as (series, row, score, p-value, window), NaN as None."""
    out = []
    for lo, hi in cuts:
        r = det.update(X[lo:hi])
        for s, rows in enumerate(r.detections):
            for k, row in enumerate(rows.tolist()):
                p = float(r.detection_p_values[s][k])
                out.append(
                    (
                        s,
                        row + lo,
                        float(r.detection_scores[s][k]),
                        None if p != p else p,
                        int(r.detection_windows[s][k]),
                    )
                )
    return sorted(out)


def test_each_detection_carries_its_checks_p_value_and_window(kind: str) -> None:
    det, X = _make(kind, 1)
    r = det.update(X)
    for s, rows in enumerate(r.detections):
        assert len(r.detection_p_values[s]) == len(r.detection_windows[s]) == len(rows)
        if kind.startswith("ks") or kind == "categorical":
            assert (r.detection_p_values[s] <= det.alpha).all()  # type: ignore[attr-defined]
        else:
            assert np.isnan(r.detection_p_values[s]).all()
        if kind.startswith(("adwin", "cusum", "categorical_cusum")):
            assert (r.detection_windows[s] >= 1).all()
        else:
            assert (r.detection_windows[s] == det.window).all()  # type: ignore[attr-defined]


def test_a_state_without_its_reference_is_rebuilt_from_the_reference(kind: str) -> None:
    factory, data = FACTORIES[kind]
    rng = np.random.default_rng(5)
    det = factory(rng)
    X = data(rng, 700)
    det.update(X[:400])
    slim = det.export_state(include_reference=False)
    if kind.startswith(("ks", "cusum")):
        assert "reference" not in slim
        with pytest.raises(ValueError, match="reference="):
            type(det).from_state(slim)
        reference = np.random.default_rng(5).normal(0, 1, (300, N_SERIES))
        restored = type(det).from_state(slim, reference=reference)
    else:
        restored = type(det).from_state(slim)
    _assert_same_state(det.export_state(), restored.export_state())
    assert [d.tolist() for d in det.update(X[400:]).detections] == [
        d.tolist() for d in restored.update(X[400:]).detections
    ]


def _assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), key
        else:
            assert a[key] == b[key], key


def _assert_same_result(a: DriftResult, b: DriftResult) -> None:
    for name in ("score", "p_value", "threshold", "window_size", "reference_size", "drifting"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name


def test_follows_the_protocol(kind: str) -> None:
    det, X = _make(kind, 0)
    assert isinstance(det, Detector)
    result = det.update(X[:10])
    assert result.n_series == N_SERIES
    assert all(d.dtype == np.int64 for d in result.detections)


def test_each_detection_carries_the_score_that_crossed_the_threshold(kind: str) -> None:
    det, X = _make(kind, 1)
    result = det.update(X)
    assert any(len(d) for d in result.detections)
    for s, rows in enumerate(result.detections):
        scores = result.detection_scores[s]
        assert len(scores) == len(rows)
        if kind.startswith(("adwin", "cusum", "categorical_cusum")):
            assert (scores > 1.0).all()  # some cut exceeded eps_cut, some CUSUM its h
        elif kind.startswith(("psi", "ks")):
            assert (scores >= result.threshold[s]).all()


@pytest.mark.parametrize("seed", range(6))
def test_batch_splits_do_not_change_anything(kind: str, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    det_one, X = _make(kind, seed)
    hits_one, last_one = _feed(det_one, X, [(0, len(X))])
    det_split, _ = _make(kind, seed)
    hits_split, last_split = _feed(det_split, X, random_cuts(rng, len(X), max_cuts=12))
    assert hits_one == hits_split
    # ... and every detection carries the same evidence: its own check's.
    det_a, _ = _make(kind, seed)
    det_b, _ = _make(kind, seed)
    assert _evidence(det_a, X, [(0, len(X))]) == _evidence(
        det_b, X, random_cuts(rng, len(X), max_cuts=12)
    )
    assert any(hits_one), "the stream should make at least one series signal"
    _assert_same_result(last_one, last_split)
    _assert_same_state(det_one.export_state(), det_split.export_state())


@pytest.mark.parametrize("seed", range(4))
def test_state_round_trip_resumes_exactly(kind: str, seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    det, X = _make(kind, seed)
    stop = int(rng.integers(1, len(X)))
    hits_a, _ = _feed(det, X, [(0, stop)])
    restored = type(det).from_state(det.export_state())
    _assert_same_state(det.export_state(), restored.export_state())
    hits_b, last_restored = _feed(restored, X, [(stop, len(X))])

    reference, _ = _make(kind, seed)
    hits_ref, last_ref = _feed(reference, X, [(0, len(X))])
    assert [a + b for a, b in zip(hits_a, hits_b, strict=True)] == hits_ref
    _assert_same_result(last_restored, last_ref)


def test_reset_one_series_only(kind: str) -> None:
    det, X = _make(kind, 3)
    det.update(X[:900])
    det.reset(1)
    after = det.update(X[900:])

    untouched, _ = _make(kind, 3)
    full = untouched.update(X)
    fresh, _ = _make(kind, 3)
    fresh_result = fresh.update(X[900:])
    for s in (0, 2, 3):
        assert np.array_equal(
            after.detections[s] + 900, full.detections[s][full.detections[s] >= 900]
        )
        assert np.array_equal(after.score[s], full.score[s], equal_nan=True)
    assert np.array_equal(after.detections[1], fresh_result.detections[1])
    assert np.array_equal(after.score[1], fresh_result.score[1], equal_nan=True)
    assert after.window_size[1] == fresh_result.window_size[1]


def test_missing_values_are_skipped_and_counted(kind: str) -> None:
    det, X = _make(kind, 4)
    rng = np.random.default_rng(4)
    holes = rng.random(X.shape) < 0.15
    Xn = X.copy()
    Xn[holes] = np.nan
    hits, last = _feed(det, Xn, [(0, 700), (700, len(X))])

    for s in range(N_SERIES):
        keep = np.flatnonzero(~holes[:, s])
        single, _ = _make(kind, 4)
        # The same detector on the series alone, missing values removed.
        col = np.full((len(keep), N_SERIES), np.nan)
        col[:, s] = X[keep, s]
        col_hits, col_last = _feed(single, col, [(0, len(keep))])
        assert hits[s] == keep[col_hits[s]].tolist()
        assert np.array_equal(last.score[s], col_last.score[s], equal_nan=True)
    assert last.n_missing.tolist() == holes[700:].sum(axis=0).tolist()


def test_non_numeric_input_is_rejected(kind: str) -> None:
    det, X = _make(kind, 5)
    with pytest.raises(ValueError, match="numeric"):
        det.update(np.array([["a"] * N_SERIES]))
    det.update(X[:5])  # ADWIN sizes itself from its first batch
    with pytest.raises(ValueError, match="series"):
        det.update(np.zeros((3, N_SERIES + 1)))


def test_infinite_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="infinite"):
        ADWIN().update(np.array([1.0, np.inf]))


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: ADWIN(delta=0.0), "delta"),
        (lambda: ADWIN(delta=1.5), "delta"),
        (lambda: ADWIN(clock=0), "clock"),
        (lambda: ADWIN(max_buckets=0), "max_buckets"),
        (lambda: ADWIN(min_window_length=0), "min_window_length"),
        (lambda: ADWIN(grace_period=-1), "grace_period"),
        (lambda: KS(np.zeros(10), window=0), "window"),
        (lambda: KS(np.zeros(10), stride=0), "stride"),
        (lambda: KS(np.zeros(10), alpha=1.0), "alpha"),
        (lambda: KS(np.zeros(10), method="fast"), "method"),  # type: ignore[arg-type]
        (lambda: KS(np.array([np.nan, np.nan])), "reference"),
        (lambda: PSI(np.zeros(10), bins=1), "bins"),
        (lambda: PSI(np.zeros(10), window=1), "window"),
        (lambda: PSI(np.zeros(10), threshold="magic"), "threshold"),  # type: ignore[arg-type]
        (lambda: PSI(np.zeros(10), warn=0.3, alert=0.2), "warn"),
        (lambda: PSI(np.zeros(10), alpha=0.0), "alpha"),
        (lambda: CategoricalDrift(np.array([0.5, 1.0])), "integer"),
        (lambda: CategoricalDrift(np.array([0, 1]), alpha=2.0), "alpha"),
        (lambda: CategoricalDrift(np.array([-1, -1])), "reference_codes"),
    ],
)
def test_bad_parameters_name_themselves(build: Callable[[], object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build()


def test_state_of_another_kind_or_version_is_refused() -> None:
    state = ADWIN(n_series=2).export_state()
    with pytest.raises(ValueError, match="not 'psi'"):
        PSI.from_state(state)
    state["version"] = 99
    with pytest.raises(ValueError, match="version 99"):
        ADWIN.from_state(state)
