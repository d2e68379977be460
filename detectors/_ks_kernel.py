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
def _resort(sorted_win, gone, incoming, merged):
    """``sorted_win`` minus the values in ``gone`` plus those in ``incoming``, sorted
    (all three sorted; ``merged`` receives the result, same length as ``sorted_win``)."""
    n = sorted_win.shape[0]
    i = 0  # sorted_win
    g = 0  # gone
    j = 0  # incoming
    k = 0
    n_gone = gone.shape[0]
    n_in = incoming.shape[0]
    while k < n:
        # Skip old values that left the window (a multiset difference).
        while i < n and g < n_gone and sorted_win[i] == gone[g]:
            i += 1
            g += 1
        while g < n_gone and i < n and gone[g] < sorted_win[i]:
            g += 1  # cannot happen for a consistent state; keeps the walk safe
        if j < n_in and (i >= n or incoming[j] < sorted_win[i]):
            merged[k] = incoming[j]
            j += 1
        else:
            merged[k] = sorted_win[i]
            i += 1
        k += 1


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
    incoming = np.empty(min(stride, window))
    outgoing = np.empty(min(stride, window))
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
                sorted_win[s].sort()
            else:
                start = pos[s] - stride
                for q in range(stride):
                    incoming[q] = ring[s, start + q if start + q >= 0 else start + q + window]
                incoming.sort()
                outgoing[:] = gone[s, :]
                outgoing.sort()
                _resort(sorted_win[s], outgoing, incoming, merged)
                sorted_win[s, :] = merged
            check_rows[s, nc] = r
            stats[s, nc] = ks_statistic(ref[s], n_ref[s], sorted_win[s], window)
            nc += 1
            due += stride
        n_seen[s] = seen
        n_checks[s] = nc
        n_missing[s] = miss
