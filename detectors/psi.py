"""Population Stability Index of a sliding window against a fixed reference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt
from scipy.stats import chi2

from ._window import WindowCounts, smoothed_psi
from .base import (
    DriftResult,
    FloatArray,
    IntArray,
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

ThresholdMode = Literal["adaptive", "fixed"]


def quantile_edges(reference: FloatArray, bins: int) -> tuple[FloatArray, IntArray]:
    """Interior bin edges at the reference's quantiles, one row per series.

    Tied quantiles (discrete data) are merged, so a series can get fewer than ``bins``
    bins; rows are padded with ``+inf``. Returns ``(edges, n_bins)``.

    >>> edges, n_bins = quantile_edges(np.array([[1.0], [2.0], [3.0], [4.0]]), 2)
    >>> edges.tolist(), n_bins.tolist()
    ([[2.5]], [2])
    """
    n_series = reference.shape[1]
    rows = []
    for s in range(n_series):
        col = reference[:, s]
        col = col[~np.isnan(col)]
        inner = np.quantile(col, np.linspace(0.0, 1.0, bins + 1)[1:-1])
        rows.append(np.unique(inner))
    width = max(1, max(len(r) for r in rows))
    edges = np.full((n_series, width), np.inf)
    for s, r in enumerate(rows):
        edges[s, : len(r)] = r
    return edges, np.array([len(r) + 1 for r in rows], dtype=np.int64)


def bin_codes(X: FloatArray, edges: FloatArray) -> IntArray:
    """Bin index of every value (``-1`` for NaN): bin ``i`` is ``(edge[i-1], edge[i]]``,
    the outer bins are open, so values beyond the reference's range still count."""
    codes: IntArray = (X[:, :, None] > edges[None, :, :]).sum(axis=2, dtype=np.int64)
    codes[np.isnan(X)] = -1
    return codes


