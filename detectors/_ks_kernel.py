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
def value_bin(u, n_u, x):
    """Bin of ``x`` among the distinct reference values ``u[:n_u]``: ``2p + 1`` when
    ``x == u[p]``, ``2p`` when ``u[p-1] < x < u[p]`` (0 below all, ``2 n_u`` above all)."""
    # Branch-free lower bound (the halving steps are selects, not jumps).
    base = 0
    n = n_u
    while n > 1:
        half = n >> 1
        base += half * (u[base + half - 1] < x)
        n -= half
    lo = base + (1 if u[base] < x else 0)
    return 2 * lo + 1 if lo < n_u and u[lo] == x else 2 * lo


@njit(cache=True, nogil=True)
def binned_statistic(counts, n_bins, f1, f2):
    """D from the window's counts per bin. ``f1[b]`` is the reference ECDF (``c1 / n1``)
    at the points of bin ``b`` and ``f2[c] = c / n2``. Evaluating ``f1 - f2`` after every
    bin covers every point where scipy's ``cdf1 - cdf2`` reaches its extremes, with the
    same integer pairs, hence the same floats. Four running extremes (max and min are exact
    in any order) keep the loop from waiting on one accumulator."""
    hi0 = hi1 = hi2 = hi3 = 0.0
    lo0 = lo1 = lo2 = lo3 = 0.0
    c2 = 0
    b = 0
    while b + 4 <= n_bins:
        c2 += counts[b]
        d0 = f1[b] - f2[c2]
        c2 += counts[b + 1]
        d1 = f1[b + 1] - f2[c2]
        c2 += counts[b + 2]
        d2 = f1[b + 2] - f2[c2]
        c2 += counts[b + 3]
        d3 = f1[b + 3] - f2[c2]
        hi0 = d0 if d0 > hi0 else hi0
        hi1 = d1 if d1 > hi1 else hi1
        hi2 = d2 if d2 > hi2 else hi2
        hi3 = d3 if d3 > hi3 else hi3
        lo0 = d0 if d0 < lo0 else lo0
        lo1 = d1 if d1 < lo1 else lo1
        lo2 = d2 if d2 < lo2 else lo2
        lo3 = d3 if d3 < lo3 else lo3
        b += 4
    while b < n_bins:
        c2 += counts[b]
        d0 = f1[b] - f2[c2]
        hi0 = d0 if d0 > hi0 else hi0
        lo0 = d0 if d0 < lo0 else lo0
        b += 1
    max_diff = max(max(hi0, hi1), max(hi2, hi3))
    min_diff = min(min(lo0, lo1), min(lo2, lo3))
    min_s = min(max(-min_diff, 0.0), 1.0)
    return min_s if min_s > max_diff else max_diff


@njit(cache=True, nogil=True, inline="always")
def _finish_bin(u, n_u, x, base):
    lo = base + (1 if u[base] < x else 0)
    return 2 * lo + 1 if lo < n_u and u[lo] == x else 2 * lo


@njit(cache=True, nogil=True)
def bins_of(u, n_u, xs, out):
    """``value_bin`` of every value of ``xs`` into ``out``, four searches at a time: their
    halving steps are independent, so the memory loads of four searches overlap."""
    n = xs.shape[0]
    j = 0
    while j + 4 <= n:
        x0, x1, x2, x3 = xs[j], xs[j + 1], xs[j + 2], xs[j + 3]
        b0 = b1 = b2 = b3 = 0
        m = n_u
        while m > 1:
            half = m >> 1
            # Arithmetic, not a conditional: LLVM would make a mispredicted branch of that.
            b0 += half * (u[b0 + half - 1] < x0)
            b1 += half * (u[b1 + half - 1] < x1)
            b2 += half * (u[b2 + half - 1] < x2)
            b3 += half * (u[b3 + half - 1] < x3)
            m -= half
        out[j] = _finish_bin(u, n_u, x0, b0)
        out[j + 1] = _finish_bin(u, n_u, x1, b1)
        out[j + 2] = _finish_bin(u, n_u, x2, b2)
        out[j + 3] = _finish_bin(u, n_u, x3, b3)
        j += 4
    while j < n:
        out[j] = value_bin(u, n_u, xs[j])
        j += 1


@njit(cache=True, nogil=True)
def ks_update(
    XT,
    ring,
    pos,
    n_seen,
    counts,
    u,
    n_u,
    f1,
    f2,
    window,
    stride,
    check_rows,
    stats,
    n_checks,
    n_missing,
):
    """Advance every series' window by ``XT`` (``n_series x n_events``, NaN = missing).

    The ring holds each value's bin; ``counts[s]`` the window's values per bin. A check
    happens at the value that fills the window and every ``stride`` values after; series
    ``s``'s checks land in ``check_rows[s, :n]`` and ``stats[s, :n]``.
    """
    n_series, n_events = XT.shape
    bins = np.empty(n_events, dtype=np.int64)
    for s in range(n_series):
        nc = 0
        miss = 0
        nus = n_u[s]
        n_bins = 2 * nus + 1
        bins_of(u[s], nus, XT[s], bins)
        seen = n_seen[s]
        # The next check's value count, kept as a countdown: no division per value.
        due = window if seen < window else window + ((seen - window) // stride + 1) * stride
        for r in range(n_events):
            if math.isnan(XT[s, r]):
                miss += 1
                continue
            p = pos[s]
            if seen >= window:
                counts[s, ring[s, p]] -= 1
            b = bins[r]
            ring[s, p] = b
            counts[s, b] += 1
            pos[s] = p + 1 if p + 1 < window else 0
            seen += 1
            if seen == due:
                check_rows[s, nc] = r
                stats[s, nc] = binned_statistic(counts[s], n_bins, f1[s], f2)
                nc += 1
                due += stride
        n_seen[s] = seen
        n_checks[s] = nc
        n_missing[s] = miss
