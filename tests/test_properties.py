"""Property-based checks (hypothesis) of the exactness claims."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from river import drift
from scipy import stats

from detectors import ADWIN, PSI
from detectors._ks_kernel import ks_statistic
from detectors._pairwise import pairwise_sum

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
small_ints = st.integers(min_value=-3, max_value=3).map(float)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.one_of(finite, small_ints), min_size=1, max_size=600),
    delta=st.sampled_from([0.002, 0.1, 0.5]),
    clock=st.integers(min_value=1, max_value=40),
    split=st.integers(min_value=0, max_value=600),
)
def test_adwin_matches_river_on_arbitrary_streams(
    values: list[float], delta: float, clock: int, split: int
) -> None:
    oracle = drift.ADWIN(delta=delta, clock=clock)
    expected = []
    for i, v in enumerate(values):
        oracle.update(v)
        if oracle.drift_detected:
            expected.append(i)
    det = ADWIN(delta=delta, clock=clock)
    x = np.array(values)
    cut = min(split, len(x))
    got = det.update(x[:cut]).detections[0].tolist() if cut else []
    got += (det.update(x[cut:]).detections[0] + cut).tolist()
    assert got == expected
    assert det.width[0] == oracle.width


@settings(max_examples=300, deadline=None)
@given(
    a=st.lists(st.one_of(finite, small_ints), min_size=1, max_size=80),
    b=st.lists(st.one_of(finite, small_ints), min_size=1, max_size=80),
)
def test_ks_statistic_matches_scipy(a: list[float], b: list[float]) -> None:
    x, y = np.sort(np.array(a)), np.sort(np.array(b))
    with warnings.catch_warnings():  # scipy's p-value warns on degenerate samples
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = stats.ks_2samp(x, y, method="asymp").statistic
    assert ks_statistic(x, len(x), y, len(y)) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(finite, min_size=1, max_size=700))
def test_pairwise_sum_is_numpys_sum(values: list[float]) -> None:
    a = np.array(values)
    assert pairwise_sum(a, len(a)) == a.sum()


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(finite, min_size=50, max_size=400),
    shift=st.floats(min_value=-5, max_value=5),
)
def test_psi_is_finite_and_non_negative(values: list[float], shift: float) -> None:
    x = np.array(values)
    r = PSI(x, bins=5, window=20, stride=7).update(x[::-1] + shift)
    assert np.isfinite(r.score).all() and (r.score >= -1e-12).all()
