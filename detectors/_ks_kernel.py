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
def merge_sort(a, n, tmp):
    """Sort ``a[:n]`` in place (bottom-up merge sort, ``tmp`` at least ``n`` long).

    The values are never NaN here, so plain ``<`` comparisons suffice: several times faster
    than numba's general ``ndarray.sort`` on these sizes."""
    width = 1
    src, dst = a, tmp
    while width < n:
        lo = 0
        while lo < n:
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if src[j] < src[i]:
                    dst[k] = src[j]
                    j += 1
                else:
                    dst[k] = src[i]
                    i += 1
                k += 1
            while i < mid:
                dst[k] = src[i]
                i += 1
                k += 1
            while j < hi:
                dst[k] = src[j]
                j += 1
                k += 1
            lo = hi
        src, dst = dst, src
        width *= 2
    if src is not a:
        for q in range(n):
            a[q] = src[q]


@njit(cache=True, nogil=True)
def _resort(sorted_win, gone, n_gone, incoming, n_in, marked, merged):
    """``sorted_win`` minus the ``n_gone`` values in ``gone`` plus the sorted ``incoming``
    values, into ``merged`` (the same length as ``sorted_win``). Each value that left is
    found by binary search and marked; equal values sit together, so a repeated value marks
    the next copy."""
    n = sorted_win.shape[0]
    marked[:] = False
    for q in range(n_gone):
        g = gone[q]
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) >> 1
            if sorted_win[mid] < g:
                lo = mid + 1
            else:
                hi = mid
        while marked[lo]:
            lo += 1
        marked[lo] = True
    i = 0
    j = 0
    for k in range(n):
        while marked[i]:
            i += 1
        if j < n_in and (i >= n or incoming[j] < sorted_win[i]):
            merged[k] = incoming[j]
            j += 1
        else:
            merged[k] = sorted_win[i]
            i += 1


@njit(cache=True, nogil=True)
def ks_update(
    XT,
    ring,
    pos,
    n_seen,
    sorted_win,
    gone,
    ref,
    n_ref,
    window,
    stride,
    check_rows,
    stats,
    n_checks,
    n_missing,
):
    """Advance every series' window by ``XT`` (``n_series x n_events``, NaN = missing).

    A check happens at the value that fills the window and every ``stride`` values after;
    series ``s``'s checks land in ``check_rows[s, :n]`` and ``stats[s, :n]``.

    ``sorted_win[s]`` is the window as of the last check, kept sorted; ``gone[s]`` collects
    the values overwritten since, so that the next check merges ``stride`` new values in
    instead of sorting the whole window again (when ``stride < window``).
    """
    n_series, n_events = XT.shape
    incremental = stride < window
    merged = np.empty(window)
    tmp = np.empty(window)
    marked = np.zeros(window + 1, dtype=np.bool_)
    incoming = np.empty(min(stride, window))
    for s in range(n_series):
        nc = 0
        miss = 0
        # The next check's value count, kept as a countdown: no division per value.
        seen = n_seen[s]
        due = window if seen < window else window + ((seen - window) // stride + 1) * stride
        for r in range(n_events):
            x = XT[s, r]
            if math.isnan(x):
                miss += 1
                continue
            p = pos[s]
            if incremental and seen >= window:
                gone[s, seen - (due - stride)] = ring[s, p]
            ring[s, p] = x
            pos[s] = p + 1 if p + 1 < window else 0
            seen += 1
            if seen != due:
                continue
            if seen == window or not incremental:
                sorted_win[s, :] = ring[s, :]
                merge_sort(sorted_win[s], window, tmp)
            else:
                start = pos[s] - stride
                for q in range(stride):
                    incoming[q] = ring[s, start + q if start + q >= 0 else start + q + window]
                merge_sort(incoming, stride, tmp)
                _resort(sorted_win[s], gone[s], stride, incoming, stride, marked, merged)
                sorted_win[s, :] = merged
            check_rows[s, nc] = r
            stats[s, nc] = ks_statistic(ref[s], n_ref[s], sorted_win[s], window)
            nc += 1
            due += stride
        n_seen[s] = seen
        n_checks[s] = nc
        n_missing[s] = miss
