"""PSI: bins, smoothing bound, thresholds, and agreement with a plain numpy computation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import chi2

from detectors import PSI
from detectors._window import smoothed_psi

from .streams import STREAMS


def _plain_psi(reference: np.ndarray, window: np.ndarray, bins: int) -> float:
    """Textbook PSI with the same bins and smoothing, one column, no shortcuts."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    full = np.concatenate([[-np.inf], edges, [np.inf]])
    # Bin i is (edge[i-1], edge[i]]: np.histogram's bins are [a, b), so count by hand.
    ref_counts = np.array(
        [np.sum((reference > lo) & (reference <= hi)) for lo, hi in itertools.pairwise(full)]
    )
    win_counts = np.array(
        [np.sum((window > lo) & (window <= hi)) for lo, hi in itertools.pairwise(full)]
    )
    n_b = len(ref_counts)
    p = (win_counts + 0.5) / (len(window) + 0.5 * n_b)
    q = (ref_counts + 0.5) / (len(reference) + 0.5 * n_b)
    return float(np.sum((p - q) * np.log(p / q)))


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_scores_match_a_plain_numpy_psi_at_every_check(stream: str) -> None:
    rng = np.random.default_rng(len(stream))
    reference = STREAMS[stream](rng, 2000)
    x = STREAMS[stream](rng, 3000)
    window, stride = 400, 130
    det = PSI(reference, bins=10, window=window, stride=stride)
    start = 0
    for end in range(window, len(x) + 1, stride):
        r = det.update(x[start:end])
        start = end
        assert r.score[0] == pytest.approx(
            _plain_psi(reference, x[end - window : end], 10), rel=1e-12, abs=1e-15
        )


def test_out_of_range_values_fall_in_the_open_outer_bins() -> None:
    det = PSI(np.linspace(0, 1, 1000), bins=4, window=100, stride=100)
    r = det.update(np.full(100, 50.0))
    assert r.drifting[0]
    assert det.export_state()["counts"][0].tolist()[:4] == [0, 0, 0, 100]


def test_tied_reference_merges_bins() -> None:
    det = PSI(np.repeat([1.0, 2.0, 3.0], 100), bins=10)
    state = det.export_state()
    # Edges {1, 2, 3}: three bins holding the reference plus the open bin above 3.
    assert state["n_bins"].tolist() == [4]
    assert state["ref_counts"][0, :4].tolist() == [100, 100, 100, 0]


def test_one_empty_bin_adds_at_most_the_documented_bound() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        n_b = int(rng.integers(2, 20))
        ref = rng.integers(0, 500, n_b)
        ref[ref.argmin()] += 1  # every bucket non-empty
        win = rng.integers(1, 500, n_b)
        empty = int(rng.integers(n_b))
        with_empty = win.copy()
        with_empty[empty] = 0
        n = int(with_empty.sum())
        q = (ref[empty] + 0.5) / (ref.sum() + 0.5 * n_b)
        p = 0.5 / (n + 0.5 * n_b)
        term = (p - q) * np.log(p / q)
        assert term <= q * np.log(q * (2 * n + n_b)) + 1e-12
        assert term <= np.log(2 * n + n_b)
        assert np.isfinite(smoothed_psi(with_empty, ref))


def test_thresholds_fixed_and_sample_size_aware() -> None:
    ref = np.random.default_rng(1).normal(0, 1, 5000)
    fixed = PSI(ref, window=1000, threshold="fixed").update(np.zeros(1))
    assert fixed.threshold[0] == 0.25 and fixed.extra["warn_threshold"][0] == 0.1
    adaptive = PSI(ref, bins=10, window=1000, alpha=0.001).update(np.zeros(1))
    expected = chi2.ppf(0.999, 9) * (1 / 5000 + 1 / 1000)
    assert adaptive.threshold[0] == pytest.approx(expected, rel=1e-12)
    assert adaptive.extra["warn_threshold"][0] == pytest.approx(
        chi2.ppf(0.99, 9) * (1 / 5000 + 1 / 1000)
    )


def test_adaptive_threshold_false_alarm_rate_is_near_alpha() -> None:
    """Under no drift, tumbling windows (independent checks) signal at about alpha."""
    rng = np.random.default_rng(2)
    alpha = 0.02
    det = PSI(rng.normal(0, 1, (20000, 4)), bins=10, window=500, stride=500, alpha=alpha)
    r = det.update(rng.normal(0, 1, (500 * 500, 4)))
    rate = sum(len(d) for d in r.detections) / (500 * 4)
    assert 0.5 * alpha < rate < 1.6 * alpha


def test_adaptive_threshold_catches_a_shift_a_fixed_cutoff_misses() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, 10000)
    shifted = rng.normal(0.25, 1, 5000)
    fixed = PSI(ref, window=5000, stride=5000, threshold="fixed").update(shifted)
    adaptive = PSI(ref, window=5000, stride=5000).update(shifted)
    assert not fixed.drifting[0] and adaptive.drifting[0]


def test_tumbling_windows_share_no_value() -> None:
    rng = np.random.default_rng(4)
    ref = rng.normal(0, 1, 1000)
    x = rng.normal(0, 1, 1000)
    det = PSI(ref, window=250, stride=250)
    scores = []
    for lo in range(0, 1000, 250):
        scores.append(det.update(x[lo : lo + 250]).score[0])
    fresh = [
        PSI(ref, window=250, stride=250).update(x[lo : lo + 250]).score[0]
        for lo in range(0, 1000, 250)
    ]
    assert scores == fresh
