"""Sequential change detection calibrated to a false-alarm rate: banks of CUSUMs on scores
taken against a reference (ranks for numbers, indicators for categories)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

from ._arl import cached_thresholds
from ._cusum_kernel import cusum_update, rank_buckets
from .base import (
    DriftResult,
    FloatArray,
    IntArray,
    State,
    as_batch,
    blank,
    check_state,
    series_indices,
    state_header,
    values_where,
)
from .categorical import as_codes, reference_counts

BIAS_GUARD = 3.0  # allowances must exceed this many standard errors of the reference
MAX_SUPPORT = 4096  # support points kept per numeric series (ranks to 1/4096 beyond that)
DRIFTING_SPAN = 1000  # a series is "drifting" while its last alarm is this recent (values)


def _check_arl(arl: object) -> float:
    if isinstance(arl, bool) or not isinstance(arl, int | float | np.number) or not arl > 1:
        raise ValueError(f"arl must be a number of events > 1, got {arl!r}")
    return float(arl)


def _check_allowances(name: str, values: object) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)  # type: ignore[attr-defined]
    if not out or any(not v > 0 for v in out):
        raise ValueError(f"{name} must be one or more positive numbers, got {values!r}")
    return out


class _Bank:
    """The CUSUM recursion over per-series score tables, shared by both detectors.

    ``table[s, ch, b]`` is channel ``ch``'s standardized score of bucket ``b`` of series
    ``s``; ``laws[s][ch]`` the law of that score under no change (from the reference).
    Every (channel, allowance, side) is one CUSUM; each gets the same share of the series'
    false-alarm rate ``1 / arl`` and its threshold from :func:`detectors._arl.threshold`.
    """

    arl: float
    _allow: tuple[tuple[float, ...], ...]  # allowances per channel kind
    _saved_h: FloatArray | None = None  # thresholds restored with a state (same arl)

    def _calibrate(
        self,
        table: FloatArray,
        laws: list[list[tuple[FloatArray, FloatArray] | None]],
        kinds: list[int],
        n_ref: IntArray,
    ) -> None:
        channel, sign, allowance = [], [], []
        for ch, kind in enumerate(kinds):
            for k in self._allow[kind]:
                for sg in (1.0, -1.0):
                    channel.append(ch)
                    sign.append(sg)
                    allowance.append(k)
        self._table = table
        self._channel = np.array(channel, dtype=np.int64)
        self._sign = np.array(sign)
        self._allowance = np.array(allowance)
        self._n_ref = n_ref
        n_series, n_cusum = table.shape[0], len(channel)
        self._h = np.full((n_series, n_cusum), np.inf)
        problems, where = [], []
        for s in range(n_series):
            bias = 1.0 / np.sqrt(n_ref[s])
            on = [c for c in range(n_cusum) if laws[s][channel[c]] is not None]
            # An allowance within the reference's own error cannot be calibrated: with
            # some references the scores' mean exceeds it and that CUSUM drifts up.
            on = [c for c in on if allowance[c] > BIAS_GUARD * bias]
            rate = 1.0 / (self.arl * max(1, len(on)))
            for c in on:
                law = laws[s][channel[c]]
                assert law is not None
                values, probs = law
                if sign[c] < 0:
                    values, probs = -values[::-1], probs[::-1]
                problems.append(((values, probs), allowance[c], rate, bias))
                where.append((s, c))
        self._h = np.full((n_series, n_cusum), np.inf)
        saved, self._saved_h = self._saved_h, None
        if saved is not None and saved.shape == self._h.shape:
            self._h[...] = saved  # computed when the state was exported, for this arl
        elif problems:
            rows, cols = zip(*where, strict=True)
            self._h[list(rows), list(cols)] = cached_thresholds(problems)
        self._S = np.zeros((n_series, n_cusum))
        self._zero_at = np.zeros((n_series, n_cusum), dtype=np.int64)
        self._n_seen = np.zeros(n_series, dtype=np.int64)
        self._alarm_at = np.full(n_series, -1, dtype=np.int64)  # values seen at the last alarm

    @property
    def n_series(self) -> int:
        return int(self._table.shape[0])

    @property
    def thresholds(self) -> FloatArray:
        """Threshold of every CUSUM, ``(n_series, n_cusum)`` (inf: never alarms)."""
        return self._h.copy()

    def _run(self, buckets: IntArray) -> DriftResult:
        n_series, n_events = buckets.shape
        rows = np.zeros((n_series, n_events), dtype=np.int64)
        which = np.zeros((n_series, n_events), dtype=np.int64)
        ratio = np.zeros((n_series, n_events))
        run = np.zeros((n_series, n_events), dtype=np.int64)
        n_alarms = np.zeros(n_series, dtype=np.int64)
        n_missing = np.zeros(n_series, dtype=np.int64)
        cusum_update(
            buckets, self._table, self._channel, self._sign, self._allowance, self._h,
            self._S, self._zero_at, self._n_seen, rows, which, ratio, run, n_alarms, n_missing,
        )  # fmt: skip
        hit = np.arange(n_events) < n_alarms[:, None]
        alarmed = np.flatnonzero(n_alarms)
        last_row = rows[alarmed, n_alarms[alarmed] - 1]
        # The count of values at the last alarm: the values after its row are still ahead.
        after = np.array(
            [
                np.count_nonzero(buckets[s, r + 1 :] >= 0)
                for s, r in zip(alarmed, last_row, strict=True)
            ],
            dtype=np.int64,
        )
        self._alarm_at[alarmed] = self._n_seen[alarmed] - after
        score = (self._S / self._h).max(axis=1, initial=0.0)
        detections = values_where(rows, hit)
        return DriftResult(
            detections=detections,
            score=score,
            p_value_source=np.full(n_series, np.nan),
            threshold=np.ones(n_series),
            window_size=self._n_seen
            - self._zero_at.min(axis=1, initial=self._n_seen.max(initial=0)),
            reference_size=self._n_ref.copy(),
            n_missing=n_missing,
            drifting=(self._alarm_at >= 0) & (self._n_seen - self._alarm_at < DRIFTING_SPAN),
            extra={"cusum": values_where(which, hit)},  # type: ignore[dict-item]
            detection_scores=values_where(ratio, hit),
            detection_windows=values_where(run, hit),
        )

    def reset(self, series: int | Sequence[int] | None = None) -> None:
        """Restart the CUSUMs of the given series (all when None); the reference stays."""
        idx = series_indices(series, self.n_series)
        self._S[idx] = 0.0
        self._zero_at[idx] = self._n_seen[idx, None]
        self._alarm_at[idx] = -1

    def _export_run(self) -> State:
        return {
            "thresholds": self._h.copy(),
            "thresholds_for": self.arl,
            "S": self._S.copy(),
            "zero_at": self._zero_at.copy(),
            "n_seen": self._n_seen.copy(),
            "alarm_at": self._alarm_at.copy(),
        }

    def _restore_thresholds(self, state: State) -> None:
        """Use the exported thresholds when they were computed for this ``arl`` (a tuned
        ``arl`` recomputes them): a restore then costs no calibration."""
        if "thresholds" in state and state.get("thresholds_for") == self.arl:
            self._saved_h = np.array(state["thresholds"], dtype=np.float64)

    def _load_run(self, state: State) -> None:
        self._S[...] = state["S"]
        self._zero_at[...] = state["zero_at"]
        self._n_seen[...] = state["n_seen"]
        self._alarm_at[...] = state["alarm_at"]


def _law(scores: FloatArray, mass: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The law of ``scores`` weighted by ``mass`` (sorted support, equal points merged)."""
    used = mass > 0
    values, inverse = np.unique(np.round(scores[used], 12), return_inverse=True)
    probs = np.bincount(inverse, mass[used], minlength=len(values))
    return values, probs / probs.sum()


