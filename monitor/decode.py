"""Decoding: Kafka record values (JSON bytes) to columnar numpy batches per model.

The wire contract, one JSON object per record::

    {"model": "credit-v1", "id": "0f8e...", "ts": 1764158400.25,
     "features": {"salary": 52000.0, "age": 41, "elevel": "2"},
     "prediction": 0.83, "label": 1}

A record is **rejected** (and dead-lettered) when its envelope is unusable; the reason is
one of :data:`REJECT_REASONS`. A *feature value* of the wrong type does not reject the
record: it is counted as a data-quality problem of that feature and treated as missing,
so one odd field never drops a prediction. Feature keys the model does not declare are
counted as schema violations of the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from .config import PREDICTION, Config

REJECT_REASONS = (
    "oversized",
    "empty",
    "bad_json",
    "not_an_object",
    "missing_model",
    "missing_features",
    "unknown_model",
    "wrong_type",
)


@dataclass(frozen=True)
class Rejected:
    """A record that could not be used: its position in the input and why."""

    index: int
    reason: str
    detail: str


@dataclass
class ModelBatch:
    """The usable records of one model in one input batch, column by column.

    ``numeric`` is ``(n, n_numeric)`` float64 with NaN for missing; ``categorical`` holds
    one list of canonical strings (None = missing) per categorical series.
    """

    model: str
    index: list[int] = field(default_factory=list)  # positions in the input batch
    ids: list[str | None] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)  # NaN where absent
    labels: list[Any] = field(default_factory=list)
    numeric: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    categorical: list[list[str | None]] = field(default_factory=list)
    missing: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    wrong_type: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    schema_violations: int = 0

    def __len__(self) -> int:
        return len(self.index)

    def slice(self, lo: int, hi: int) -> ModelBatch:
        """Rows ``lo:hi`` (data-quality counts stay with the original batch)."""
        return ModelBatch(
            model=self.model,
            index=self.index[lo:hi],
            ids=self.ids[lo:hi],
            ts=self.ts[lo:hi],
            labels=self.labels[lo:hi],
            numeric=self.numeric[lo:hi],
            categorical=[col[lo:hi] for col in self.categorical],
            missing=np.zeros_like(self.missing),
            wrong_type=np.zeros_like(self.wrong_type),
        )


class ModelSchema:
    """The series one model declares, split by type (the prediction is one of them)."""

    def __init__(self, config: Config, model: str) -> None:
        specs = config.feature_specs(model)
        self.model = model
        self.numeric = [n for n, s in specs.items() if s.type == "numeric"]
        self.categorical = [n for n, s in specs.items() if s.type == "categorical"]
        self.series = self.numeric + self.categorical  # quality counters use this order
        self.features = set(config.models[model].features)
        self._num_feats = [n for n in self.numeric if n != PREDICTION]
        self._cat_feats = [n for n in self.categorical if n != PREDICTION]
        self._pred_numeric = PREDICTION in self.numeric
        self._pred_categorical = PREDICTION in self.categorical

    def columns(self, records: list[dict[str, Any]]) -> ModelBatch:
        batch = ModelBatch(self.model)
        n_num = len(self.numeric)
        rows: list[list[Any]] = []
        cats: list[list[Any]] = [[] for _ in self.categorical]
        violations = 0
        nf = len(self.features)
        for rec in records:
            feats = rec["features"]
            row = [feats.get(name) for name in self._num_feats]
            if self._pred_numeric:
                row.append(rec.get(PREDICTION))
            rows.append(row)
            for j, name in enumerate(self._cat_feats):
                cats[j].append(feats.get(name))
            if self._pred_categorical:
                cats[-1].append(rec.get(PREDICTION))
            if len(feats) > nf or any(k not in self.features for k in feats):
                violations += 1
        missing = np.zeros(len(self.series), dtype=np.int64)
        wrong = np.zeros(len(self.series), dtype=np.int64)
        batch.numeric = _numeric_matrix(rows, n_num, missing, wrong)
        batch.categorical = [
            _canonical(col, missing, wrong, n_num + j) for j, col in enumerate(cats)
        ]
        batch.missing, batch.wrong_type = missing, wrong
        batch.schema_violations = violations
        return batch


def _numeric_matrix(rows: list[list[Any]], n_cols: int, missing: Any, wrong: Any) -> np.ndarray:
    if not rows:
        return np.empty((0, n_cols))
    try:  # fast path: numbers, booleans and None (-> NaN) only
        out = np.array(rows, dtype=np.float64)
        if out.shape != (len(rows), n_cols):
            raise ValueError("ragged")
    except (TypeError, ValueError):
        out = np.full((len(rows), n_cols), np.nan)
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                if isinstance(v, int | float):  # bool is an int: True -> 1.0
                    out[i, j] = float(v)
                elif v is not None:
                    wrong[j] += 1
        missing[:n_cols] += np.isnan(out).sum(axis=0) - wrong[:n_cols]
        return out
    missing[:n_cols] += np.isnan(out).sum(axis=0)
    return out


def _canonical(values: list[Any], missing: Any, wrong: Any, j: int) -> list[str | None]:
    """Category values as strings: ``2`` and ``"2"`` are the same category."""
    out: list[str | None] = []
    for v in values:
        if isinstance(v, str):
            out.append(v)
        elif v is None:
            missing[j] += 1
            out.append(None)
        elif isinstance(v, bool):
            out.append("true" if v else "false")
        elif isinstance(v, int):
            out.append(str(v))
        elif isinstance(v, float) and math.isfinite(v):
            out.append(str(int(v)) if v.is_integer() else repr(v))
        else:
            wrong[j] += 1
            out.append(None)
    return out


def parse_ts(value: Any) -> float:
    """Epoch seconds from a number or an RFC 3339 string; NaN when absent.

    >>> parse_ts("2025-11-26T12:00:00Z")
    1764158400.0
    >>> parse_ts(1.5), parse_ts(None)
    (1.5, nan)
    """
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise ValueError("ts must be a number or an RFC 3339 string")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        stamp = datetime.fromisoformat(value)
        if stamp.tzinfo is None:
            raise ValueError("ts needs a timezone (e.g. 'Z')")
        return stamp.timestamp()
    raise ValueError("ts must be a number or an RFC 3339 string")


class Decoder:
    """Turns a batch of record values into per-model column batches and rejections."""

    def __init__(self, config: Config) -> None:
        self.max_bytes = config.kafka.max_record_bytes
        self.schemas = {name: ModelSchema(config, name) for name in config.models}

    def decode(
        self, values: Sequence[bytes | None]
    ) -> tuple[dict[str, ModelBatch], list[Rejected]]:
        accepted: dict[str, list[dict[str, Any]]] = {}
        meta: dict[str, ModelBatch] = {}
        rejected: list[Rejected] = []
        for i, raw in enumerate(values):
            try:
                model, rec, ts = self._envelope(raw)
            except _Reject as r:
                rejected.append(Rejected(i, r.reason, r.detail))
                continue
            accepted.setdefault(model, []).append(rec)
            m = meta.get(model)
            if m is None:
                m = meta[model] = ModelBatch(model)
            m.index.append(i)
            m.ids.append(rec.get("id"))
            m.ts.append(ts)
            m.labels.append(rec.get("label"))
        out: dict[str, ModelBatch] = {}
        for model, recs in accepted.items():
            cols = self.schemas[model].columns(recs)
            m = meta[model]
            cols.index, cols.ids, cols.ts, cols.labels = m.index, m.ids, m.ts, m.labels
            out[model] = cols
        return out, rejected

    def _envelope(self, raw: bytes | None) -> tuple[str, dict[str, Any], float]:
        if raw is None or len(raw) == 0:
            raise _Reject("empty", "the record has no value")
        if len(raw) > self.max_bytes:
            raise _Reject("oversized", f"{len(raw)} bytes > max_record_bytes {self.max_bytes}")
        try:
            rec = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _Reject("bad_json", str(exc)) from None
        if not isinstance(rec, dict):
            raise _Reject("not_an_object", f"got a JSON {type(rec).__name__}")
        model = rec.get("model")
        if model is None:
            raise _Reject("missing_model", "no 'model' key")
        if not isinstance(model, str):
            raise _Reject("wrong_type", "'model' must be a string")
        if model not in self.schemas:
            raise _Reject("unknown_model", f"model {model!r} is not configured")
        feats = rec.get("features")
        if feats is None:
            raise _Reject("missing_features", "no 'features' object")
        if not isinstance(feats, dict):
            raise _Reject("wrong_type", "'features' must be an object")
        rid = rec.get("id")
        if rid is not None and not isinstance(rid, str):
            raise _Reject("wrong_type", "'id' must be a string")
        pred = rec.get(PREDICTION)
        if pred is not None and not isinstance(pred, int | float | str):
            raise _Reject("wrong_type", "'prediction' must be a number or a string")
        try:
            ts = parse_ts(rec.get("ts"))
        except ValueError as exc:
            raise _Reject("wrong_type", f"'ts': {exc}") from None
        return model, rec, ts


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
