"""Compiled ADWIN core (numba).

ADWIN is inherently sequential: every value changes the bucket structure that the next
cut check reads. The loop below follows river 0.26.1's ADWIN step for step, in the same
floating-point operation order, so its detections are bit-identical to river's.

Per series ``s`` (``L`` bucket levels, ``M = max_buckets + 1`` slots per level), each level
is a ring buffer of buckets, oldest first from ``head``: nothing is ever shifted.

* ``totals[s, l, j]``, ``variances[s, l, j]``: a bucket of level ``l`` (``2**l`` values)
* ``head[s, l]``, ``counts[s, l]``: ring start and buckets in use; ``levels[s]``: levels in use
* ``fstate[s]``: ``(total, variance, width, score)``
* ``istate[s]``: ``(tick, pending_reset, n_detections)``
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

F_TOTAL, F_VARIANCE, F_WIDTH, F_SCORE = 0, 1, 2, 3
I_TICK, I_PENDING, I_DETECTIONS = 0, 1, 2
N_FSTATE, N_ISTATE = 4, 3

_jit = njit(cache=True, nogil=True, error_model="numpy")
_inline = njit(cache=True, nogil=True, error_model="numpy", inline="always")


@_inline
def _slot(head, s, lvl, k, n_slots):
    j = head[s, lvl] + k
    return j - n_slots if j >= n_slots else j


@_inline
def _clear_series(s, totals, variances, head, counts, levels, fstate, istate):
    totals[s, :, :] = 0.0
    variances[s, :, :] = 0.0
    head[s, :] = 0
    counts[s, :] = 0
    levels[s] = 1
    fstate[s, F_TOTAL] = 0.0
    fstate[s, F_VARIANCE] = 0.0
    fstate[s, F_WIDTH] = 0.0
    istate[s, I_TICK] = 0
    istate[s, I_PENDING] = 0


@_inline
def _insert(s, value, totals, variances, head, counts, levels, fstate, max_buckets):
    n_slots = max_buckets + 1
    j = _slot(head, s, 0, counts[s, 0], n_slots)
    totals[s, 0, j] = value
    variances[s, 0, j] = 0.0
    counts[s, 0] += 1

    width = fstate[s, F_WIDTH] + 1.0
    fstate[s, F_WIDTH] = width
    inc = 0.0
    if width > 1.0:
        dv = value - fstate[s, F_TOTAL] / (width - 1.0)
        inc = (width - 1.0) * dv * dv / width
    fstate[s, F_VARIANCE] = fstate[s, F_VARIANCE] + inc
    fstate[s, F_TOTAL] = fstate[s, F_TOTAL] + value

    # A full level merges its two oldest buckets into one bucket of the next level.
    lvl = 0
    while counts[s, lvl] == n_slots:
        size = float(1 << lvl)
        j0 = head[s, lvl]
        j1 = _slot(head, s, lvl, 1, n_slots)
        t0 = totals[s, lvl, j0]
        t1 = totals[s, lvl, j1]
        mu1 = t0 / size
        mu2 = t1 / size
        merged_total = t0 + t1
        merged_var = (
            variances[s, lvl, j0] + variances[s, lvl, j1] + size * 0.5 * (mu1 - mu2) * (mu1 - mu2)
        )
        totals[s, lvl, j0] = 0.0
        totals[s, lvl, j1] = 0.0
        variances[s, lvl, j0] = 0.0
        variances[s, lvl, j1] = 0.0
        head[s, lvl] = _slot(head, s, lvl, 2, n_slots)
        counts[s, lvl] -= 2

        nxt = lvl + 1
        if nxt >= levels[s]:
            levels[s] = nxt + 1
        jn = _slot(head, s, nxt, counts[s, nxt], n_slots)
        totals[s, nxt, jn] = merged_total
        variances[s, nxt, jn] = merged_var
        counts[s, nxt] += 1
        if counts[s, nxt] <= max_buckets:
            break
        lvl = nxt


@_inline
def _drop_oldest(s, totals, variances, head, counts, levels, fstate, n_slots):
    last = levels[s] - 1
    n = float(1 << last)
    j = head[s, last]
    u = totals[s, last, j]
    v = variances[s, last, j]
    mu = u / n
    width = fstate[s, F_WIDTH] - n
    total = fstate[s, F_TOTAL] - u
    fstate[s, F_WIDTH] = width
    fstate[s, F_TOTAL] = total
    mu_window = total / width
    fstate[s, F_VARIANCE] = fstate[s, F_VARIANCE] - (
        v + n * width * (mu - mu_window) * (mu - mu_window) / (n + width)
    )
    totals[s, last, j] = 0.0
    variances[s, last, j] = 0.0
    head[s, last] = _slot(head, s, last, 1, n_slots)
    counts[s, last] -= 1
    if counts[s, last] == 0:
        head[s, last] = 0
        levels[s] = last


@_inline
def _cut_scan(n0, n1, u0, u1, n_cuts, width, variance, delta, min_len, gaps, epss):
    """Evaluate every cut (branch-free, so LLVM can vectorise it); first hit or -1."""
    delta_prime = math.log(2.0 * math.log(width) / delta)
    var_w = variance / width
    for j in range(n_cuts):
        delta_mean = (u0[j] / n0[j]) - (u1[j] / n1[j])
        m_recip = 1.0 / (n0[j] - min_len + 1.0) + 1.0 / (n1[j] - min_len + 1.0)
        epss[j] = (
            math.sqrt(2.0 * m_recip * var_w * delta_prime) + (2.0 / 3.0) * delta_prime * m_recip
        )
        gaps[j] = abs(delta_mean)
    for j in range(n_cuts):
        if n1[j] >= min_len and n0[j] >= min_len and gaps[j] > epss[j]:
            return j
    return -1


@_inline
def _check(
    s, totals, variances, head, counts, levels, fstate, delta, min_len, n_slots, scratch, want_score
):
    """Scan every cut of the window, dropping the oldest bucket while a cut shows a change.

    River stops at the first cut (oldest first) with ``|mean(W0) - mean(W1)| > eps_cut``,
    drops the oldest bucket and scans again; evaluating all cuts and taking the first hit
    is the same thing. Returns ``(detected, score)``: ``score`` is the largest
    ``|mean(W0) - mean(W1)| / eps_cut`` over the cuts of the first scan, a report only,
    computed when ``want_score`` or when a cut signals (else NaN).
    """
    n0, n1, u0, u1, gaps, epss = scratch
    detected = False
    first_pass = want_score
    best = 0.0 if want_score else np.nan
    while True:
        a0 = 0.0
        a1 = fstate[s, F_WIDTH]
        b0 = 0.0
        b1 = fstate[s, F_TOTAL]
        n_cuts = 0
        for lvl in range(levels[s] - 1, -1, -1):
            size = float(1 << lvl)
            used = counts[s, lvl]
            # The newest bucket of level 0 is never a cut point (W1 would be empty).
            last = used - 1 if lvl == 0 else used
            for kk in range(last):
                a0 += size
                a1 -= size
                t = totals[s, lvl, _slot(head, s, lvl, kk, n_slots)]
                b0 += t
                b1 -= t
                n0[n_cuts] = a0
                n1[n_cuts] = a1
                u0[n_cuts] = b0
                u1[n_cuts] = b1
                n_cuts += 1
        width = fstate[s, F_WIDTH]
        hit = _cut_scan(
            n0, n1, u0, u1, n_cuts, width, fstate[s, F_VARIANCE], delta, min_len, gaps, epss
        )
        if first_pass or (hit >= 0 and not detected):
            # A detection restarts the window, so the next check may come after this
            # batch: score the first scan of a detecting check too.
            best = 0.0
            for j in range(n_cuts):
                usable = n1[j] >= min_len and n0[j] >= min_len and epss[j] > 0.0
                if usable and gaps[j] > best * epss[j]:
                    best = gaps[j] / epss[j]
            first_pass = False
        if hit < 0:
            break
        detected = True
        if width <= 0.0:
            break
        _drop_oldest(s, totals, variances, head, counts, levels, fstate, n_slots)
    return detected, best


@_inline
def _run_series(
    s,
    XT,
    totals,
    variances,
    head,
    counts,
    levels,
    fstate,
    istate,
    delta,
    clock,
    max_buckets,
    min_len,
    grace,
    det,
    det_score,
    det_width,
    n_det,
    n_missing,
):
    """Feed row ``s`` of ``XT`` (NaN = missing) through series ``s``'s ADWIN.

    Detections (row indices) go to ``det[s, :n_det[s]]``. As in river, the update after a
    detection first resets the series.
    """
    n_events = XT.shape[1]
    n_slots = max_buckets + 1
    n_cap = totals.shape[1] * n_slots
    scratch = (
        np.empty(n_cap),
        np.empty(n_cap),
        np.empty(n_cap),
        np.empty(n_cap),
        np.empty(n_cap),
        np.empty(n_cap),
    )
    n_valid = 0
    for r in range(n_events):
        if not math.isnan(XT[s, r]):
            n_valid += 1
    n_missing[s] = n_events - n_valid
    seen = 0
    nd = 0
    # Checks fall on ticks that are multiples of `clock`: track the next one instead of
    # dividing at every value.
    tick = istate[s, I_TICK]
    due = (tick // clock + 1) * clock
    for r in range(n_events):
        x = XT[s, r]
        if math.isnan(x):
            continue
        seen += 1
        if istate[s, I_PENDING] != 0:
            _clear_series(s, totals, variances, head, counts, levels, fstate, istate)
            tick = 0
            due = clock
        _insert(s, x, totals, variances, head, counts, levels, fstate, max_buckets)
        tick += 1
        istate[s, I_TICK] = tick
        if tick != due:
            continue
        due += clock
        if fstate[s, F_WIDTH] > grace:
            # Only the batch's last check is reported, so only it computes a score.
            last_check = seen + clock > n_valid
            detected, score = _check(
                s,
                totals,
                variances,
                head,
                counts,
                levels,
                fstate,
                delta,
                min_len,
                n_slots,
                scratch,
                last_check,
            )
            if last_check or detected:
                fstate[s, F_SCORE] = score
            if detected:
                istate[s, I_PENDING] = 1
                istate[s, I_DETECTIONS] += 1
                det[s, nd] = r
                det_score[s, nd] = score
                det_width[s, nd] = fstate[s, F_WIDTH]  # what is left after the cut
                nd += 1
    n_det[s] = nd


@_jit
def adwin_update(
    XT,
    totals,
    variances,
    head,
    counts,
    levels,
    fstate,
    istate,
    delta,
    clock,
    max_buckets,
    min_len,
    grace,
    det,
    det_score,
    det_width,
    n_det,
    n_missing,
):
    """Every series in turn (``XT`` is ``n_series x n_events``)."""
    for s in range(XT.shape[0]):
        _run_series(
            s,
            XT,
            totals,
            variances,
            head,
            counts,
            levels,
            fstate,
            istate,
            delta,
            clock,
            max_buckets,
            min_len,
            grace,
            det,
            det_score,
            det_width,
            n_det,
            n_missing,
        )


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def adwin_update_parallel(
    XT,
    totals,
    variances,
    head,
    counts,
    levels,
    fstate,
    istate,
    delta,
    clock,
    max_buckets,
    min_len,
    grace,
    det,
    det_score,
    det_width,
    n_det,
    n_missing,
):
    """The series spread over numba's threads; each series' state is its own."""
    for s in prange(XT.shape[0]):
        _run_series(
            s,
            XT,
            totals,
            variances,
            head,
            counts,
            levels,
            fstate,
            istate,
            delta,
            clock,
            max_buckets,
            min_len,
            grace,
            det,
            det_score,
            det_width,
            n_det,
            n_missing,
        )