class PSI:
    r"""Population Stability Index between a fixed reference and a sliding window.

    Bins are fitted once, on the reference only: interior edges at its quantiles, outer
    bins open so out-of-range values count. Each series keeps its last ``window`` values;
    once full, the window is scored at the value that filled it and then every ``stride``
    values (``stride == window`` gives tumbling windows). Empty bins are smoothed with half
    a pseudo-count (see :func:`smoothed_psi`), so one empty bin adds at most
    ``q ln(q (2n + B))``: about 0.53 for deciles and a 1000-value window.

    Two thresholds are available:

    * ``"fixed"``: the classic rule of thumb, ``warn`` (0.1) and ``alert`` (0.25). It ignores
      sample size: a small window crosses 0.1 by chance, a large one hides real shifts.
    * ``"adaptive"`` (default): under no drift, PSI is approximately
      ``(1/n_ref + 1/n_window) * chi2(bins - 1)``, so the alert threshold is
      ``chi2.ppf(1 - alpha, bins - 1) * (1/n_ref + 1/n_window)``: a false-alarm rate of
      ``alpha`` per check whatever the sizes. The warning uses ``10 * alpha``.

    Drift is signalled at every check whose score reaches the alert threshold; nothing is
    reset after a detection, so a lasting shift keeps signalling at each check.

    State: ``8 * (window + 2 * bins + 3)`` bytes per series (ring of bin codes, counts,
    edges, reference counts).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> psi = PSI(rng.normal(0, 1, 5000), bins=10, window=1000, stride=1000)
    >>> r = psi.update(rng.normal(0, 1, 1000))
    >>> round(float(r.score[0]), 4), round(float(r.threshold[0]), 4), r.drifting.tolist()
    (0.0095, 0.0335, [False])
    >>> r = psi.update(rng.normal(0.5, 1, 1000))
    >>> round(float(r.score[0]), 4), r.detections[0].tolist()
    (0.247, [999])
    """

    def __init__(
        self,
        reference: npt.ArrayLike,
        bins: int = 10,
        window: int = 1000,
        stride: int | None = None,
        threshold: ThresholdMode = "adaptive",
        alpha: float = 0.001,
        warn: float = 0.1,
        alert: float = 0.25,
    ) -> None:
        self.bins = check_positive_int("bins", bins, minimum=2)
        self.window = check_positive_int("window", window, minimum=2)
        self.stride = check_positive_int(
            "stride", max(1, self.window // 10) if stride is None else stride
        )
        if threshold not in ("adaptive", "fixed"):
            raise ValueError(f"threshold must be 'adaptive' or 'fixed', got {threshold!r}")
        self.threshold: ThresholdMode = threshold
        self.alpha = check_probability("alpha", alpha)
        if not 0.0 < warn <= alert:
            raise ValueError(f"warn and alert must satisfy 0 < warn <= alert, got {warn}, {alert}")
        self.warn = float(warn)
        self.alert = float(alert)
        ref = as_batch(reference, name="reference")
        empty = np.flatnonzero(np.isnan(ref).all(axis=0))
        if empty.size:
            raise ValueError(f"reference has no values for series {empty.tolist()}")
        self._fit(ref)

    def _fit(self, ref: FloatArray) -> None:
        self._edges, self._n_bins = quantile_edges(ref, self.bins)
        codes = bin_codes(ref, self._edges)
        n_series = ref.shape[1]
        self._ref_counts = np.zeros((n_series, self.bins), dtype=np.int64)
        for s in range(n_series):
            valid = codes[:, s][codes[:, s] >= 0]
            self._ref_counts[s] = np.bincount(valid, minlength=self.bins)
        self._n_ref = self._ref_counts.sum(axis=1)
        self._thresholds()
        self._reset_all()

    def _thresholds(self) -> None:
        if self.threshold == "fixed":
            self._alert = np.full(self.n_series, self.alert)
            self._warn = np.full(self.n_series, self.warn)
        else:
            scale = 1.0 / self._n_ref + 1.0 / self.window
            dof = self._n_bins - 1
            self._alert = chi2.ppf(1.0 - self.alpha, dof) * scale
            self._warn = chi2.ppf(1.0 - min(0.5, 10.0 * self.alpha), dof) * scale

    def _reset_all(self) -> None:
        self._win = WindowCounts(self.n_series, self.bins, self.window, self.stride)
        self._score = np.full(self.n_series, np.nan)

    @property
    def n_series(self) -> int:
        return int(self._edges.shape[0])

    @property
    def params(self) -> dict[str, Any]:
        return {
            "bins": self.bins,
            "window": self.window,
            "stride": self.stride,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "warn": self.warn,
            "alert": self.alert,
        }

    @property
    def edges(self) -> FloatArray:
        """Interior bin edges per series (padded with +inf)."""
        return self._edges.copy()

    def update(self, X: npt.ArrayLike) -> DriftResult:
        """Feed a batch ``(n_events, n_series)`` (or 1-D for one series); NaN is skipped."""
        batch = as_batch(X, self.n_series)
        rows, snaps, n_checks, n_missing = self._win.update_values(
            batch, self._edges, self._n_bins - 1
        )
        checked = np.arange(rows.shape[1]) < n_checks[:, None]
        scores = smoothed_psi(snaps, self._ref_counts[:, None, :], self._n_bins[:, None])
        hit = checked & (scores >= self._alert[:, None])
        detections = rows_where(rows, hit)
        has = n_checks > 0
        self._score[has] = scores[has, n_checks[has] - 1]
        return DriftResult(
            detections=detections,
            score=self._score.copy(),
            p_value_source=np.full(self.n_series, np.nan),
            threshold=self._alert.copy(),
            window_size=self._win.filled,
            reference_size=self._n_ref.copy(),
            n_missing=n_missing,
            drifting=self._score >= self._alert,
            extra={"warn_threshold": self._warn.copy()},
            detection_scores=values_where(scores, hit),
            detection_windows=tuple(np.full(len(d), self.window) for d in detections),
        )

    def reset(self, series: int | Sequence[int] | None = None) -> None:
        """Empty the window of the given series (all when None); the reference stays."""
        idx = series_indices(series, self.n_series)
        self._win.reset(idx)
        self._score[idx] = np.nan

    def export_state(self, *, include_reference: bool = True) -> State:
        """The bin edges and reference counts are small and always included."""
        state = state_header("psi", self.params)
        state.update(
            edges=self._edges.copy(),
            n_bins=self._n_bins.copy(),
            ref_counts=self._ref_counts.copy(),
            score=self._score.copy(),
            **self._win.export(),
        )
        return state

    @classmethod
    def from_state(cls, state: State, reference: npt.ArrayLike | None = None) -> Self:
        params = check_state(state, "psi")
        det = blank(cls, params)
        det._edges = np.array(state["edges"], dtype=np.float64)
        det._n_bins = np.array(state["n_bins"], dtype=np.int64)
        det._ref_counts = np.array(state["ref_counts"], dtype=np.int64)
        det._n_ref = det._ref_counts.sum(axis=1)
        det._thresholds()
        det._reset_all()
        det._win.load(state)
        det._score[:] = state["score"]
        return det

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"PSI(<reference: {self.n_series} series>, {args})"
