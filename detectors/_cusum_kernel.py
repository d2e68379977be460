"""numba kernels of the CUSUM bank: reference ranks of raw values, and the CUSUM recursion
over score tables."""

from __future__ import annotations

import math

from numba import njit


@njit(cache=True, nogil=True)
def rank_buckets(XT, support, n_support, out):
    """Bucket of every value against its series' sorted support points ``v``: ``2 j + 1``
    for a value equal to ``v[j]``, ``2 j`` for one strictly between ``v[j-1]`` and ``v[j]``
    (``2 m`` above them all); ``-1`` for NaN."""
    n_series, n_events = XT.shape
    for s in range(n_series):
        m = n_support[s]
        for r in range(n_events):
            x = XT[s, r]
            if math.isnan(x):
                out[s, r] = -1
                continue
            lo, hi = 0, m
            while lo < hi:
                mid = (lo + hi) >> 1
                if support[s, mid] < x:
                    lo = mid + 1
                else:
                    hi = mid
            out[s, r] = 2 * lo + (1 if lo < m and support[s, lo] == x else 0)


@njit(cache=True, nogil=True)
def cusum_update(
    buckets,
    table,
    channel,
    sign,
    allowance,
    h,
    S,
    zero_at,
    n_seen,
    rows,
    which,
    ratio,
    run,
    n_alarms,
    n_missing,
):
    """Advance every series' CUSUMs by a batch of buckets (``n_series x n_events``, -1 =
    missing). CUSUM ``c`` adds ``sign[c] * table[s, channel[c], bucket] - allowance[c]``;
    the first event at which any CUSUM of a series exceeds its threshold is an alarm (the
    CUSUM with the largest ``S / h`` is reported with the events since it last left 0),
    and then every CUSUM of that series restarts at 0."""
    n_series, n_events = buckets.shape
    n_cusum = channel.shape[0]
    for s in range(n_series):
        na = 0
        miss = 0
        for r in range(n_events):
            b = buckets[s, r]
            if b < 0:
                miss += 1
                continue
            n_seen[s] += 1
            best = -1
            best_ratio = 1.0
            for c in range(n_cusum):
                v = S[s, c] + sign[c] * table[s, channel[c], b] - allowance[c]
                if v <= 0.0:
                    S[s, c] = 0.0
                    zero_at[s, c] = n_seen[s]
                else:
                    S[s, c] = v
                    q = v / h[s, c]
                    if q > best_ratio:
                        best_ratio = q
                        best = c
            if best >= 0:
                rows[s, na] = r
                which[s, na] = best
                ratio[s, na] = best_ratio
                run[s, na] = n_seen[s] - zero_at[s, best]
                na += 1
                for c in range(n_cusum):
                    S[s, c] = 0.0
                    zero_at[s, c] = n_seen[s]
        n_alarms[s] = na
        n_missing[s] = miss
