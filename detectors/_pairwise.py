"""numpy's pairwise summation, reproduced in numba so that sums match ``ndarray.sum()``
bit for bit (needed for exact parity with scipy statistics computed with numpy).

numpy sums blocks of up to 128 values with eight interleaved accumulators and splits longer
runs in two halves (the first a multiple of 8) summed recursively. numba cannot cache
recursive functions, so the recursion runs on an explicit stack here.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_BLOCK = 128  # numpy's PW_BLOCKSIZE


@njit(cache=True, nogil=True)
def _block(a, lo, n):
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - (n % 8):
        j = lo + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True, nogil=True)
def pairwise_sum(a, n):
    """``a[:n].sum()`` as numpy computes it for a contiguous float64 array."""
    if n <= _BLOCK:
        return _block(a, 0, n)
    los = np.empty(64, dtype=np.int64)
    ns = np.empty(64, dtype=np.int64)
    stage = np.empty(64, dtype=np.int64)
    vals = np.empty(64)
    los[0], ns[0], stage[0] = 0, n, 0
    sp, vp = 1, 0
    while sp > 0:
        top = sp - 1
        lo, m = los[top], ns[top]
        if m <= _BLOCK:
            vals[vp] = _block(a, lo, m)
            vp += 1
            sp -= 1
            continue
        half = m // 2
        half -= half % 8
        if stage[top] == 0:  # descend into the first half
            stage[top] = 1
            los[sp], ns[sp], stage[sp] = lo, half, 0
            sp += 1
        elif stage[top] == 1:  # then the second half
            stage[top] = 2
            los[sp], ns[sp], stage[sp] = lo + half, m - half, 0
            sp += 1
        else:  # both done: combine as first + second
            vals[vp - 2] = vals[vp - 2] + vals[vp - 1]
            vp -= 1
            sp -= 1
    return vals[0]
