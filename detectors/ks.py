"""Two-sample Kolmogorov-Smirnov test of a sliding window against a fixed reference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt

from ._ks_kernel import ks_update
from ._ks_pvalue import KSNull, ks_null
from .base import (
    DriftResult,
    FloatArray,
    State,
    as_batch,
    blank,
    check_positive_int,
    check_probability,
    check_state,
    rows_where,
    series_indices,
    state_header,
    values_where,
)

Method = Literal["auto", "exact", "asymp"]


class KS:
    r"""Sliding-window two-sample KS test, one per series.

    Each series keeps its last ``window`` values. Once full, the window is tested against
    the series' reference at the value that filled it and then every ``stride`` values.
    At every check the statistic and p-value are exactly those of
    ``scipy.stats.ks_2samp(reference, window_values, method=method)`` (two-sided), and drift
    is signalled where ``p <= alpha``. The decision needs no scipy call: the critical
    statistic is computed once per sample sizes (see ``detectors._ks_pvalue``).

    Nothing is reset after a detection: while the window differs from the reference every
    check signals again (the alert policy turns that into one episode).

    Parameters
    ----------
    reference
        ``(n_ref, n_series)`` or 1-D; NaN values are dropped per series.
    window, stride
        Window length and check interval, in values of the series (defaults 500 and 50).
    alpha
        Significance level of each check.
    method
        scipy's ``method``: ``"auto"`` (exact up to 10,000 values per sample), ``"exact"``,
        ``"asymp"``.

    Result fields: ``score`` is D, ``p_value`` its p-value, ``threshold`` the smallest D
    that rejects at ``alpha``.

    How: each value is binned on arrival among the reference's distinct values (equal to
    one, or strictly between two) and the window keeps counts per bin; a check is one pass
    over the bins. No sorting, ``O(log n_ref)`` per value and ``O(n_ref)`` per check.

    State: ``8 * (n_ref + window + 4)`` bytes per series (sorted reference, ring of bins;
    the counts per bin are rebuilt from the ring).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> ks = KS(rng.normal(0, 1, 5000), window=500, stride=50, alpha=0.01)
    >>> r = ks.update(rng.normal(0, 1, 500))
    >>> round(float(r.statistic[0]), 4), round(float(r.p_value[0]), 4), r.drifting.tolist()
    (0.021, 0.9862, [False])
    >>> r = ks.update(rng.normal(0.3, 1, 200))
    >>> r.detections[0].tolist()        # checks every 50 values; drift once enough moved
    [149, 199]
    """

    def __init__(
        self,
        reference: npt.ArrayLike,
        window: int = 500,
        stride: int = 50,
        alpha: float = 0.01,
        method: Method = "auto",
    ) -> None:
        self.window = check_positive_int("window", window)
        self.stride = check_positive_int("stride", stride)
        self.alpha = check_probability("alpha", alpha)
        if method not in ("auto", "exact", "asymp"):
            raise ValueError(f"method must be 'auto', 'exact' or 'asymp', got {method!r}")
        self.method: Method = method
        ref = as_batch(reference, name="reference")
        empty = np.flatnonzero(np.isnan(ref).all(axis=0))
        if empty.size:
            raise ValueError(f"reference has no values for series {empty.tolist()}")
        n_ref = (~np.isnan(ref)).sum(axis=0).astype(np.int64)
        sorted_ref = np.sort(ref, axis=0).T  # NaN sorts last
        self._setup(np.ascontiguousarray(sorted_ref[:, : int(n_ref.max())]), n_ref)

    def _setup(self, sorted_ref: FloatArray, n_ref: npt.NDArray[np.int64]) -> None:
        self._ref = sorted_ref
        self._n_ref = n_ref
        n_series = sorted_ref.shape[0]
        self._nulls: list[KSNull] = [
            ks_null(int(n), self.window, self.method, self.alpha) for n in n_ref
        ]
        # Series with equal reference sizes share one null distribution: handle them together.
        groups: dict[int, list[int]] = {}
        for s, null in enumerate(self._nulls):
            groups.setdefault(id(null), []).append(s)
        self._groups = [(self._nulls[m[0]], np.array(m, dtype=np.int64)) for m in groups.values()]
        self._threshold = np.array([nl.critical_statistic() for nl in self._nulls])
        # Bins between the reference's distinct values and the reference ECDF at each bin
        # (c1 / n1, computed as scipy computes it).
        uniques = [np.unique(sorted_ref[s, : n_ref[s]]) for s in range(n_series)]
        width = max(len(x) for x in uniques)
        self._u = np.full((n_series, width), np.inf)
        self._n_u = np.array([len(x) for x in uniques], dtype=np.int64)
        self._f1 = np.zeros((n_series, 2 * width + 1))
        for s, uniq in enumerate(uniques):
            self._u[s, : len(uniq)] = uniq
            c1 = np.searchsorted(sorted_ref[s, : n_ref[s]], uniq, side="right")
            self._f1[s, 1 : 2 * len(uniq) + 1] = np.repeat(c1, 2) / n_ref[s]
        self._f2 = np.arange(self.window + 1) / self.window
        self._ring = np.zeros((n_series, self.window), dtype=np.int64)
        self._counts = np.zeros((n_series, 2 * width + 1), dtype=np.int64)
        self._pos = np.zeros(n_series, dtype=np.int64)
        self._n_seen = np.zeros(n_series, dtype=np.int64)
        self._d_raw = np.full(n_series, np.nan)

    @property
    def n_series(self) -> int:
        return int(self._ref.shape[0])

    @property
    def params(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "stride": self.stride,
            "alpha": self.alpha,
            "method": self.method,
        }

    def update(self, X: npt.ArrayLike) -> DriftResult:
        """Feed a batch ``(n_events, n_series)`` (or 1-D for one series); NaN is skipped."""
        batch = as_batch(X, self.n_series)
        n_events, n_series = batch.shape
        max_checks = n_events // self.stride + 1
        rows = np.zeros((n_series, max_checks), dtype=np.int64)
        stats = np.zeros((n_series, max_checks))
        n_checks = np.zeros(n_series, dtype=np.int64)
        n_missing = np.zeros(n_series, dtype=np.int64)
        ks_update(
            np.ascontiguousarray(batch.T),
            self._ring,
            self._pos,
            self._n_seen,
            self._counts,
            self._u,
            self._n_u,
            self._f1,
            self._f2,
            self.window,
            self.stride,
            rows,
            stats,
            n_checks,
            n_missing,
        )
        checked = np.arange(max_checks) < n_checks[:, None]
        reject = np.zeros_like(checked)
        snapped = np.zeros_like(stats)
        for null, members in self._groups:
            reject[members] = null.reject(stats[members])
            snapped[members] = null.statistic(stats[members])
        has = n_checks > 0
        self._d_raw[has] = stats[has, n_checks[has] - 1]
        score = np.full(n_series, np.nan)
        drifting = np.zeros(n_series, dtype=bool)
        seen = ~np.isnan(self._d_raw)
        for null, members in self._groups:
            m = members[seen[members]]
            score[m] = null.statistic(self._d_raw[m])
            drifting[m] = null.reject(self._d_raw[m])
        d_raw = self._d_raw.copy()
        hit = reject & checked
        hit_raw = values_where(stats, hit)
        detections = rows_where(rows, hit)
        return DriftResult(
            detections=detections,
            detection_scores=values_where(snapped, hit),
            detection_p_value_source=lambda: tuple(
                np.array([self._nulls[s].p_value(float(d)) for d in hit_raw[s]])
                for s in range(n_series)
            ),
            detection_windows=tuple(np.full(len(d), self.window) for d in detections),
            score=score,
            p_value_source=lambda: self._p_values(d_raw),
            threshold=self._threshold.copy(),
            window_size=np.minimum(self._n_seen, self.window),
            reference_size=self._n_ref.copy(),
            n_missing=n_missing,
            drifting=drifting,
        )

    def _p_values(self, d_raw: FloatArray) -> FloatArray:
        """scipy's p-value of each series' last check (memoised per statistic)."""
        out = np.full(d_raw.shape, np.nan)
        for s in np.flatnonzero(~np.isnan(d_raw)):
            out[s] = self._nulls[s].p_value(float(d_raw[s]))
        return out

    def reset(self, series: int | Sequence[int] | None = None) -> None:
        """Empty the window of the given series (all when None); the reference stays."""
        idx = series_indices(series, self.n_series)
        self._ring[idx] = 0
        self._counts[idx] = 0
        self._pos[idx] = 0
        self._n_seen[idx] = 0
        self._d_raw[idx] = np.nan

    def export_state(self, *, include_reference: bool = True) -> State:
        """With ``include_reference=False`` the sorted reference (most of the state) is left
        out: ``from_state(state, reference=...)`` rebuilds it from the reference array."""
        state = state_header("ks", self.params)
        if include_reference:
            state.update(reference=self._ref.copy(), n_ref=self._n_ref.copy())
        state.update(
            ring=self._ring.copy(),
            pos=self._pos.copy(),
            n_seen=self._n_seen.copy(),
            d_raw=self._d_raw.copy(),
        )
        return state

    @classmethod
    def from_state(cls, state: State, reference: npt.ArrayLike | None = None) -> Self:
        params = check_state(state, "ks")
        if "reference" in state:
            det = blank(cls, params)
            det._setup(np.array(state["reference"], dtype=np.float64), np.array(state["n_ref"]))
        elif reference is not None:
            det = cls(reference, **params)
        else:
            raise ValueError("this KS state was exported without its reference: pass reference=")
        det._ring[...] = state["ring"]
        det._pos[...] = state["pos"]
        det._n_seen[...] = state["n_seen"]
        det._d_raw[...] = state["d_raw"]
        # The counts per bin follow from the ring of bins (the window's filled slots).
        for s in range(det.n_series):
            filled = int(min(det._n_seen[s], det.window))
            det._counts[s] = np.bincount(det._ring[s, :filled], minlength=det._counts.shape[1])
        return det

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"KS(<reference: {self.n_series} series>, {args})"
