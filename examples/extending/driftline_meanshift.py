"""A detector of one's own, as a plugin: a z-test of each window's mean against the
reference's mean, over tumbling windows of ``window`` values.

A package makes it available to every configuration with one line in its
``pyproject.toml``::

    [project.entry-points."driftline.detectors"]
    mean_shift = "driftline_meanshift:KIND"

and a configuration then uses it like any other detector::

    defaults:
      detectors: [ks, mean_shift]
      params: {mean_shift: {window: 500, z: 6}}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.base import DriftResult, as_batch, check_state, series_indices, state_header
from monitor.config.kinds import DetectorKind, Params


class MeanShift:
    """Signals where a window's mean is more than ``z`` standard errors (the reference's
    standard deviation over the square root of the window) from the reference's mean.

    >>> rng = np.random.default_rng(0)
    >>> det = MeanShift(rng.normal(0, 1, 2000), window=100, z=5)
    >>> det.update(np.r_[rng.normal(0, 1, 300), rng.normal(1, 1, 200)]).detections[0].tolist()
    [399, 499]
    """

    def __init__(self, reference: npt.ArrayLike, window: int = 500, z: float = 6.0) -> None:
        ref = as_batch(reference, name="reference")
        self.window, self.z = int(window), float(z)
        self._mu = np.nanmean(ref, axis=0)
        self._sd = np.nanstd(ref, axis=0)
        n = ref.shape[1]
        self._sum = np.zeros(n)
        self._count = np.zeros(n, dtype=np.int64)
        self._score = np.full(n, np.nan)

    @property
    def n_series(self) -> int:
        return int(self._mu.shape[0])

    def update(self, X: npt.ArrayLike) -> DriftResult:
        batch = as_batch(X, self.n_series)
        threshold = np.full(self.n_series, self.z)
        rows: list[list[int]] = [[] for _ in range(self.n_series)]
        scores: list[list[float]] = [[] for _ in range(self.n_series)]
        missing = np.isnan(batch).sum(axis=0)
        for s in range(self.n_series):
            for r, v in enumerate(batch[:, s]):
                if v != v:
                    continue
                self._sum[s] += v
                self._count[s] += 1
                if self._count[s] == self.window:
                    se = max(self._sd[s], 1e-12) / np.sqrt(self.window)
                    self._score[s] = abs(self._sum[s] / self.window - self._mu[s]) / se
                    if self._score[s] >= self.z:
                        rows[s].append(r)
                        scores[s].append(float(self._score[s]))
                    self._sum[s], self._count[s] = 0.0, 0
        return DriftResult(
            detections=tuple(np.array(r, dtype=np.int64) for r in rows),
            score=self._score.copy(),
            p_value_source=np.full(self.n_series, np.nan),
            threshold=threshold,
            window_size=self._count.copy(),
            reference_size=np.zeros(self.n_series, dtype=np.int64),
            n_missing=missing.astype(np.int64),
            drifting=self._score >= self.z,
            detection_scores=tuple(np.array(x) for x in scores),
            detection_windows=tuple(np.full(len(r), self.window) for r in rows),
        )

    def reset(self, series: int | Sequence[int] | None = None) -> None:
        idx = series_indices(series, self.n_series)
        self._sum[idx], self._count[idx], self._score[idx] = 0.0, 0, np.nan

    def export_state(self, *, include_reference: bool = True) -> dict[str, Any]:
        state = state_header("mean_shift", {"window": self.window, "z": self.z})
        state.update(mu=self._mu, sd=self._sd, sum=self._sum, count=self._count, score=self._score)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], reference: npt.ArrayLike | None = None) -> MeanShift:
        params = check_state(state, "mean_shift")
        det = cls(np.zeros((1, len(state["mu"]))), **params)
        det._mu, det._sd = np.array(state["mu"]), np.array(state["sd"])
        det._sum, det._count = np.array(state["sum"]), np.array(state["count"])
        det._score = np.array(state["score"])
        return det


class MeanShiftParams(Params):
    """``params.mean_shift`` in a configuration."""

    window: int = 500
    z: float = 6.0


KIND = DetectorKind(
    "mean_shift", "numeric", MeanShiftParams, lambda p, ref: MeanShift(ref, p.window, p.z)
)