def _predictive_mass(
    col: FloatArray, uniq: FloatArray, support: FloatArray, n_support: IntArray
) -> FloatArray:
    """The law of a *new* value's bucket under no change, as the next of ``n + 1``
    exchangeable values: a repeated reference value (an atom of ``c`` copies) is hit with
    probability about ``c / (n + 1)``; each gap next to a value seen once, and the two gaps
    beyond the reference's range, with ``1 / (n + 1)`` (for continuous data: the new value's
    rank is uniform on ``0..n``, so it can be more extreme than any reference value). With
    support points on a quantile grid (large references), the reference's own buckets."""
    n, m = col.size, uniq.size
    if m < np.unique(col).size:  # a quantile grid: values fall between its points
        buckets = np.empty((1, n), dtype=np.int64)
        rank_buckets(col[None, :], support, n_support, buckets)
        return np.bincount(buckets[0], minlength=2 * m + 1).astype(np.float64) / n
    count = np.searchsorted(col, uniq, side="right") - np.searchsorted(col, uniq, side="left")
    mass = np.zeros(2 * m + 1)
    mass[1::2] = np.where(count > 1, count, 0)
    single = count == 1
    mass[0:-1:2] += single  # the gap below each value seen once ...
    mass[2::2] = np.maximum(mass[2::2], single)  # ... and above it (each gap once)
    mass[0] = mass[-1] = 1.0
    out: FloatArray = mass / mass.sum()
    return out


