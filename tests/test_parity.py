"""Equivalence with the pinned oracles: river's ADWIN, scipy's ks_2samp and
chi2_contingency, on many seeded streams and random batch splits."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
import river
import scipy
from river import drift
from scipy import stats

from detectors import ADWIN, KS, CategoricalDrift

from .streams import STREAMS, random_cuts


def test_oracles_are_the_pinned_versions() -> None:
    assert river.__version__ == "0.26.1"
    assert scipy.__version__ == "1.17.1"


def _river_positions(x: np.ndarray, **params: float) -> tuple[list[int], object]:
    det = drift.ADWIN(**params)
    hits = []
    for i, v in enumerate(x.tolist()):
        det.update(v)
        if det.drift_detected:
            hits.append(i)
    return hits, det


ADWIN_PARAMS = [
    {},
    {"delta": 0.05, "clock": 1},
    {"delta": 0.2, "clock": 4, "max_buckets": 3},
    {"delta": 0.01, "clock": 7, "min_window_length": 2, "grace_period": 40},
]


@pytest.mark.parametrize(
    ("stream", "params"), list(itertools.product(STREAMS, range(len(ADWIN_PARAMS))))
)
def test_adwin_positions_equal_rivers(stream: str, params: int) -> None:
    kwargs = ADWIN_PARAMS[params]
    for seed in range(5):
        rng = np.random.default_rng(seed * 31 + params)
        x = STREAMS[stream](rng, 5000) * float(rng.choice([1.0, 1e-3, 250.0]))
        expected, oracle = _river_positions(x, **kwargs)
        det = ADWIN(**kwargs)  # type: ignore[arg-type]
        got: list[int] = []
        for lo, hi in random_cuts(rng, len(x), max_cuts=10):
            got.extend((det.update(x[lo:hi]).detections[0] + lo).tolist())
        assert got == expected, (stream, seed, kwargs)
        assert det.width[0] == oracle.width  # type: ignore[attr-defined]
        assert det.mean[0] == oracle.estimation  # type: ignore[attr-defined]


def test_adwin_many_series_at_once_equal_rivers_one_by_one() -> None:
    rng = np.random.default_rng(11)
    X = np.column_stack([make(rng, 6000) for make in STREAMS.values()])
    for parallel in (False, True):
        det = ADWIN(delta=0.05, clock=8, parallel=parallel)
        got: list[list[int]] = [[] for _ in STREAMS]
        for lo, hi in random_cuts(rng, len(X), max_cuts=6):
            for s, rows in enumerate(det.update(X[lo:hi]).detections):
                got[s].extend((rows + lo).tolist())
        for s in range(X.shape[1]):
            assert got[s] == _river_positions(X[:, s], delta=0.05, clock=8)[0]


def test_adwin_detects_what_river_detects_on_a_shift() -> None:
    rng = np.random.default_rng(12345)
    x = np.concatenate([rng.choice([0, 1], 1000), rng.choice(range(4, 8), 1000)]).astype(float)
    assert ADWIN().update(x).detections[0].tolist() == _river_positions(x)[0] == [1023]


def _ks_every_check(
    reference: np.ndarray, x: np.ndarray, window: int, stride: int, method: str, alpha: float
) -> int:
    """Feed ``x`` so that every batch ends on a check; compare each check with scipy."""
    det = KS(reference, window=window, stride=stride, alpha=alpha, method=method)  # type: ignore[arg-type]
    ends = list(range(window, len(x) + 1, stride))
    start = 0
    for end in ends:
        r = det.update(x[start:end])
        batch_start, start = start, end
        expected = stats.ks_2samp(reference, x[end - window : end], method=method)
        assert r.statistic[0] == expected.statistic
        assert r.p_value[0] == expected.pvalue
        assert bool(r.drifting[0]) == (expected.pvalue <= alpha)
        signalled = [end - 1] if expected.pvalue <= alpha else []
        assert (r.detections[0] + batch_start).tolist() == signalled
        if signalled:  # the detection's own evidence is scipy's too
            assert r.detection_p_values[0].tolist() == [expected.pvalue]
    return len(ends)


@pytest.mark.parametrize("stream", sorted(STREAMS))
@pytest.mark.parametrize("method", ["auto", "exact", "asymp"])
def test_ks_statistic_and_p_value_equal_scipys_at_every_check(stream: str, method: str) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{stream}/{method}".encode()))
    for n_ref, window, stride in [(700, 150, 37), (333, 90, 11)]:
        reference = (
            STREAMS[stream](rng, n_ref) if stream != "gradual_drift" else rng.normal(0, 1, n_ref)
        )
        x = STREAMS[stream](rng, 1400)
        assert _ks_every_check(reference, x, window, stride, method, alpha=0.01) > 20


def test_ks_detections_in_one_batch_carry_scipys_p_value_of_their_own_window() -> None:
    rng = np.random.default_rng(8)
    reference = rng.normal(0, 1, 800)
    x = np.r_[rng.normal(0, 1, 600), rng.normal(0.6, 1, 1400)]
    r = KS(reference, window=200, stride=50, alpha=0.01).update(x)
    assert len(r.detections[0]) > 5
    for row, d, p in zip(
        r.detections[0].tolist(), r.detection_scores[0], r.detection_p_values[0], strict=True
    ):
        expected = stats.ks_2samp(reference, x[row - 199 : row + 1])
        assert (d, p) == (expected.statistic, expected.pvalue)


def test_ks_large_samples_switch_to_asymptotic_like_scipy() -> None:
    rng = np.random.default_rng(9)
    reference = rng.normal(0, 1, 12000)  # > 10,000: 'auto' is asymptotic
    x = rng.normal(0.05, 1, 4000)
    _ks_every_check(reference, x, 1500, 500, "auto", alpha=0.05)


def test_ks_series_with_different_reference_sizes() -> None:
    rng = np.random.default_rng(21)
    ref = rng.normal(0, 1, (400, 3))
    ref[:130, 1] = np.nan  # series 1 has a smaller reference
    X = rng.normal([0, 0.3, 0.6], 1, (600, 3))
    det = KS(ref, window=100, stride=100, alpha=0.01)
    r = det.update(X)
    for s in range(3):
        expected = stats.ks_2samp(ref[~np.isnan(ref[:, s]), s], X[-100:, s])
        assert r.statistic[s] == expected.statistic
        assert r.p_value[s] == expected.pvalue
    assert r.reference_size.tolist() == [400, 270, 400]


@pytest.mark.parametrize("seed", range(12))
def test_categorical_p_value_equals_scipys(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 30))
    window, stride = int(rng.integers(5, 300)), int(rng.integers(1, 50))
    reference = rng.choice(k, size=int(rng.integers(10, 3000)), p=rng.dirichlet(np.ones(k)))
    pool = np.r_[np.arange(k), -1, k + 5]  # two unseen codes share the unseen bucket
    x = rng.choice(pool, size=1500, p=rng.dirichlet(np.ones(k + 2) * 0.7)).astype(float)
    det = CategoricalDrift(reference, window=window, stride=stride, alpha=0.05, n_categories=k)
    ref_counts = np.bincount(reference, minlength=k + 1)
    ends = list(range(window, len(x) + 1, stride))
    start = 0
    for end in ends:
        r = det.update(x[start:end])
        start = end
        win = x[end - window : end].astype(int)
        win[(win < 0) | (win >= k)] = k
        table = np.array([ref_counts, np.bincount(win, minlength=k + 1)])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            assert r.score[0] == 0.0 and r.p_value[0] == 1.0
            continue
        expected = stats.chi2_contingency(table, correction=False)
        assert r.score[0] == expected.statistic
        assert r.p_value[0] == expected.pvalue
        assert bool(r.drifting[0]) == (expected.pvalue <= 0.05)
