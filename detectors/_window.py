"""Sliding-window bucket counts with periodic checks: the shared core of PSI and the
categorical test.

Each series feeds small integer codes (a bin or a category; ``-1`` means missing) into a
ring buffer of its last ``window`` valid codes while keeping per-bucket counts. Once the
window is full, a *check* happens at the value that filled it and then every ``stride``
values; at each check the kernel records the row and a snapshot of the counts. Scoring the
snapshots is left to the caller (vectorised numpy).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

IntArray = npt.NDArray[np.int64]


@njit(cache=True, nogil=True, inline="always")
def _next_check(seen, window, stride):
    """The count of values at which the first check after ``seen`` values happens."""
    if seen < window:
        return window
    return window + ((seen - window) // stride + 1) * stride


@njit(cache=True, nogil=True, inline="always")
def _push(s, c, ring, pos, n_seen, counts, window):
    """Add code ``c`` to series ``s``'s window; returns the new ``n_seen``."""
    p = pos[s]
    if n_seen[s] >= window:
        counts[s, ring[s, p]] -= 1
    ring[s, p] = c
    counts[s, c] += 1
    pos[s] = p + 1 if p + 1 < window else 0
    n_seen[s] += 1
    return n_seen[s]


@njit(cache=True, nogil=True)
def window_counts(
    codes, ring, pos, n_seen, counts, window, stride, check_rows, snaps, n_checks, n_missing
):
    """Advance every series by a batch of ``codes`` (``n_series x n_events``, -1 = missing)."""
    n_series, n_events = codes.shape
    for s in range(n_series):
        nc = 0
        miss = 0
        due = _next_check(n_seen[s], window, stride)
        for r in range(n_events):
            c = codes[s, r]
            if c < 0:
                miss += 1
                continue
            if _push(s, c, ring, pos, n_seen, counts, window) == due:
                check_rows[s, nc] = r
                snaps[s, nc, :] = counts[s, :]
                nc += 1
                due += stride
        n_checks[s] = nc
        n_missing[s] = miss


@njit(cache=True, nogil=True)
def window_counts_binned(
    XT,
    edges,
    n_edges,
    ring,
    pos,
    n_seen,
    counts,
    window,
    stride,
    check_rows,
    snaps,
    n_checks,
    n_missing,
):
    """Like :func:`window_counts` for raw values (NaN = missing): value ``x`` goes to bin
    ``#{edges < x}`` of its series, so bin ``i`` is ``(edge[i-1], edge[i]]``."""
    n_series, n_events = XT.shape
    for s in range(n_series):
        nc = 0
        miss = 0
        ne = n_edges[s]
        due = _next_check(n_seen[s], window, stride)
        for r in range(n_events):
            x = XT[s, r]
            if math.isnan(x):
                miss += 1
                continue
            lo = 0
            if ne <= 16:  # a branch-free count beats a mispredicted binary search
                for e in range(ne):
                    lo += edges[s, e] < x
            else:
                hi = ne
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if edges[s, mid] < x:
                        lo = mid + 1
                    else:
                        hi = mid
            if _push(s, lo, ring, pos, n_seen, counts, window) == due:
                check_rows[s, nc] = r
                snaps[s, nc, :] = counts[s, :]
                nc += 1
                due += stride
        n_checks[s] = nc
        n_missing[s] = miss