class CUSUM(_Bank):
    r"""Distribution-free CUSUMs on reference ranks, calibrated to a false-alarm rate.

    Each value becomes its normal score against the series' reference,
    ``z = Phi^-1(u)`` with ``u`` its mid-rank among the reference values over ``n + 1``;
    under no change ``z`` is standard normal whatever the feature's distribution (heavy
    tails, integers and ties included), and one absurd value moves it no further than the
    reference's extreme rank (about 3.5 for ``n = 2000``). Two standardized scores feed
    two-sided CUSUMs: *location* ``z`` (a shift of the median) with the allowances
    ``allowances``, *scale* ``z^2`` (a change of spread) with ``scale_allowances``. An
    allowance ``k`` suits a shift of about ``2 k`` standard deviations; several run side by
    side so that small and large shifts are both caught near the fastest possible delay.

    **Calibration**: the whole bank of one series raises on average one false alarm per
    ``arl`` events. Each CUSUM gets an equal share of that rate, and its threshold is the
    one whose rate, computed from the score's exact law under no change (the reference's
    own scores) and averaged over the error of a reference of ``n`` values, meets it (see
    :mod:`detectors._arl`). A larger reference gives lower thresholds and faster
    detection.

    After an alarm every CUSUM of the series restarts at 0. Result fields: ``score`` is the
    largest ``S / h`` (an alarm when it exceeds 1, so ``threshold`` is 1.0);
    ``detection_windows`` are the events since the alarming CUSUM last stood at 0 (where
    the change most likely began); ``extra["cusum"]`` the alarming CUSUM's index per
    detection (see ``describe``); ``window_size`` the values since the oldest CUSUM last
    stood at 0; ``drifting`` whether the series alarmed within its last 1,000 values;
    ``p_value`` is NaN.

    State: ``8 * (2 * n_support + 2 * n_cusum + 1)`` bytes per series besides the
    reference (``n_support`` distinct reference values, at most 4,096).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> cusum = CUSUM(rng.lognormal(0, 1, 2000), arl=100_000)
    >>> cusum.update(rng.lognormal(0, 1, 5000)).detections[0].tolist()  # no change
    []
    >>> r = cusum.update(rng.lognormal(0.5, 1, 500))  # log-values up by half an sd
    >>> int(r.detections[0][0]), cusum.describe(int(r.extra["cusum"][0][0]))
    (20, 'location up, allowance 0.5')
    """

    kind = "cusum"

    def __init__(
        self,
        reference: npt.ArrayLike,
        arl: float = 1_000_000.0,
        allowances: Sequence[float] = (0.125, 0.25, 0.5, 1.0),
        scale_allowances: Sequence[float] = (0.25, 1.0),
    ) -> None:
        self._configure(arl, allowances, scale_allowances)
        ref = as_batch(reference, name="reference")
        empty = np.flatnonzero(np.isnan(ref).all(axis=0))
        if empty.size:
            raise ValueError(f"reference has no values for series {empty.tolist()}")
        self._reference = ref
        self._setup(ref)

    def _configure(
        self, arl: float, allowances: Sequence[float], scale_allowances: Sequence[float]
    ) -> None:
        self.arl = _check_arl(arl)
        self.allowances = _check_allowances("allowances", allowances)
        self.scale_allowances = _check_allowances("scale_allowances", scale_allowances)
        self._allow = (self.allowances, self.scale_allowances)

    def _setup(self, ref: FloatArray) -> None:
        n_series = ref.shape[1]
        supports, n_ref = [], np.zeros(n_series, dtype=np.int64)
        for s in range(n_series):
            col = np.sort(ref[:, s][~np.isnan(ref[:, s])])
            n_ref[s] = col.size
            uniq = np.unique(col)
            if uniq.size > MAX_SUPPORT:
                grid = np.linspace(0.0, 1.0, MAX_SUPPORT)
                uniq = np.unique(np.quantile(col, grid, method="inverted_cdf"))
            supports.append((col, uniq))
        width = max(u.size for _, u in supports)
        self._support = np.full((n_series, width), np.inf)
        self._n_support = np.array([u.size for _, u in supports], dtype=np.int64)
        table = np.zeros((n_series, 2, 2 * width + 1))
        laws: list[list[tuple[FloatArray, FloatArray] | None]] = []
        for s, (col, uniq) in enumerate(supports):
            m, n = uniq.size, col.size
            self._support[s, :m] = uniq
            less = np.searchsorted(col, uniq, side="left").astype(np.float64)
            count = np.searchsorted(col, uniq, side="right") - less
            below = np.r_[0.0, less + count]  # values at or below the previous support point
            above = np.r_[less, float(n)]  # values below the next one
            u = np.empty(2 * m + 1)
            u[0::2] = ((below + above) / 2 + 0.5) / (n + 1)
            u[1::2] = (less + count / 2 + 0.5) / (n + 1)
            z = ndtri(u)
            mass = _predictive_mass(col, uniq, self._support[s : s + 1], self._n_support[s : s + 1])
            row: list[tuple[FloatArray, FloatArray] | None] = []
            for ch, score in enumerate((z, z * z)):
                mean = float(mass @ score)
                sd = float(np.sqrt(mass @ (score - mean) ** 2))
                if sd < 1e-9:  # a constant reference: no rank can move
                    row.append(None)
                    continue
                table[s, ch, : 2 * m + 1] = (score - mean) / sd
                row.append(_law(table[s, ch, : 2 * m + 1], mass))
            laws.append(row)
        self._calibrate(table, laws, [0, 1], n_ref)

    @property
    def params(self) -> dict[str, Any]:
        return {
            "arl": self.arl,
            "allowances": list(self.allowances),
            "scale_allowances": list(self.scale_allowances),
        }

    def describe(self, cusum: int) -> str:
        """What CUSUM number ``cusum`` watches, in words."""
        ch = int(self._channel[cusum])
        up = self._sign[cusum] > 0
        what = ("location up", "location down") if ch == 0 else ("spread up", "spread down")
        return f"{what[0] if up else what[1]}, allowance {self._allowance[cusum]:g}"

    def update(self, X: npt.ArrayLike) -> DriftResult:
        """Feed a batch ``(n_events, n_series)`` (or 1-D for one series); NaN is skipped."""
        batch = as_batch(X, self.n_series)
        XT = np.ascontiguousarray(batch.T)
        buckets = np.empty(XT.shape, dtype=np.int64)
        rank_buckets(XT, self._support, self._n_support, buckets)
        return self._run(buckets)

    def export_state(self, *, include_reference: bool = True) -> State:
        """With ``include_reference=False`` the reference is left out: ``from_state(state,
        reference=...)`` rebuilds the score tables and thresholds from it."""
        state = state_header(self.kind, self.params)
        if include_reference:
            state["reference"] = self._reference.copy()
        state.update(self._export_run())
        return state

    @classmethod
    def from_state(cls, state: State, reference: npt.ArrayLike | None = None) -> Self:
        params = check_state(state, cls.kind)
        ref = state.get("reference", reference)
        if ref is None:
            raise ValueError("this CUSUM state was exported without its reference: pass reference=")
        det = cls.__new__(cls)
        det._configure(**params)
        det._restore_thresholds(state)
        det._reference = as_batch(ref, name="reference")
        det._setup(det._reference)
        det._load_run(state)
        return det

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"CUSUM(<reference: {self.n_series} series>, {args})"


