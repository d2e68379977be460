"""Per-model monitoring: warm-up into a reference, then a bank of detectors over every series.

A :class:`ModelMonitor` counts the model's events (its *event index* orders everything the
alert policy does, so replays of the same stream give the same alerts), collects the
reference during warm-up (or loads it from a file), then feeds each batch to a
:class:`DetectorBank` and reports the detections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors import ADWIN, KS, PSI, CategoricalDrift, Detector, DriftResult

from .config import Config
from .decode import ModelBatch, ModelSchema
from .reference import Reference, read_reference_file

MIN_REFERENCE_VALUES = 20
RECENT = 1000  # values kept per series for the "current" summary of an alert


@dataclass(frozen=True)
class Detection:
    """Drift signalled on one series by one detector at one event of the model."""

    event: int
    feature: str
    detector: str
    ts: float
    score: float = float("nan")  # the statistic at the detecting check
    threshold: float = float("nan")


@dataclass
class SeriesStatus:
    """The latest view of one (series, detector) pair, read by /status and /metrics."""

    score: float = float("nan")
    threshold: float = float("nan")
    drifting: bool = False
    window_size: int = 0
    reference_size: int = 0
    _result: DriftResult | None = None
    _j: int = 0

    @property
    def p_value(self) -> float | None:
        if self._result is None:
            return None
        p = float(self._result.p_value[self._j])
        return None if np.isnan(p) else p


@dataclass
class _Group:
    detector: str
    columns: np.ndarray  # into the numeric matrix, or one categorical series index
    names: list[str]
    det: Detector
    vocab: dict[str, int] | None = None


def _numeric_detector(name: str, params: Any, reference: np.ndarray) -> Detector:
    if name == "psi":
        p = params.psi
        return PSI(
            reference,
            bins=p.bins,
            window=p.window,
            stride=p.stride,
            threshold=p.threshold,
            alpha=p.alpha,
            warn=p.warn,
            alert=p.alert,
        )
    if name == "ks":
        p = params.ks
        return KS(reference, window=p.window, stride=p.stride, alpha=p.alpha, method=p.method)
    p = params.adwin
    return ADWIN(
        delta=p.delta,
        clock=p.clock,
        max_buckets=p.max_buckets,
        min_window_length=p.min_window_length,
        grace_period=p.grace_period,
        n_series=reference.shape[1],
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
    order = np.argsort(-counts)[:5]
    top = {
        ("(unseen)" if values[i] < 0 else names[int(values[i])]): round(
            float(counts[i] / ok.size), 4
        )
        for i in order
    }
    return {"n": int(ok.size), "top": top, "unseen_share": round(float((ok < 0).mean()), 4)}


class DetectorBank:
    """The detectors of one model, built from its reference."""

    def __init__(self, config: Config, schema: ModelSchema, reference: Reference) -> None:
        self.schema = schema
        self.groups: list[_Group] = []
        self.skipped: dict[str, str] = {}
        model = schema.model
        num_ok = [
            j
            for j, n in enumerate(schema.numeric)
            if self._enough(n, int(np.count_nonzero(~np.isnan(reference.numeric[:, j]))))
        ]
        # One detector instance per (detector, parameters) shared by all its series.
        buckets: dict[tuple[str, str], list[int]] = {}
        for j in num_ok:
            name = schema.numeric[j]
            params = config.params_for(model, name)
            for kind in config.detectors_for(model, name):
                key = (kind, getattr(params, kind).model_dump_json())
                buckets.setdefault(key, []).append(j)
        for (kind, _), cols in buckets.items():
            params = config.params_for(model, schema.numeric[cols[0]])
            idx = np.array(cols, dtype=np.int64)
            self.groups.append(
                _Group(
                    kind,
                    idx,
                    [schema.numeric[c] for c in cols],
                    _numeric_detector(kind, params, reference.numeric[:, idx]),
                )
            )
        for j, name in enumerate(schema.categorical):
            if not self._enough(name, sum(v is not None for v in reference.categorical[j])):
                continue
            p = config.params_for(model, name).categorical
            vocab = reference.vocabulary(j, p.max_categories)
            ref_codes = self._codes(reference.categorical[j], vocab)
            cat = CategoricalDrift(
                ref_codes,
                window=p.window,
                stride=p.stride,
                alpha=p.alpha,
                n_categories=max(1, len(vocab)),
            )
            self.groups.append(_Group("categorical", np.array([j]), [name], cat, vocab))
        bounds = [
            fences(reference.numeric[:, j], config.params_for(model, n).outliers.fence_iqr)
            for j, n in enumerate(schema.numeric)
        ]
        self.fence_lo = np.array([lo for lo, _ in bounds], dtype=np.float64)
        self.fence_hi = np.array([hi for _, hi in bounds], dtype=np.float64)
        self.outliers = np.zeros(len(schema.numeric), dtype=np.int64)
        self.ref_summary: dict[str, Any] = {}
        for j, n in enumerate(schema.numeric):
            self.ref_summary[n] = summarize_numeric(reference.numeric[:, j])
        for g in self.groups:
            if g.vocab is not None:
                j = int(g.columns[0])
                self.ref_summary[g.names[0]] = summarize_codes(
                    self._codes(reference.categorical[j], g.vocab), g.vocab
                )
        self.status: dict[tuple[str, str], SeriesStatus] = {
            (n, g.detector): SeriesStatus() for g in self.groups for n in g.names
        }
        self.vocabs = {g.names[0]: g.vocab for g in self.groups if g.vocab is not None}
        n_cat = len(schema.categorical)
        self._recent_num = np.full((RECENT, len(schema.numeric)), np.nan)
        self._recent_cat = np.full((RECENT, n_cat), np.nan)
        self._recent_pos = 0
        self.unseen = np.zeros(n_cat, dtype=np.int64)

    def _enough(self, name: str, n_valid: int) -> bool:
        if n_valid < MIN_REFERENCE_VALUES:
            self.skipped[name] = f"only {n_valid} reference values (need {MIN_REFERENCE_VALUES})"
            return False
        return True

    @staticmethod
    def _codes(values: list[str | None], vocab: dict[str, int]) -> np.ndarray:
        return np.array(
            [np.nan if v is None else vocab.get(v, -1) for v in values], dtype=np.float64
        )

    def update(self, batch: ModelBatch, first_event: int) -> list[Detection]:
        """Feed a batch whose first row is the model's event ``first_event``."""
        detections: list[Detection] = []
        ts = batch.ts
        cat_codes = np.full((len(batch), len(self.schema.categorical)), np.nan)
        numeric = batch.numeric
        with np.errstate(invalid="ignore"):  # NaN compares False: missing is no outlier
            out = (numeric < self.fence_lo) | (numeric > self.fence_hi)
        self.outliers += out.sum(axis=0)
        clipped = np.clip(numeric, self.fence_lo, self.fence_hi) if out.any() else numeric
        for g in self.groups:
            if g.vocab is None:
                # ADWIN averages values: it sees outliers at the fence; the rank-based
                # tests see every value as it is.
                X = (clipped if g.detector == "adwin" else numeric)[:, g.columns]
            else:
                j = int(g.columns[0])
                X = self._codes(batch.categorical[j], g.vocab)
                cat_codes[:, j] = X
                self.unseen[j] += int(np.count_nonzero(X == -1))
            result = g.det.update(X)
            for s, name in enumerate(g.names):
                st = self.status[(name, g.detector)]
                st.score = float(result.score[s])
                st.threshold = float(result.threshold[s])
                st.drifting = bool(result.drifting[s])
                st.window_size = int(result.window_size[s])
                st.reference_size = int(result.reference_size[s])
                st._result, st._j = result, s
                rows = result.detections[s].tolist()
                scores = result.detection_scores[s].tolist()
                for row, score in zip(rows, scores, strict=True):
                    detections.append(
                        Detection(first_event + row, name, g.detector, ts[row], score, st.threshold)
                    )
        self._remember(batch.numeric, cat_codes)
        detections.sort(key=lambda d: (d.event, d.feature, d.detector))
        return detections

    def _remember(self, numeric: np.ndarray, codes: np.ndarray) -> None:
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

    def current_summary(self, feature: str) -> dict[str, Any] | None:
        if feature in self.schema.numeric:
            return summarize_numeric(self._recent_num[:, self.schema.numeric.index(feature)])
        j = self.schema.categorical.index(feature)
        vocab = self.vocabs.get(feature)
        return None if vocab is None else summarize_codes(self._recent_cat[:, j], vocab)