class WindowCounts:
    """Per-series sliding window of codes ``0..n_buckets-1``, checked every ``stride`` values.

    ``stride == window`` gives tumbling (non-overlapping) windows: the windows compared at
    consecutive checks share no value.
    """

    def __init__(self, n_series: int, n_buckets: int, window: int, stride: int) -> None:
        self.window = window
        self.stride = stride
        self.ring = np.zeros((n_series, window), dtype=np.int64)
        self.pos = np.zeros(n_series, dtype=np.int64)
        self.n_seen = np.zeros(n_series, dtype=np.int64)
        self.counts = np.zeros((n_series, n_buckets), dtype=np.int64)

    @property
    def filled(self) -> IntArray:
        """Values currently in each series' window."""
        return np.minimum(self.n_seen, self.window)

    def _buffers(self, n_events: int, n_series: int) -> tuple[IntArray, ...]:
        max_checks = n_events // self.stride + 1
        return (
            np.zeros((n_series, max_checks), dtype=np.int64),
            np.zeros((n_series, max_checks, self.counts.shape[1]), dtype=np.int64),
            np.zeros(n_series, dtype=np.int64),
            np.zeros(n_series, dtype=np.int64),
        )

    def update(self, codes: IntArray) -> tuple[IntArray, IntArray, IntArray, IntArray]:
        """Feed ``codes`` (``n_events x n_series``, -1 = missing).

        Returns ``(check_rows, snapshots, n_checks, n_missing)``: series ``s`` had
        ``n_checks[s]`` checks at rows ``check_rows[s, :n]`` with window counts
        ``snapshots[s, :n]`` (entries past ``n`` are zero).
        """
        rows, snaps, n_checks, n_missing = self._buffers(*codes.shape)
        window_counts(
            np.ascontiguousarray(codes.T),
            self.ring,
            self.pos,
            self.n_seen,
            self.counts,
            self.window,
            self.stride,
            rows,
            snaps,
            n_checks,
            n_missing,
        )
        return rows, snaps, n_checks, n_missing

    def update_values(
        self, X: npt.NDArray[np.float64], edges: npt.NDArray[np.float64], n_edges: IntArray
    ) -> tuple[IntArray, IntArray, IntArray, IntArray]:
        """Like :meth:`update` for raw values binned by ``edges`` (NaN = missing)."""
        rows, snaps, n_checks, n_missing = self._buffers(*X.shape)
        window_counts_binned(
            np.ascontiguousarray(X.T),
            edges,
            n_edges,
            self.ring,
            self.pos,
            self.n_seen,
            self.counts,
            self.window,
            self.stride,
            rows,
            snaps,
            n_checks,
            n_missing,
        )
        return rows, snaps, n_checks, n_missing

    def reset(self, idx: IntArray) -> None:
        self.ring[idx] = 0
        self.pos[idx] = 0
        self.n_seen[idx] = 0
        self.counts[idx] = 0

    def export(self) -> dict[str, Any]:
        return {
            "ring": self.ring.copy(),
            "pos": self.pos.copy(),
            "n_seen": self.n_seen.copy(),
            "counts": self.counts.copy(),
        }

    def load(self, state: dict[str, Any]) -> None:
        for name in ("ring", "pos", "n_seen", "counts"):
            getattr(self, name)[...] = state[name]


def smoothed_psi(
    window_counts: npt.ArrayLike,
    reference_counts: npt.ArrayLike,
    n_buckets: npt.ArrayLike | None = None,
) -> Any:
    """PSI between count vectors (last axis = buckets) with Jeffreys smoothing.

    Each bucket gets half a pseudo-count before proportions are taken,
    ``p = (c + 0.5) / (n + 0.5 * B)``, in both samples, so an empty bucket never yields
    ``log(0)``. A bucket with reference share ``q`` that is empty in a window of ``n``
    values adds at most ``q * ln(q * (2n + B))`` (0.53 for deciles and ``n = 1000``), and
    no bucket can add more than ``ln(2n + B)``.

    ``n_buckets`` (broadcast against the leading axes) says how many leading buckets are
    real where rows have fewer buckets than the last axis; the rest must hold zeros.

    >>> round(float(smoothed_psi([50, 50], [50, 50])), 6)
    0.0
    >>> round(float(smoothed_psi([0, 100], [50, 50])), 3)
    2.625
    """
    w = np.asarray(window_counts, dtype=np.float64)
    r = np.asarray(reference_counts, dtype=np.float64)
    width = w.shape[-1]
    if n_buckets is None:
        nb = np.full((*w.shape[:-1], 1), float(width))
        real = np.ones(width, dtype=bool)
    else:
        nb = np.asarray(n_buckets, dtype=np.float64)[..., None]
        real = np.arange(width) < nb
    p = (w + 0.5) / (w.sum(axis=-1, keepdims=True) + 0.5 * nb)
    q = (r + 0.5) / (r.sum(axis=-1, keepdims=True) + 0.5 * nb)
    return np.where(real, (p - q) * np.log(p / q), 0.0).sum(axis=-1)
