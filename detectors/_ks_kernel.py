"""Compiled sliding-window two-sample KS statistic (numba).

For a sorted reference ``a`` (``n1`` values) and a sorted window ``b`` (``n2``), scipy's
``ks_2samp`` evaluates ``c1/n1 - c2/n2`` at every pooled value, ``c1, c2`` being the counts
``<=`` that value. Between two window values the window's ECDF is flat while the
reference's rises, so the extremes are reached just before a window value or at one: the
kernel walks the window once with a forward pointer into the reference and evaluates those
points only. It forms the same integer pairs, hence the same floats, as scipy.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def ks_statistic(a, n1, b, n2):
    """Two-sided D of sorted ``a[:n1]`` vs sorted ``b[:n2]``, computed as scipy does."""
    # The largest pooled value always gives 1 - 1 = 0, so 0 bounds both extremes.
    max_diff = 0.0
    min_diff = 0.0
    i = 0
    k = 0
    while k < n2:
        v = b[k]
        while i < n1 and a[i] < v:
            i += 1
        diff = i / n1 - k / n2
        if diff > max_diff:
            max_diff = diff
        if diff < min_diff:
            min_diff = diff
        while k < n2 and b[k] == v:
            k += 1
        while i < n1 and a[i] <= v:
            i += 1
        diff = i / n1 - k / n2
        if diff > max_diff:
            max_diff = diff
        if diff < min_diff:
            min_diff = diff
    min_s = min(max(-min_diff, 0.0), 1.0)
    return min_s if min_s > max_diff else max_diff


@njit(cache=True, nogil=True)
def ks_update(
    XT, ring, pos, n_seen, ref, n_ref, window, stride, check_rows, stats, n_checks, n_missing
):
    """Advance every series' window by ``XT`` (``n_series x n_events``, NaN = missing).

    A check happens at the value that fills the window and every ``stride`` values after;
    series ``s``'s checks land in ``check_rows[s, :n]`` and ``stats[s, :n]``.
    """
    n_series, n_events = XT.shape
    buf = np.empty(window)
    for s in range(n_series):
        nc = 0
        miss = 0
        for r in range(n_events):
            x = XT[s, r]
            if math.isnan(x):
                miss += 1
                continue
            p = pos[s]
            ring[s, p] = x
            pos[s] = p + 1 if p + 1 < window else 0
            seen = n_seen[s] + 1
            n_seen[s] = seen
            if seen >= window and (seen - window) % stride == 0:
                buf[:] = ring[s, :]
                buf.sort()
                check_rows[s, nc] = r
                stats[s, nc] = ks_statistic(ref[s], n_ref[s], buf, window)
                nc += 1
        n_checks[s] = nc
        n_missing[s] = miss
