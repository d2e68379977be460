"""ADWIN (adaptive windowing) over many series at once, bit-identical to river's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from . import _adwin_kernel as k
from .base import (
    DriftResult,
    State,
    as_batch,
    check_positive_int,
    check_probability,
    check_state,
    series_indices,
    state_header,
)

_INITIAL_LEVELS = 16


class ADWIN:
    r"""Adaptive windowing drift detector (Bifet & Gavaldà, 2007), one per series.

    Each series keeps a window whose length adapts: whenever two sub-windows ``W0`` (older)
    and ``W1`` (newer) have means further apart than the Hoeffding-style bound
    ``eps_cut(delta)``, the oldest data is dropped and drift is signalled. Values are kept
    in exponential buckets (ADWIN2), so memory grows with ``log(width)``.

    For any stream and any way of cutting it into batches, the rows at which drift is
    signalled are exactly those at which ``river.drift.ADWIN`` (0.26.1), fed the same
    values one by one with the same parameters, reports ``drift_detected``.

    **After a detection** the series is reset on its next value, as river does: the window
    restarts empty, so the next detection needs at least ``grace_period`` new values.

    Parameters
    ----------
    delta
        Confidence of the cut test; smaller means fewer, surer detections.
    clock
        Check for a cut every ``clock`` values of a series.
    max_buckets
        Buckets of each size kept before two are merged.
    min_window_length
        Smallest sub-window a cut may leave on either side.
    grace_period
        No check until the window holds more than this many values.
    n_series
        Number of series; if None it is taken from the first batch.

    Result fields: ``score`` is the largest ``|mean(W0) - mean(W1)| / eps_cut`` over the cuts
    at the last check (drift when a cut exceeds 1, so ``threshold`` is 1.0); ``window_size``
    is the current width; ``p_value`` is NaN. ``extra["mean"]`` and ``extra["variance"]``
    hold the window's mean and variance.

    State: ``16 * L * (max_buckets + 1) + 16 * L + 64`` bytes per series with ``L`` bucket
    levels in use (``L <= log2(width) + 1``): about 2 KiB for a million-value window.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> X = np.concatenate([rng.normal(0, 1, (1000, 2)), rng.normal([0, 3], 1, (1000, 2))])
    >>> adwin = ADWIN(delta=0.002)
    >>> r = adwin.update(X)
    >>> [d.tolist() for d in r.detections]   # the second series shifts at row 1000
    [[], [1023]]
    >>> r.window_size.tolist()                # it restarted its window at row 1024
    [2000, 976]
    """

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
        n_series: int | None = None,
        parallel: bool = False,
    ) -> None:
        self.delta = check_probability("delta", delta)
        self.clock = check_positive_int("clock", clock)
        self.max_buckets = check_positive_int("max_buckets", max_buckets)
        self.min_window_length = check_positive_int("min_window_length", min_window_length)
        self.grace_period = check_positive_int("grace_period", grace_period, minimum=0)
        self.parallel = bool(parallel)
        self._n_series = None if n_series is None else check_positive_int("n_series", n_series)
        if self._n_series is not None:
            self._reset(self._n_series)

    # -- state ---------------------------------------------------------------------------
    def _reset(self, n_series: int, levels: int = _INITIAL_LEVELS) -> None:
        slots = self.max_buckets + 1
        self._n_series = n_series
        self._totals = np.zeros((n_series, levels, slots))
        self._variances = np.zeros((n_series, levels, slots))
        self._head = np.zeros((n_series, levels), dtype=np.int64)
        self._counts = np.zeros((n_series, levels), dtype=np.int64)
        self._levels = np.ones(n_series, dtype=np.int64)
        self._fstate = np.zeros((n_series, k.N_FSTATE))
        self._fstate[:, k.F_SCORE] = np.nan
        self._istate = np.zeros((n_series, k.N_ISTATE), dtype=np.int64)

    @property
    def params(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "clock": self.clock,
            "max_buckets": self.max_buckets,
            "min_window_length": self.min_window_length,
            "grace_period": self.grace_period,
            "n_series": self._n_series,
            "parallel": self.parallel,
        }

    @property
    def n_series(self) -> int:
        return 0 if self._n_series is None else self._n_series

    @property
    def width(self) -> npt.NDArray[np.int64]:
        """Current window length per series."""
        return self._fstate[:, k.F_WIDTH].astype(np.int64)

    @property
    def mean(self) -> npt.NDArray[np.float64]:
        """Mean of the current window per series (0.0 for an empty window, as river)."""
        w = self._fstate[:, k.F_WIDTH]
        return np.divide(self._fstate[:, k.F_TOTAL], w, out=np.zeros_like(w), where=w > 0)

    @property
    def variance(self) -> npt.NDArray[np.float64]:
        """Variance of the current window per series."""
        w = self._fstate[:, k.F_WIDTH]
        return np.divide(self._fstate[:, k.F_VARIANCE], w, out=np.zeros_like(w), where=w > 0)

    detection_widths: tuple[npt.NDArray[np.int64], ...] = ()
    """Per series, for each detection of the last ``update``: the window length left after
    the cut, i.e. how many of the newest values ADWIN places after the change."""

    @property
    def n_detections(self) -> npt.NDArray[np.int64]:
        """Detections per series since construction or the last ``reset``."""
        return self._istate[:, k.I_DETECTIONS].copy()

    def _ensure_levels(self, n_new: int) -> None:
        # A level l exists only once the window holds >= 2**l values.
        max_width = int(self._fstate[:, k.F_WIDTH].max(initial=0.0))
        need = (max_width + n_new).bit_length() + 1
        have = self._totals.shape[1]
        if need > have:
            pad = ((0, 0), (0, need - have), (0, 0))
            self._totals = np.pad(self._totals, pad)
            self._variances = np.pad(self._variances, pad)
            self._head = np.pad(self._head, ((0, 0), (0, need - have)))
            self._counts = np.pad(self._counts, ((0, 0), (0, need - have)))

    # -- the protocol --------------------------------------------------------------------
    def update(self, X: npt.ArrayLike) -> DriftResult:
        """Feed a batch ``(n_events, n_series)`` (or 1-D for one series); NaN is skipped."""
        batch = as_batch(X, self._n_series)
        if self._n_series is None:
            self._reset(batch.shape[1])
        n_events, n_series = batch.shape
        self._ensure_levels(n_events)
        # A series can signal at most once per `clock` values (the update after a
        # detection starts a new window).
        det = np.empty((n_series, n_events // self.clock + 1), dtype=np.int64)
        det_score = np.empty(det.shape)
        det_width = np.empty(det.shape)
        n_det = np.zeros(n_series, dtype=np.int64)
        n_missing = np.zeros(n_series, dtype=np.int64)
        kernel = k.adwin_update_parallel if self.parallel else k.adwin_update
        kernel(
            np.ascontiguousarray(batch.T),
            self._totals,
            self._variances,
            self._head,
            self._counts,
            self._levels,
            self._fstate,
            self._istate,
            self.delta,
            self.clock,
            self.max_buckets,
            float(self.min_window_length),
            float(self.grace_period),
            det,
            det_score,
            det_width,
            n_det,
            n_missing,
        )
        detections = tuple(det[i, : n_det[i]].copy() for i in range(n_series))
        scores = tuple(det_score[i, : n_det[i]].copy() for i in range(n_series))
        self.detection_widths = tuple(
            det_width[i, : n_det[i]].astype(np.int64) for i in range(n_series)
        )
        score = self._fstate[:, k.F_SCORE].copy()
        return DriftResult(
            detections=detections,
            score=score,
            p_value_source=np.full(n_series, np.nan),
            threshold=np.ones(n_series),
            window_size=self.width,
            reference_size=np.zeros(n_series, dtype=np.int64),
            n_missing=n_missing,
            drifting=self._istate[:, k.I_PENDING] == 1,
            extra={"mean": self.mean, "variance": self.variance},
            detection_scores=scores,
            detection_windows=self.detection_widths,
        )

    def reset(self, series: int | Sequence[int] | None = None) -> None:
        """Forget everything about the given series (all when None)."""
        if self._n_series is None:
            return
        for s in series_indices(series, self._n_series):
            self._totals[s] = 0.0
            self._variances[s] = 0.0
            self._head[s] = 0
            self._counts[s] = 0
            self._levels[s] = 1
            self._fstate[s] = 0.0
            self._fstate[s, k.F_SCORE] = np.nan
            self._istate[s] = 0

    def export_state(self, *, include_reference: bool = True) -> State:
        """Plain arrays and numbers; ``ADWIN.from_state`` rebuilds an identical detector
        (ADWIN has no reference: ``include_reference`` changes nothing)."""
        state = state_header("adwin", self.params)
        if self._n_series is not None:
            used = int(self._levels.max()) if self._n_series else 1
            state.update(
                totals=self._totals[:, :used].copy(),
                variances=self._variances[:, :used].copy(),
                head=self._head[:, :used].copy(),
                counts=self._counts[:, :used].copy(),
                levels=self._levels.copy(),
                fstate=self._fstate.copy(),
                istate=self._istate.copy(),
            )
        return state

    @classmethod
    def from_state(cls, state: State, reference: npt.ArrayLike | None = None) -> Self:
        params = check_state(state, "adwin")
        det = cls(**params)
        if params["n_series"] is not None:
            n = params["n_series"]
            det._reset(n, levels=max(_INITIAL_LEVELS, state["totals"].shape[1]))
            used = state["totals"].shape[1]
            det._totals[:, :used] = state["totals"]
            det._variances[:, :used] = state["variances"]
            det._head[:, :used] = state["head"]
            det._counts[:, :used] = state["counts"]
            det._levels[:] = state["levels"]
            det._fstate[:] = state["fstate"]
            det._istate[:] = state["istate"]
        return det

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"ADWIN({args})"