class CategoricalCUSUM(_Bank):
    r"""CUSUMs on category shares, calibrated to a false-alarm rate like :class:`CUSUM`.

    For each of the (at most ``max_channels``) most frequent categories of the reference
    with a share ``p`` of at least ``min_share``, every value scores
    ``(1[value is that category] - p) / sqrt(p (1 - p))``, a standardized indicator whose
    law under no change is a two-point law, calibrated exactly. Two-sided CUSUMs with the
    ``allowances`` run on each: a category becoming more or less frequent is caught about as
    fast as the information in the stream allows. Values outside the vocabulary count as
    none of the watched categories (the chi-squared test of :class:`CategoricalDrift`
    reports unseen values themselves). Codes are as for :class:`CategoricalDrift`.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> cat = CategoricalCUSUM(rng.choice(3, 3000, p=[0.5, 0.3, 0.2]), arl=100_000)
    >>> cat.update(rng.choice(3, 5000, p=[0.5, 0.3, 0.2])).detections[0].tolist()
    []
    >>> r = cat.update(rng.choice(3, 2000, p=[0.4, 0.3, 0.3]))
    >>> int(r.detections[0][0]), cat.describe(int(r.extra["cusum"][0][0]))
    (229, "category 2's share up, allowance 0.25")
    """

    kind = "categorical_cusum"

    def __init__(
        self,
        reference_codes: npt.ArrayLike,
        n_categories: int | None = None,
        arl: float = 1_000_000.0,
        allowances: Sequence[float] = (0.125, 0.25, 0.5),
        max_channels: int = 6,
        min_share: float = 0.01,
    ) -> None:
        self.arl = _check_arl(arl)
        self.allowances = _check_allowances("allowances", allowances)
        self._allow = (self.allowances,)
        if isinstance(max_channels, bool) or not isinstance(max_channels, int) or max_channels < 1:
            raise ValueError(f"max_channels must be an integer >= 1, got {max_channels!r}")
        if not 0.0 < float(min_share) < 0.5:
            raise ValueError(f"min_share must be in (0, 0.5), got {min_share!r}")
        self.max_channels, self.min_share = max_channels, float(min_share)
        self.n_categories, counts = reference_counts(reference_codes, n_categories)
        self._setup(counts)

    def _setup(self, counts: IntArray) -> None:
        self._ref_counts = counts
        n_series, width = counts.shape
        n_ref = counts.sum(axis=1).astype(np.int64)
        table = np.zeros((n_series, self.max_channels, width))
        laws: list[list[tuple[FloatArray, FloatArray] | None]] = []
        self._watched = np.full((n_series, self.max_channels), -1, dtype=np.int64)
        for s in range(n_series):
            share = counts[s, :-1] / n_ref[s]
            order = [
                int(c) for c in np.argsort(-share, kind="stable") if share[c] >= self.min_share
            ]
            row: list[tuple[FloatArray, FloatArray] | None] = []
            for ch in range(self.max_channels):
                if ch >= len(order) or share[order[ch]] >= 1.0:
                    row.append(None)
                    continue
                c = order[ch]
                # Shares rounded to 1e-3 (a change of calibration far below the rate's own
                # sampling error) let series and restarts share calibrations.
                p = min(max(round(float(share[c]), 3), 1e-3), 1 - 1e-3)
                sd = np.sqrt(p * (1.0 - p))
                table[s, ch, :] = -p / sd
                table[s, ch, c] = (1.0 - p) / sd
                self._watched[s, ch] = c
                row.append((np.array([-p / sd, (1.0 - p) / sd]), np.array([1.0 - p, p])))
            laws.append(row)
        self._calibrate(table, laws, [0] * self.max_channels, n_ref)

    @property
    def params(self) -> dict[str, Any]:
        return {
            "n_categories": self.n_categories,
            "arl": self.arl,
            "allowances": list(self.allowances),
            "max_channels": self.max_channels,
            "min_share": self.min_share,
        }

    def describe(self, cusum: int) -> str:
        """What CUSUM number ``cusum`` watches, in words."""
        cat = int(self._watched[0, self._channel[cusum]])
        way = "up" if self._sign[cusum] > 0 else "down"
        return f"category {cat}'s share {way}, allowance {self._allowance[cusum]:g}"

    def update(self, codes: npt.ArrayLike) -> DriftResult:
        """Feed a batch of codes ``(n_events, n_series)`` (or 1-D); NaN is skipped."""
        batch = as_codes(codes, self.n_categories)
        if batch.shape[1] != self.n_series:
            raise ValueError(f"codes has {batch.shape[1]} series, expected {self.n_series}")
        return self._run(np.ascontiguousarray(batch.T))

    def export_state(self, *, include_reference: bool = True) -> State:
        """The reference's counts are small and always included."""
        state = state_header(self.kind, self.params)
        state["ref_counts"] = self._ref_counts.copy()
        state.update(self._export_run())
        return state

    @classmethod
    def from_state(cls, state: State, reference: npt.ArrayLike | None = None) -> Self:
        params = check_state(state, cls.kind)
        det = blank(cls, params)
        det._allow = (tuple(params["allowances"]),)
        det._restore_thresholds(state)
        det._setup(np.array(state["ref_counts"], dtype=np.int64))
        det._load_run(state)
        return det

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"CategoricalCUSUM(<reference: {self.n_series} series>, {args})"
