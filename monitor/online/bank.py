"""A model's bank of detectors over every series, built from its plan and reference.

A :class:`DetectorBank` feeds each batch to one detector instance per (kind, parameters),
shared by the series it watches, and reports the detections, each with its detecting
check's evidence, and a :class:`BankView` of the batch (the events' times and the
distribution of the values up to any of its events) for the alert policy. Series whose
reference has too few usable values are left out (``skipped``, with the reason).
:class:`~monitor.online.model_monitor.ModelMonitor` owns the bank and its reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors import Detector, DriftResult
from monitor.alerting.alerts import Evidence
from monitor.config.kinds import registry
from monitor.config.plan import ModelPlan
from monitor.errors import CheckpointError
from monitor.ingest.decode import ModelBatch, ModelSchema
from monitor.online.reference import Reference, unmonitorable

log = logging.getLogger("driftline.pipeline")

RECENT = 1000  # values per series behind an alert's "current" summary


@dataclass(frozen=True)
class Detection:
    """Drift signalled on one series by one detector at one event of the model, with the
    detecting check's statistic, threshold, window and reference sizes; its p-value is
    computed when first asked for (:meth:`evidence`)."""

    event: int
    feature: str
    detector: str
    ts: float
    score: float
    threshold: float
    window_size: int
    reference_size: int
    p_value_of: Callable[[], float] = field(repr=False, compare=False, default=lambda: np.nan)

    def evidence(self) -> Evidence:
        p = float(self.p_value_of())
        return Evidence(
            self.score,
            self.threshold,
            None if p != p else p,
            self.window_size,
            self.reference_size,
        )


def fences(reference: np.ndarray, fence_iqr: float | None) -> tuple[float, float]:
    """The outlier fences of one numeric series: its reference's 1st and 99th percentiles
    widened by ``fence_iqr`` interquartile ranges (the 1-99 range, or the median's size,
    when the IQR is 0). No fences (infinite) when ``fence_iqr`` is None.

    >>> fences(np.arange(101.0), 10.0)
    (-499.0, 599.0)
    """
    ok = reference[~np.isnan(reference)]
    if fence_iqr is None or ok.size == 0:
        return -np.inf, np.inf
    p1, p25, p50, p75, p99 = np.percentile(ok, [1, 25, 50, 75, 99])
    scale = p75 - p25
    if not scale > 0:
        scale = p99 - p1 if p99 > p1 else max(abs(p50), 1.0)
    return float(p1 - fence_iqr * scale), float(p99 + fence_iqr * scale)


def summarize_numeric(values: np.ndarray) -> dict[str, float | int] | None:
    ok = values[~np.isnan(values)]
    if ok.size == 0:
        return None
    p5, p50, p95 = np.percentile(ok, [5, 50, 95])
    return {
        "n": int(ok.size),
        "mean": float(ok.mean()),
        "std": float(ok.std()),
        "p5": float(p5),
        "p50": float(p50),
        "p95": float(p95),
    }


def summarize_codes(codes: np.ndarray, vocab: dict[str, int]) -> dict[str, Any] | None:
    ok = codes[~np.isnan(codes)].astype(np.int64)
    if ok.size == 0:
        return None
    names = {c: v for v, c in vocab.items()}
    values, counts = np.unique(ok, return_counts=True)
    order = np.lexsort((values, -counts))[:5]
    top = {
        ("(unseen)" if values[i] < 0 else names[int(values[i])]): round(
            float(counts[i] / ok.size), 4
        )
        for i in order
    }
    return {"n": int(ok.size), "top": top, "unseen_share": round(float((ok < 0).mean()), 4)}


@dataclass
class Group:
    """One detector instance over the series it watches (those sharing its parameters)."""

    detector: str  # its kind
    columns: np.ndarray  # into the numeric matrix, or one categorical series index
    names: list[str]
    det: Detector
    vocab: dict[str, int] | None = None
    last: DriftResult | None = None  # what its latest update saw


def codes_of(values: list[str | None], vocab: dict[str, int]) -> np.ndarray:
    """Category codes (-1 outside the vocabulary, NaN for missing)."""
    return np.array([np.nan if v is None else vocab.get(v, -1) for v in values], dtype=np.float64)


DEFAULT_MAX_CATEGORIES = 1000  # a categorical series' vocabulary cap when no kind sets one


class DetectorBank:
    """The detectors of one model, built from its plan and reference; ``states`` (from
    :meth:`export_state`) restores them instead of starting afresh."""

    def __init__(
        self,
        plan: ModelPlan,
        schema: ModelSchema,
        reference: Reference,
        saved: dict[str, Any] | None = None,
    ) -> None:
        self.schema = schema
        self.groups: list[Group] = []
        self.skipped = unmonitorable(reference, schema)
        specs = {s.name: s for s in plan.series}
        kinds = registry()
        num_ok = [j for j, n in enumerate(schema.numeric) if n not in self.skipped]
        # One detector instance per (kind, parameters), shared by all its series.
        buckets: dict[tuple[str, str], tuple[Any, list[int]]] = {}
        for j in num_ok:
            for d in specs[schema.numeric[j]].detectors:
                key = (d.kind, d.params.model_dump_json())
                buckets.setdefault(key, (d.params, []))[1].append(j)
        cat_ok = [j for j, n in enumerate(schema.categorical) if n not in self.skipped]
        self.layout = [
            [kind, [schema.numeric[c] for c in cols]] for (kind, _), (_, cols) in buckets.items()
        ]
        cat_groups = [(j, d) for j in cat_ok for d in specs[schema.categorical[j]].detectors]
        self.layout += [[d.kind, [schema.categorical[j]]] for j, d in cat_groups]
        states = list(saved["detectors"]) if saved is not None else None
        if saved is not None and saved.get("layout", self.layout) != self.layout:
            # Tunable parameters changed so that series share detectors differently: the
            # detectors start afresh over the same reference.
            log.warning(
                "model %s: its series share detectors differently under these thresholds: "
                "the detectors restart their windows (the reference stays)",
                plan.name,
            )
            states = None
        if states is not None and len(states) != len(buckets) + len(cat_groups):
            raise CheckpointError("the saved detectors do not fit this model's plan")

        def make(kind: str, params: Any, ref: np.ndarray) -> Detector:
            if states is None:
                return kinds[kind].build(params, ref)
            state = states.pop(0)
            if state.get("kind") != kind:
                raise CheckpointError(
                    f"saved detector {state.get('kind')!r} where {kind} is planned"
                )
            return kinds[kind].rebuild(state, params, ref)

        for (kind, _), (params, cols) in buckets.items():
            idx = np.array(cols, dtype=np.int64)
            det = make(kind, params, reference.numeric[:, idx])
            self.groups.append(Group(kind, idx, [schema.numeric[c] for c in cols], det))
        vocabs: dict[int, dict[str, int]] = {}
        for j in cat_ok:  # one vocabulary per series, shared by its detectors
            caps = [
                getattr(d.params, "max_categories", 0)
                for d in specs[schema.categorical[j]].detectors
            ]
            vocabs[j] = reference.vocabulary(j, max(caps) or DEFAULT_MAX_CATEGORIES)
        for j, d in cat_groups:
            name, vocab = schema.categorical[j], vocabs[j]
            det = make(d.kind, d.params, codes_of(reference.categorical[j], vocab))
            self.groups.append(Group(d.kind, np.array([j]), [name], det, vocab))
        self.ref_summary: dict[str, Any] = {}
        for j, n in enumerate(schema.numeric):
            self.ref_summary[n] = summarize_numeric(reference.numeric[:, j])
        for j, vocab in vocabs.items():
            self.ref_summary[schema.categorical[j]] = summarize_codes(
                codes_of(reference.categorical[j], vocab), vocab
            )
        self._cat_vocabs = vocabs  # by categorical column
        self.vocabs = {schema.categorical[j]: vocab for j, vocab in vocabs.items()}
        bounds = [
            fences(reference.numeric[:, j], specs[n].fence_iqr)
            for j, n in enumerate(schema.numeric)
        ]
        self.fence_lo = np.array([lo for lo, _ in bounds], dtype=np.float64)
        self.fence_hi = np.array([hi for _, hi in bounds], dtype=np.float64)
        n_cat = len(schema.categorical)
        self.outliers = np.zeros(len(schema.numeric), dtype=np.int64)
        self.unseen = np.zeros(n_cat, dtype=np.int64)
        self._recent_num = np.full((RECENT, len(schema.numeric)), np.nan)
        self._recent_cat = np.full((RECENT, n_cat), np.nan)
        self._recent_pos = 0
        self._unremembered: tuple[np.ndarray, np.ndarray] | None = None
        if saved is not None:
            self.outliers[...] = saved["outliers"]
            self.unseen[...] = saved["unseen"]
            num, cat, pos = saved["recent"]
            self._recent_num[...], self._recent_cat[...], self._recent_pos = num, cat, int(pos)
            for g in self.groups:  # their last check, as status (no new values)
                g.last = g.det.update(np.empty((0, g.det.n_series)))

    def update(self, batch: ModelBatch, first_event: int) -> tuple[list[Detection], BankView]:
        """Feed a batch whose first row is the model's event ``first_event``."""
        self._remember()
        detections: list[Detection] = []
        ts = batch.ts
        cat_codes = np.full((len(batch), len(self.schema.categorical)), np.nan)
        numeric = batch.numeric
        with np.errstate(invalid="ignore"):  # NaN compares False: missing is no outlier
            out = (numeric < self.fence_lo) | (numeric > self.fence_hi)
        self.outliers += out.sum(axis=0)
        clipped = np.clip(numeric, self.fence_lo, self.fence_hi) if out.any() else numeric
        for j, vocab in self._cat_vocabs.items():  # once per series, for all its detectors
            cat_codes[:, j] = codes_of(batch.categorical[j], vocab)
            self.unseen[j] += int(np.count_nonzero(cat_codes[:, j] == -1))
        for g in self.groups:
            if g.vocab is None:
                # ADWIN averages values: it sees outliers at the fence; the rank-based
                # tests see every value as it is.
                X = (clipped if g.detector == "adwin" else numeric)[:, g.columns]
            else:
                X = cat_codes[:, g.columns]
            result = g.det.update(X)
            g.last = result
            for s, name in enumerate(g.names):
                rows = result.detections[s].tolist()
                if not rows:
                    continue
                scores = result.detection_scores[s].tolist()
                windows = (
                    result.detection_windows[s].tolist()
                    if result.detection_windows
                    else [int(result.window_size[s])] * len(rows)
                )
                threshold = float(result.threshold[s])
                ref_size = int(result.reference_size[s])
                for k, (row, score, window) in enumerate(zip(rows, scores, windows, strict=True)):
                    detections.append(
                        Detection(
                            first_event + row,
                            name,
                            g.detector,
                            ts[row],
                            score,
                            threshold,
                            int(window),
                            ref_size,
                            _p_value(result, s, k),
                        )
                    )
        self._unremembered = (numeric, cat_codes)
        detections.sort(key=lambda d: (d.event, d.feature, d.detector))
        return detections, BankView(self, batch, cat_codes, first_event)

    def _remember(self) -> None:
        """Move the previous batch into the ring of recent values (done lazily, so that the
        previous batch's view still saw the ring as it was before that batch)."""
        if self._unremembered is None:
            return
        numeric, codes = self._unremembered
        self._unremembered = None
        n = numeric.shape[0]
        if n >= RECENT:
            self._recent_num[:] = numeric[-RECENT:]
            self._recent_cat[:] = codes[-RECENT:]
            self._recent_pos = 0
            return
        idx = (self._recent_pos + np.arange(n)) % RECENT
        self._recent_num[idx] = numeric
        self._recent_cat[idx] = codes
        self._recent_pos = int((self._recent_pos + n) % RECENT)

    def seed_recent(self, numeric: np.ndarray, categorical: list[list[str | None]]) -> None:
        """Fill the ring of recent values from raw values, oldest first (a bank rebuilt by a
        re-baseline continues the summaries of the bank it replaces)."""
        self._unremembered = None
        n = min(numeric.shape[0], RECENT)
        self._recent_num[:] = np.nan
        self._recent_cat[:] = np.nan
        if n:
            self._recent_num[RECENT - n :] = numeric[-n:]
            for g in self.groups:
                if g.vocab is not None:
                    j = int(g.columns[0])
                    self._recent_cat[RECENT - n :, j] = codes_of(categorical[j][-n:], g.vocab)
        self._recent_pos = 0

    def recent(self) -> tuple[np.ndarray, np.ndarray]:
        """The ring of recent values, oldest first (numeric, categorical codes)."""
        order = (self._recent_pos + np.arange(RECENT)) % RECENT
        return self._recent_num[order], self._recent_cat[order]

    def export_state(self) -> dict[str, Any]:
        self._remember()
        return {
            "layout": self.layout,
            "detectors": [g.det.export_state(include_reference=False) for g in self.groups],
            "unseen": self.unseen.copy(),
            "outliers": self.outliers.copy(),
            "recent": (self._recent_num.copy(), self._recent_cat.copy(), self._recent_pos),
        }


