"""Category frequencies of a sliding window against a reference: chi-squared test and PSI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from scipy import special
from scipy.stats import chi2

from ._chi2_kernel import chi2_homogeneity
from ._window import WindowCounts, smoothed_psi
from .base import (
    DriftResult,
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


def as_codes(X: npt.ArrayLike, n_categories: int, name: str = "codes") -> IntArray:
    """Category codes as int64 buckets: ``0..n_categories-1`` known, ``n_categories`` for
    any other code (unseen), ``-1`` for NaN (missing). Non-integer values are rejected."""
    batch = as_batch(X, name=name)
    finite = ~np.isnan(batch)
    if not np.array_equal(batch[finite], np.round(batch[finite])):
        raise ValueError(f"{name} must hold integer category codes (or NaN for missing)")
    codes = np.full(batch.shape, -1, dtype=np.int64)
    vals = batch[finite].astype(np.int64)
    vals[(vals < 0) | (vals >= n_categories)] = n_categories
    codes[finite] = vals
    return codes


def reference_counts(
    reference_codes: npt.ArrayLike, n_categories: int | None
) -> tuple[int, IntArray]:
    """``(n_categories, counts)`` of reference codes: per series, the count of each code
    and, last, of the unseen bucket. ``n_categories`` defaults to the largest code + 1."""
    ref = as_batch(reference_codes, name="reference_codes")
    finite = ref[~np.isnan(ref)]
    if n_categories is None:
        if finite.size == 0 or finite.max() < 0:
            raise ValueError("reference_codes has no valid (non-negative) code")
        n_categories = int(finite.max()) + 1
    n = check_positive_int("n_categories", n_categories)
    codes = as_codes(ref, n, name="reference_codes")
    counts = np.zeros((codes.shape[1], n + 1), dtype=np.int64)
    for s in range(codes.shape[1]):
        col = codes[:, s]
        counts[s] = np.bincount(col[col >= 0], minlength=n + 1)
    empty = np.flatnonzero(counts.sum(axis=1) == 0)
    if empty.size:
        raise ValueError(f"reference_codes has no values for series {empty.tolist()}")
    return n, counts


class CategoricalDrift:
    r"""Category frequencies in a sliding window vs a reference, one test per series.

    Categories arrive as small integer codes. The caller maps each string to its code in
    the reference vocabulary (``0..n_categories-1``) and every string the reference never
    had to ``-1``; any code outside ``0..n_categories-1`` lands in one explicit *unseen*
    bucket, which the reference has zero of. NaN means missing and is skipped.

    At each check (the value that fills the window, then every ``stride`` values):

    * ``score``: Pearson's chi-squared statistic of the 2 x k table
      ``[reference counts; window counts]`` over the categories present in either row;
      ``p_value`` equals ``scipy.stats.chi2_contingency(table, correction=False).pvalue``
      bit for bit; ``threshold`` is the critical statistic ``chi2.ppf(1 - alpha, k - 1)``.
      Drift is signalled where ``p_value <= alpha``.
    * ``extra["psi"]``: PSI over all categories plus the unseen bucket, smoothed as in
      :class:`PSI`.
    * ``extra["unseen_share"]``: share of the window in the unseen bucket.

    Nothing is reset after a detection.

    State: ``8 * (window + 2 * n_categories + 4)`` bytes per series.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> ref = rng.choice(3, size=3000, p=[0.5, 0.3, 0.2])
    >>> cat = CategoricalDrift(ref, window=500, stride=500)
    >>> r = cat.update(rng.choice(3, size=500, p=[0.5, 0.3, 0.2]))
    >>> round(float(r.score[0]), 3), round(float(r.p_value[0]), 3), r.drifting.tolist()
    (0.537, 0.765, [False])
    >>> r = cat.update(rng.choice([0, 1, 2, -1], size=500, p=[0.4, 0.3, 0.2, 0.1]))
    >>> round(float(r.extra["unseen_share"][0]), 3), r.detections[0].tolist()
    (0.104, [499])
    """

    def __init__(
        self,
        reference_codes: npt.ArrayLike,
        window: int = 1000,
        stride: int | None = None,
        alpha: float = 0.01,
        n_categories: int | None = None,
    ) -> None:
        self.window = check_positive_int("window", window, minimum=2)
        self.stride = check_positive_int(
            "stride", max(1, self.window // 10) if stride is None else stride
        )
        self.alpha = check_probability("alpha", alpha)
        self.n_categories, counts = reference_counts(reference_codes, n_categories)
        self._setup(counts)

    def _setup(self, ref_counts: IntArray) -> None:
        self._ref_counts = ref_counts
        self._n_ref = ref_counts.sum(axis=1)
        n_series = ref_counts.shape[0]
        self._win = WindowCounts(n_series, self.n_categories + 1, self.window, self.stride)
        self._last = np.full((n_series, 4), np.nan)  # chi2, p, dof, psi of the last check

    @property
    def n_series(self) -> int:
        return int(self._ref_counts.shape[0])

    @property
    def params(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "stride": self.stride,
            "alpha": self.alpha,
            "n_categories": self.n_categories,
        }

    def update(self, codes: npt.ArrayLike) -> DriftResult:
        """Feed a batch of codes ``(n_events, n_series)`` (or 1-D); NaN is skipped."""
        batch = as_codes(codes, self.n_categories)
        if batch.shape[1] != self.n_series:
            raise ValueError(f"codes has {batch.shape[1]} series, expected {self.n_series}")
        rows, snaps, n_checks, n_missing = self._win.update(batch)
        stats = np.zeros(rows.shape)
        dofs = np.zeros(rows.shape, dtype=np.int64)
        chi2_homogeneity(snaps, n_checks, self._ref_counts, stats, dofs)
        checked = np.arange(rows.shape[1]) < n_checks[:, None]
        p = np.ones(rows.shape)
        tested = checked & (dofs > 0)
        p[tested] = special.chdtrc(dofs[tested].astype(np.float64), stats[tested])
        hit = checked & (p <= self.alpha)
        detections = rows_where(rows, hit)
        has = np.flatnonzero(n_checks > 0)
        last = n_checks[has] - 1
        psi = smoothed_psi(snaps[has, last], self._ref_counts[has])
        self._last[has] = np.column_stack([stats[has, last], p[has, last], dofs[has, last], psi])
        chi, p_value, dof, psi = self._last.T
        threshold = np.where(dof > 0, chi2.ppf(1.0 - self.alpha, np.maximum(dof, 1)), np.inf)
        filled = self._win.filled
        unseen = self._win.counts[:, -1] / np.maximum(filled, 1)
        return DriftResult(
            detections=detections,
            score=chi.copy(),
            p_value_source=p_value.copy(),
            threshold=np.where(np.isnan(dof), np.nan, threshold),
            window_size=filled,
            reference_size=self._n_ref.copy(),
            n_missing=n_missing,
            drifting=p_value <= self.alpha,
            extra={"psi": psi.copy(), "unseen_share": unseen},
            detection_scores=values_where(stats, hit),
            detection_p_value_source=values_where(p, hit),
            detection_windows=tuple(np.full(len(d), self.window) for d in detections),
        )

    def reset(self, series: int | Sequence[int] | None = None) -> None:
        """Empty the window of the given series (all when None); the reference stays."""
        idx = series_indices(series, self.n_series)
        self._win.reset(idx)
        self._last[idx] = np.nan

    def export_state(self, *, include_reference: bool = True) -> State:
        """The reference's counts are small and always included."""
        state = state_header("categorical", self.params)
        state.update(
            ref_counts=self._ref_counts.copy(), last=self._last.copy(), **self._win.export()
        )
        return state

    @classmethod
    def from_state(cls, state: State, reference: npt.ArrayLike | None = None) -> Self:
        params = check_state(state, "categorical")
        det = blank(cls, params)
        det._setup(np.array(state["ref_counts"], dtype=np.int64))
        det._win.load(state)
        det._last[...] = state["last"]
        return det

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"CategoricalDrift(<reference: {self.n_series} series>, {args})"
