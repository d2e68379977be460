"""Run lengths of a one-sided CUSUM, and the threshold that gives a target false-alarm rate.

A one-sided CUSUM on scores ``x_t`` with allowance ``k`` is ``S_t = max(0, S_{t-1} + x_t - k)``
and alarms (and restarts) when ``S_t > h``. Under no change its alarms form a renewal
process, so the false-alarm *rate* per event is ``1 / ARL``, the reciprocal of the average
run length from a restart to an alarm.

:func:`arl` computes that ARL for any score law given as support points and probabilities,
by a Markov chain on a grid of ``[0, h]`` in the manner of Brook and Evans (1972), with
linear interpolation between grid nodes: the expected time to an alarm solves one linear
system. :func:`threshold` finds ``h`` for a target rate, averaged over an
unknown offset of the scores' mean (the error of a reference estimated from ``n`` values
shifts the standardized scores' mean by about ``N(0, 1/n)``; Gauss-Hermite nodes average
over it), so the rate is the one a user sees across references of that size, not only for
a perfect reference. A threshold above ``MAX_THRESHOLD`` (a CUSUM whose upward steps are
rare and tiny, hopeless at detecting anything) is returned as infinity. An allowance at
or below the largest offset (about 2.9 ``bias_sd``) would drift upward for some
references, and no threshold bounds its average rate.

>>> law = (np.array([-1.0, 1.0]), np.array([0.5, 0.5]))  # a fair +-1 coin
>>> round(arl(law, k=0.5, h=2.0))  # exact: 60 (five +1 in a row, or climbs with set-backs)
60
>>> h = threshold(law, k=0.5, rate=1e-3)
>>> round(arl(law, 0.5, h))
1000
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.polynomial.hermite_e import hermegauss
from scipy.optimize import brentq

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Law = tuple[FloatArray, FloatArray]  # support points (sorted) and their probabilities

CELLS = 100
MAX_THRESHOLD = 2048.0
_NODES, _WEIGHTS = hermegauss(5)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


MAX_SUPPORT = 256


def compact(law: Law, points: int = MAX_SUPPORT) -> Law:
    """A law on at most ``points`` support points: the mass of each of ``points``
    equal-width slices of the range moves to its mean (the law's mean is kept)."""
    values, probs = law
    if len(values) <= points:
        return law
    edges = np.linspace(values[0], values[-1], points + 1)
    slot = np.minimum(np.searchsorted(edges, values, side="right") - 1, points - 1)
    mass = np.bincount(slot, probs, minlength=points)
    moment = np.bincount(slot, probs * values, minlength=points)
    used = mass > 0
    return moment[used] / mass[used], mass[used].astype(np.float64)


def _run_lengths(law: Law, k: float, h: float, offsets: FloatArray, cells: int) -> FloatArray:
    """ARL from a restart for each mean offset, for one CUSUM (see :func:`_batch_runs`)."""
    values, probs = law
    runs = _batch_runs(
        values[None, :], probs[None, :], np.array([k]), np.array([h]), offsets[None, :], cells
    )
    out: FloatArray = runs[0]
    return out


def arl(law: Law, k: float, h: float, offset: float = 0.0, cells: int = CELLS) -> float:
    """Average run length of the CUSUM with allowance ``k`` and threshold ``h`` when the
    scores follow ``law`` shifted by ``offset``."""
    return float(_run_lengths(law, k, h, np.array([offset]), cells)[0])


def threshold(law: Law, k: float, rate: float, bias_sd: float = 0.0, cells: int = CELLS) -> float:
    """The threshold ``h`` whose false-alarm rate per event, averaged over a mean offset
    ``N(0, bias_sd^2)`` of the scores, is ``rate``."""
    law = compact(law)
    if law[0][-1] - k <= 0:
        return np.inf  # a CUSUM whose every step goes down never alarms
    offsets = _NODES * bias_sd if bias_sd > 0 else np.zeros(1)
    weights = _WEIGHTS if bias_sd > 0 else np.ones(1)

    def excess(h: float) -> float:
        rates = 1.0 / np.maximum(_run_lengths(law, k, h, offsets, cells), 1.0)
        return float(np.log(weights @ rates) - np.log(rate))

    # Secant steps on log(rate) - log(target), nearly linear in h, from Siegmund's
    # approximation for a normal law; a bracketing search if they misbehave.
    guess = max(0.5, np.log(max(2 * k * k / rate, 2.0)) / (2 * k) - 1.166)
    a, fa = guess, excess(guess)
    b = a * (1.15 if fa > 0 else 0.85)
    fb = excess(b)
    for _ in range(20):
        if not (np.isfinite(fa) and np.isfinite(fb)) or fa == fb:
            break
        c = min(max(b - fb * (b - a) / (fb - fa), b / 4), b * 4)
        a, fa, b, fb = b, fb, c, excess(c)
        if abs(b - a) <= 1e-4 * b:
            return float(b) if b <= MAX_THRESHOLD else np.inf
    hi = 1.0
    while excess(hi) > 0:
        hi *= 2.0
        if hi > MAX_THRESHOLD:
            return np.inf  # a CUSUM that would need thousands of events is left off
    lo = hi / 2 if hi > 1.0 else 1e-3
    if excess(lo) <= 0:
        return lo  # even a tiny threshold is quiet enough (a law with no upward step)
    return float(brentq(excess, lo, hi, xtol=1e-4, rtol=1e-6))


Problem = tuple[Law, float, float, float]  # law, allowance k, target rate, bias_sd
_CACHE: dict[tuple[bytes, bytes, float, float, float], float] = {}
_CACHE_MAX = 65_536
BATCH_SUPPORT = 64  # support points per law in a batch (mass-preserving, see compact)


def _batch_runs(
    values: FloatArray,
    probs: FloatArray,
    k: FloatArray,
    h: FloatArray,
    offsets: FloatArray,
    cells: int,
) -> FloatArray:
    """ARL from a restart of P CUSUMs at O mean offsets each, ``(P, O)`` (inf: no upward
    step, never alarms): laws ``(P, V)``, allowances and thresholds ``(P,)``, offsets
    ``(P, O)``.

    The statistic is kept on the grid ``0, w, ..., h`` (``w = h / cells``); a step from
    node ``i`` to a point between two nodes splits its probability between them in
    proportion to the distance (linear interpolation of the run-length function), which
    stays accurate for lattice laws (coins, counts) where rounding to cell midpoints
    would not. Steps beyond ``h`` are alarms, steps at or below 0 restart at node 0.
    """
    P, n_off = values.shape[0], offsets.shape[1]
    n = cells + 1
    w = h / cells
    nodes = np.arange(n)[None, :] * w[:, None]
    step = values[:, None, :] - k[:, None, None] + offsets[:, :, None]  # (P, O, V)
    t = nodes[:, None, :, None] + step[:, :, None, :]  # (P, O, n, V)
    top = h[:, None, None, None]
    keep = (t <= top) & (probs[:, None, None, :] > 0)
    pos = np.clip(t, 0.0, top) / w[:, None, None, None]
    j = np.minimum(pos.astype(np.int64), cells - 1)
    frac = pos - j
    block = np.arange(P * n_off).reshape(P, n_off)[:, :, None, None]
    idx = (block * n + np.arange(n)[None, None, :, None]) * n + j
    p = np.broadcast_to(probs[:, None, None, :], t.shape)
    idx, p, frac = idx[keep], p[keep], frac[keep]
    size = P * n_off * n * n
    A = np.bincount(idx, p * (1.0 - frac), minlength=size)
    A += np.bincount(idx + 1, p * frac, minlength=size)
    live = (values.max(axis=1)[:, None] - k[:, None] + offsets > 0).ravel()
    system = np.eye(n)[None] - A.reshape(P * n_off, n, n)
    system[~live] = np.eye(n)  # solved as a placeholder, reported as infinite below
    runs = np.linalg.solve(system, np.ones((P * n_off, n, 1)))[:, 0, 0]
    out: FloatArray = np.where(live, runs, np.inf).reshape(P, n_off)
    return out


def _batch_excess(
    values: FloatArray,
    probs: FloatArray,
    k: FloatArray,
    h: FloatArray,
    offsets: FloatArray,
    weights: FloatArray,
    log_rate: FloatArray,
    cells: int,
) -> FloatArray:
    """``log(averaged false-alarm rate) - log(target)`` of P CUSUMs at once."""
    runs = _batch_runs(values, probs, k, h, offsets, cells)
    rates = np.where(np.isfinite(runs), 1.0 / np.maximum(runs, 1.0), 0.0)
    with np.errstate(divide="ignore"):
        out: FloatArray = np.log((rates * weights).sum(axis=1)) - log_rate
    return out


def thresholds(problems: list[Problem], cells: int = CELLS) -> FloatArray:
    """:func:`threshold` for many CUSUMs at once (secant steps in lockstep, one batched
    linear solve per step): a bank's dozens of CUSUMs cost about what one did."""
    P = len(problems)
    out = np.full(P, np.nan)
    laws = [compact(law, BATCH_SUPPORT) for law, _, _, _ in problems]
    k = np.array([p[1] for p in problems], dtype=np.float64)
    rate = np.array([p[2] for p in problems], dtype=np.float64)
    bias = np.array([p[3] for p in problems], dtype=np.float64)
    top = np.array([law[0][-1] for law in laws])
    out[top - k <= 0] = np.inf  # every step goes down: never alarms
    todo = np.flatnonzero(np.isnan(out))
    # Laws of similar support sizes go together (a two-point law padded to 64 would cost
    # what a 64-point one does).
    sizes = np.array([len(laws[i][0]) for i in todo])
    for group in (todo[sizes <= 2], todo[(sizes > 2) & (sizes <= 16)], todo[sizes > 16]):
        if group.size:
            out[group] = _lockstep(
                [laws[i] for i in group], k[group], rate[group], bias[group], cells
            )
    return out


def _lockstep(
    laws: list[Law], k: FloatArray, rate: FloatArray, bias: FloatArray, cells: int
) -> FloatArray:
    """Secant steps for every problem at once; the few that misbehave are bracketed alone."""
    P = len(laws)
    V = max(len(law[0]) for law in laws)
    values = np.zeros((P, V))
    probs = np.zeros((P, V))
    for row, (v, p) in enumerate(laws):
        values[row, : len(v)], probs[row, : len(v)] = v, p
        values[row, len(v) :] = v[-1]
    offsets = np.where(bias[:, None] > 0, _NODES[None, :] * bias[:, None], 0.0)
    weights = np.where(bias[:, None] > 0, _WEIGHTS[None, :], 1.0 / len(_NODES))
    log_rate = np.log(rate)

    def excess(h: FloatArray, rows: IntArray) -> FloatArray:
        return _batch_excess(
            values[rows], probs[rows], k[rows], h, offsets[rows], weights[rows], log_rate[rows],
            cells,
        )  # fmt: skip

    guess = np.maximum(0.5, np.log(np.maximum(2 * k * k / rate, 2.0)) / (2 * k) - 1.166)
    every = np.arange(P)
    a, fa = guess, excess(guess, every)
    b = a * np.where(fa > 0, 1.15, 0.85)
    fb = excess(b, every)
    done = np.full(P, np.nan)
    active = np.isfinite(fa) & np.isfinite(fb) & (fa != fb)
    for _ in range(20):
        r = np.flatnonzero(active)
        if not r.size:
            break
        c = b[r] - fb[r] * (b[r] - a[r]) / (fb[r] - fa[r])
        c = np.minimum(np.maximum(c, b[r] / 4), b[r] * 4)
        huge = c > 2 * MAX_THRESHOLD  # heading for "never": bracketed alone below
        active[r[huge]] = False
        r, c = r[~huge], c[~huge]
        a[r], fa[r] = b[r], fb[r]
        b[r], fb[r] = c, excess(c, r)
        close = np.abs(b[r] - a[r]) <= 1e-3 * b[r]
        done[r[close]] = b[r[close]]
        active[r[close]] = False
        active[r[~(np.isfinite(fa[r]) & np.isfinite(fb[r]) & (fa[r] != fb[r]))]] = False
    left = np.flatnonzero(np.isnan(done))
    if left.size:  # quiet enough only beyond MAX_THRESHOLD: left off, as threshold() does
        never = excess(np.full(left.size, MAX_THRESHOLD), left) > 0
        done[left[never]] = np.inf
    for i in np.flatnonzero(np.isnan(done)).tolist():
        done[i] = threshold(laws[i], float(k[i]), float(rate[i]), float(bias[i]), cells)
    return np.where(done > MAX_THRESHOLD, np.inf, done)


def cached_thresholds(problems: list[Problem]) -> FloatArray:
    """:func:`thresholds` memoised per problem on the law's bytes (series with the same
    reference shape, such as every continuous series with as many reference values, share
    their thresholds), computing the ones not known yet in one batch."""
    keys = [
        (
            np.ascontiguousarray(law[0]).tobytes(),
            np.ascontiguousarray(law[1]).tobytes(),
            float(k),
            float(rate),
            float(bias),
        )
        for law, k, rate, bias in problems
    ]
    missing = list(dict.fromkeys(key for key in keys if key not in _CACHE))
    if missing:
        index = {key: i for i, key in enumerate(keys)}
        found = thresholds([problems[index[key]] for key in missing])
        if len(_CACHE) + len(missing) > _CACHE_MAX:
            _CACHE.clear()
        _CACHE.update(zip(missing, found.tolist(), strict=True))
    return np.array([_CACHE[key] for key in keys])