def _p_value(result: DriftResult, s: int, k: int) -> Callable[[], float]:
    return lambda: float(result.detection_p_values[s][k])


class BankView:
    """One batch as the alert policy sees it (valid until the bank's next update)."""

    def __init__(
        self, bank: DetectorBank, batch: ModelBatch, codes: np.ndarray, first_event: int
    ) -> None:
        self._bank = bank
        self._batch = batch
        self._codes = codes
        self.first = first_event
        self.end = first_event + len(batch)

    def ts_of(self, event: int) -> float:
        i = event - self.first
        return self._batch.ts[i] if 0 <= i < len(self._batch) else np.nan

    def reference_summary(self, feature: str) -> dict[str, Any] | None:
        summary: dict[str, Any] | None = self._bank.ref_summary.get(feature)
        return summary

    def current_summary(self, feature: str, event: int) -> dict[str, Any] | None:
        """The distribution of the series' last values up to ``event`` (at most RECENT)."""
        bank, schema = self._bank, self._bank.schema
        upto = max(0, min(len(self._batch), event - self.first + 1))
        recent_num, recent_cat = bank.recent()
        if feature in schema.numeric:
            j = schema.numeric.index(feature)
            values = np.concatenate([recent_num[:, j], self._batch.numeric[:upto, j]])
            return summarize_numeric(values[-RECENT:])
        vocab = bank.vocabs.get(feature)
        if vocab is None:
            return None
        j = schema.categorical.index(feature)
        values = np.concatenate([recent_cat[:, j], self._codes[:upto, j]])
        return summarize_codes(values[-RECENT:], vocab)