class ModelMonitor:
    """One model: its event counter, data-quality counters, reference and detectors."""

    def __init__(self, config: Config, model: str) -> None:
        self.config = config
        self.model = model
        self.schema = ModelSchema(config, model)
        self.events = 0  # events accepted so far: the next event's index
        self.missing = np.zeros(len(self.schema.series), dtype=np.int64)
        self.wrong_type = np.zeros(len(self.schema.series), dtype=np.int64)
        self.out_of_range = np.zeros(len(self.schema.series), dtype=np.int64)
        self.schema_violations = 0
        self.bank: DetectorBank | None = None
        self.reference: Reference | None = None
        spec = config.reference_for(model)
        self.warmup = spec.warmup or 0
        self._ref_num: list[np.ndarray] = []
        self._ref_cat: list[list[str | None]] = [[] for _ in self.schema.categorical]
        self._ref_n = 0
        if spec.file is not None:
            self._ready(read_reference_file(spec.file, self.schema))

    @property
    def ready(self) -> bool:
        return self.bank is not None

    @property
    def reference_events(self) -> int:
        return self._ref_n

    def _ready(self, reference: Reference) -> None:
        self._ref_n = reference.n_events
        self.reference = reference
        self.bank = DetectorBank(self.config, self.schema, reference)
        self._ref_num, self._ref_cat = [], []

    def export_state(self) -> dict[str, Any]:
        """Everything that determines this model's future output (see monitor.checkpoint)."""
        state: dict[str, Any] = {
            "events": self.events,
            "missing": self.missing.copy(),
            "wrong_type": self.wrong_type.copy(),
            "out_of_range": self.out_of_range.copy(),
            "schema_violations": self.schema_violations,
            "ref_n": self._ref_n,
            "ref_num": [a.copy() for a in self._ref_num],
            "ref_cat": [list(c) for c in self._ref_cat],
            "reference": self.reference,
            "bank": None,
        }
        bank = self.bank
        if bank is not None:
            state["bank"] = {
                "detectors": [_without_reference(g.det.export_state()) for g in bank.groups],
                "unseen": bank.unseen.copy(),
                "outliers": bank.outliers.copy(),
                "recent": (bank._recent_num.copy(), bank._recent_cat.copy(), bank._recent_pos),
                "status": {
                    k: (st.score, st.threshold, st.drifting, st.window_size, st.reference_size)
                    for k, st in bank.status.items()
                },
            }
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`export_state`; the detector bank is rebuilt from the configuration
        and the saved reference, then each detector takes its saved state."""
        self.events = state["events"]
        self.missing[...] = state["missing"]
        self.wrong_type[...] = state["wrong_type"]
        self.out_of_range[...] = state["out_of_range"]
        self.schema_violations = state["schema_violations"]
        self.bank = None
        self.reference = None
        self._ref_n = state["ref_n"]
        self._ref_num = list(state["ref_num"])
        self._ref_cat = [list(c) for c in state["ref_cat"]]
        saved = state["bank"]
        if state["reference"] is None or saved is None:
            return
        self._ready(state["reference"])
        bank = self.bank
        assert bank is not None
        for group, det_state in zip(bank.groups, saved["detectors"], strict=True):
            if det_state.get("kind") in FROM_REFERENCE:
                # Rebuilt from the saved reference just now: take those parts from there.
                fresh = group.det.export_state()
                det_state = {
                    **det_state,
                    **{k: fresh[k] for k in FROM_REFERENCE[det_state["kind"]]},
                }
            group.det = type(group.det).from_state(det_state)
        bank.unseen[...] = saved["unseen"]
        bank.outliers[...] = saved["outliers"]
        bank._recent_num[...], bank._recent_cat[...], bank._recent_pos = saved["recent"]
        for key, (score, threshold, drifting, window, ref) in saved["status"].items():
            st = bank.status[key]
            st.score, st.threshold, st.drifting = score, threshold, drifting
            st.window_size, st.reference_size = window, ref

    def process(
        self, batch: ModelBatch, on_ready: Callable[[ModelMonitor], None] | None = None
    ) -> list[Detection]:
        """Warm up or detect, then count; returns the detections of this batch. Counters
        move once the batch is done, so readers never see a half-processed batch."""
        detections = self._process(batch, on_ready)
        self.missing += batch.missing
        self.wrong_type += batch.wrong_type
        self.out_of_range += batch.out_of_range
        self.schema_violations += batch.schema_violations
        self.events += len(batch)
        return detections

    def _process(
        self, batch: ModelBatch, on_ready: Callable[[ModelMonitor], None] | None
    ) -> list[Detection]:
        n = len(batch)
        start = self.events
        taken = 0
        if self.bank is None:
            taken = min(n, self.warmup - self._ref_n)
            self._ref_num.append(batch.numeric[:taken])
            for j, col in enumerate(batch.categorical):
                self._ref_cat[j].extend(col[:taken])
            self._ref_n += taken
            if self._ref_n < self.warmup:
                return []
            num = np.concatenate(self._ref_num) if self._ref_num else np.empty((0, 0))
            self._ready(
                Reference(self.model, num.reshape(-1, len(self.schema.numeric)), self._ref_cat)
            )
            if on_ready is not None:
                on_ready(self)
            if taken == n:
                return []
        assert self.bank is not None
        rest = batch if taken == 0 else batch.slice(taken, n)
        return self.bank.update(rest, start + taken)


# Detector state that follows from the model's reference alone (which the checkpoint holds
# once): left out of checkpoints, taken from the detector rebuilt from that reference.
FROM_REFERENCE = {"ks": ("reference", "n_ref")}


def _without_reference(state: dict[str, Any]) -> dict[str, Any]:
    drop = FROM_REFERENCE.get(state.get("kind", ""), ())
    return {k: v for k, v in state.items() if k not in drop}
