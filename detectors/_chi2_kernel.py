"""Compiled chi-squared homogeneity statistic over count snapshots (numba)."""

from __future__ import annotations

import numpy as np
from numba import njit

from ._pairwise import pairwise_sum


@njit(cache=True, nogil=True)
def chi2_homogeneity(snaps, n_checks, ref_counts, stats, dofs):
    """Pearson's chi-squared statistic of the table ``[reference; window]`` for every
    snapshot ``snaps[s, t]`` (``t < n_checks[s]``), computed in the order
    ``scipy.stats.chi2_contingency(table, correction=False)`` uses after dropping the
    categories empty in both rows (which scipy would refuse)."""
    n_series, _, n_buckets = snaps.shape
    obs = np.empty((2, n_buckets))
    terms = np.empty(2 * n_buckets)
    for s in range(n_series):
        for t in range(n_checks[s]):
            k = 0
            for b in range(n_buckets):
                if ref_counts[s, b] + snaps[s, t, b] > 0:
                    obs[0, k] = ref_counts[s, b]
                    obs[1, k] = snaps[s, t, b]
                    k += 1
            dofs[s, t] = k - 1
            if k <= 1:
                stats[s, t] = 0.0
                continue
            row0 = 0.0
            row1 = 0.0
            for j in range(k):
                row0 += obs[0, j]
                row1 += obs[1, j]
            total = row0 + row1  # integer-valued: exact whatever the order
            for j in range(k):
                col = obs[0, j] + obs[1, j]
                e0 = row0 * col / total
                e1 = row1 * col / total
                terms[j] = (obs[0, j] - e0) ** 2 / e0
                terms[k + j] = (obs[1, j] - e1) ** 2 / e1
            stats[s, t] = pairwise_sum(terms, 2 * k)
