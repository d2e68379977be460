"""Two-sided two-sample KS p-values as ``scipy.stats.ks_2samp`` computes them, without
calling scipy per check.

For sample sizes ``(n1, n2)`` scipy picks a regime once:

* **exact** (``method="exact"``, or ``"auto"`` with ``max(n1, n2) <= 10000``): D is snapped
  to ``h / lcm(n1, n2)`` with ``h = round(D * lcm)``, and the p-value depends on ``h``
  alone. p-values are memoised per ``h`` and the decision ``p <= alpha`` is ``h >= h_crit``,
  with ``h_crit`` found once by bisection (p is non-increasing in ``h``).
* **asymp**: ``p = kstwo.sf(D, round(n1 n2 / (n1 + n2)))``. The decision compares D with a
  bracket ``[d_lo, d_hi]`` around the critical value found once; only a D inside that
  bracket (width 1e-12) needs the exact p-value.

The exact path uses scipy's own routine for ``p(h)`` (pinned scipy; parity is tested), and,
like scipy, falls back to the asymptotic formula where the exact computation fails.

Thread safety: p-values may be computed from any thread (the worker decides, the HTTP
status reads last p-values): the memo dicts only ever gain entries, and floating-point
warnings are silenced with ``np.errstate`` (thread-local), never by changing the
process-wide warning filters.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy.stats import distributions

try:  # scipy's exact two-sample routine; present in every scipy since 1.5
    from scipy.stats._stats_py import _attempt_exact_2kssamp
except ImportError as exc:  # pragma: no cover - depends on the installed scipy
    raise ImportError(
        "driftline's KS detector needs scipy.stats._stats_py._attempt_exact_2kssamp; "
        "install the scipy version pinned in driftline's dev extras"
    ) from exc

MAX_AUTO_N = 10000  # scipy's 'auto' threshold between exact and asymptotic


class KSNull:
    """The null distribution of D for one pair of sample sizes and one ``method``."""

    def __init__(self, n1: int, n2: int, method: str, alpha: float) -> None:
        self.n1, self.n2, self.alpha = n1, n2, alpha
        g = math.gcd(n1, n2)
        self._g = g
        self.lcm = (n1 // g) * n2
        m, n = sorted([float(n1), float(n2)], reverse=True)
        self._en = float(np.round(m * n / (m + n)))
        mode = method
        if mode == "auto":
            mode = "exact" if max(n1, n2) <= MAX_AUTO_N else "asymp"
        elif mode == "exact" and n1 // g >= np.iinfo(np.int32).max / (n2 // g):
            mode = "asymp"
        self.mode = mode
        self._p_by_h: dict[int, float] = {}
        self._p_by_d: dict[float, float] = {}
        if mode == "exact":
            self.h_crit = self._find_h_crit()
        else:
            self.d_lo, self.d_hi = self._find_d_bracket()

    # -- exact regime -------------------------------------------------------------------
    def p_of_h(self, h: int) -> float:
        p = self._p_by_h.get(h)
        if p is None:
            d = h * 1.0 / self.lcm
            with np.errstate(all="ignore"):  # thread-local, unlike warnings.catch_warnings
                ok, d, prob = _attempt_exact_2kssamp(self.n1, self.n2, self._g, d, "two-sided")
                if not ok:
                    prob = distributions.kstwo.sf(d, self._en)
            p = float(np.clip(prob, 0, 1))
            self._p_by_h[h] = p
        return p

    def _find_h_crit(self) -> int:
        """Smallest h with p(h) <= alpha (lcm + 1 when none)."""
        lo, hi = 0, self.lcm + 1  # p(lo) > alpha (p(0) = 1), treat p(lcm + 1) as 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.p_of_h(mid) <= self.alpha:
                hi = mid
            else:
                lo = mid
        return hi

    # -- asymptotic regime --------------------------------------------------------------
    def p_of_d(self, d: float) -> float:
        p = self._p_by_d.get(d)
        if p is None:
            with np.errstate(all="ignore"):
                p = float(np.clip(distributions.kstwo.sf(d, self._en), 0, 1))
            if len(self._p_by_d) > 100_000:
                self._p_by_d.clear()
            self._p_by_d[d] = p
        return p

    def _find_d_bracket(self) -> tuple[float, float]:
        lo, hi = 0.0, 1.0
        if self.p_of_d(1.0) > self.alpha:
            return 1.0, 2.0  # nothing in [0, 1] rejects
        while hi - lo > 1e-12:
            mid = 0.5 * (lo + hi)
            if self.p_of_d(mid) <= self.alpha:
                hi = mid
            else:
                lo = mid
        return lo, hi

    # -- vectorised over checks ---------------------------------------------------------
    def statistic(self, d_raw: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The D scipy reports: snapped to ``h / lcm`` in the exact regime."""
        if self.mode == "exact":
            return self._h(d_raw) * 1.0 / self.lcm
        return d_raw

    def _h(self, d_raw: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        return np.round(d_raw * self.lcm).astype(np.int64)

    def reject(self, d_raw: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """``p <= alpha`` for every raw D, without a scipy call in the usual case."""
        if self.mode == "exact":
            return self._h(d_raw) >= self.h_crit
        out = d_raw >= self.d_hi
        unsure = np.flatnonzero((d_raw > self.d_lo) & ~out)
        for j in unsure:
            out[j] = self.p_of_d(float(d_raw[j])) <= self.alpha
        return out

    def p_value(self, d_raw: float) -> float:
        if self.mode == "exact":
            return self.p_of_h(int(np.round(d_raw * self.lcm)))
        return self.p_of_d(d_raw)

    def critical_statistic(self) -> float:
        """Smallest D that rejects (what ``threshold`` reports)."""
        if self.mode == "exact":
            return self.h_crit * 1.0 / self.lcm
        return self.d_hi


@lru_cache(maxsize=512)
def ks_null(n1: int, n2: int, method: str, alpha: float) -> KSNull:
    """Shared, memoised null distributions (one per sizes, method and alpha)."""
    return KSNull(n1, n2, method, alpha)
