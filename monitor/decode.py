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
from typing import Any, Union

import msgspec
import numpy as np
import orjson
from msgspec.structs import astuple

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
    "missing_id",
    "missing_label",
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
    predictions: list[Any] = field(default_factory=list)  # raw, for the label join

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
            predictions=self.predictions[lo:hi],
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
        """Columns from already parsed records (``{"features": {...}, "prediction": ...}``)."""
        batch = ModelBatch(self.model)
        rows: list[tuple[Any, ...]] = [()] * len(records)
        slow = [(j, rec["features"]) for j, rec in enumerate(records)]
        self.fill(batch, rows, slow, [rec.get(PREDICTION) for rec in records], len(self._num_feats))
        return batch

    def fill(
        self,
        batch: ModelBatch,
        rows: list[tuple[Any, ...]],
        slow: list[tuple[int, dict[str, Any]]],
        preds: list[Any],
        n_num: int,
    ) -> None:
        """Set ``batch``'s columns and quality counts. ``rows[j]`` holds record ``j``'s
        feature values (numeric features, then categorical ones) except for the records in
        ``slow``, whose feature objects did not fit the typed struct: those are checked
        value by value here (a wrong type is counted and becomes missing)."""
        n_series = len(self.series)
        n_numeric = len(self.numeric)
        wrong = np.zeros(n_series, dtype=np.int64)
        missing = np.zeros(n_series, dtype=np.int64)
        violations = 0
        for j, feats in slow:
            if not feats.keys() <= self.features:
                violations += 1
            vals: list[Any] = []
            for k, name in enumerate(self._num_feats):
                v = feats.get(name)
                if v is None or isinstance(v, int | float):  # a bool counts as 0/1
                    vals.append(None if v is None else float(v))
                else:
                    wrong[k] += 1
                    vals.append(None)
            # Categorical values go as they are: _canonical counts the odd ones.
            vals += [feats.get(name) for name in self._cat_feats]
            rows[j] = tuple(vals)
        n = len(rows)
        num = np.array([r[:n_num] for r in rows], dtype=np.float64).reshape(n, n_num)
        if self._pred_numeric:
            col = np.full(n, np.nan)
            for j, v in enumerate(preds):
                if isinstance(v, int | float):
                    col[j] = v
                elif v is not None:
                    wrong[n_num] += 1
            num = np.column_stack([num, col])
        missing[:n_numeric] = np.isnan(num).sum(axis=0) - wrong[:n_numeric]
        cats = [[r[n_num + k] for r in rows] for k in range(len(self._cat_feats))]
        if self._pred_categorical:
            cats.append(list(preds))
        batch.numeric = num
        batch.categorical = [
            _canonical(col_values, missing, wrong, n_numeric + k)
            for k, col_values in enumerate(cats)
        ]
        batch.missing, batch.wrong_type = missing, wrong
        batch.schema_violations = violations


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


class _Envelope(msgspec.Struct):
    """The record's outer object, validated in C; ``features`` stays raw bytes."""

    model: str
    features: msgspec.Raw
    id: str | None = None
    ts: float | str | None = None
    prediction: float | str | None = None
    label: Any = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)


def _reject_reason(message: str) -> str:
    if "required field `model`" in message or "got `null` - at `$.model`" in message:
        return "missing_model"
    if "required field `features`" in message:
        return "missing_features"
    if message.startswith("Expected `object`") and " - at " not in message:
        return "not_an_object"
    return "wrong_type"


class _NoModel(msgspec.Struct, tag_field="model", tag="\x00never"):
    """Sentinel member of the event union (see Decoder)."""


class _FastFeatures:
    """A model's features as a typed struct: numbers for numeric features, strings or
    numbers for categorical ones, unknown keys refused. A record that does not fit takes the
    per-value path instead (which counts what is wrong)."""

    def __init__(self, schema: ModelSchema) -> None:
        names = schema._num_feats + schema._cat_feats
        n_num = len(schema._num_feats)
        fields: list[tuple[str, Any, None]] = [(f"f{i}", float | None, None) for i in range(n_num)]
        fields += [
            (f"f{n_num + i}", str | float | None, None) for i in range(len(schema._cat_feats))
        ]
        struct = msgspec.defstruct(
            f"Features_{abs(hash(schema.model))}",
            fields,
            rename={f"f{i}": n for i, n in enumerate(names)},
            forbid_unknown_fields=True,
        )
        self.decoder = msgspec.json.Decoder(struct)
        self.n_num = len(schema._num_feats)
        # The whole event with typed features, tagged by its model: one C-level pass.
        self.event = msgspec.defstruct(
            f"Event_{abs(hash(schema.model))}",
            [
                ("features", struct),
                ("id", str | None, None),
                ("ts", float | str | None, None),
                ("prediction", float | str | None, None),
                ("label", Any, None),
            ],
            tag_field="model",
            tag=schema.model,
        )


class Decoder:
    """Turns a batch of record values into per-model column batches and rejections."""

    def __init__(self, config: Config) -> None:
        self.max_bytes = config.kafka.max_record_bytes
        self.schemas = {name: ModelSchema(config, name) for name in config.models}
        self._fast = {name: _FastFeatures(s) for name, s in self.schemas.items()}
        # A union needs the tag (a lone tagged struct would take records without one), so a
        # sentinel no event can match keeps it a union even for a single model.
        events = (*(f.event for f in self._fast.values()), _NoModel)
        self._model_of = {f.event: name for name, f in self._fast.items()}
        self._events = msgspec.json.Decoder(Union[events])  # noqa: UP007 - a runtime tuple

    def decode(
        self, values: Sequence[bytes | None]
    ) -> tuple[dict[str, ModelBatch], list[Rejected]]:
        pending: dict[str, _Pending] = {}
        rejected: list[Rejected] = []
        max_bytes = self.max_bytes
        for i, raw in enumerate(values):
            if not raw:
                rejected.append(Rejected(i, "empty", "the record has no value"))
                continue
            if len(raw) > max_bytes:
                rejected.append(
                    Rejected(i, "oversized", f"{len(raw)} bytes > max_record_bytes {max_bytes}")
                )
                continue
            try:  # the common case: the whole event fits its model's typed struct
                ev = self._events.decode(raw)
                model, rec, row, feats = self._model_of[type(ev)], ev, astuple(ev.features), None
            except msgspec.DecodeError:
                outcome = self._fallback(i, raw)
                if isinstance(outcome, Rejected):
                    rejected.append(outcome)
                    continue
                model, rec, row, feats = outcome
            ts = rec.ts
            if ts.__class__ is not float:
                try:
                    ts = parse_ts(ts)
                except ValueError as exc:
                    rejected.append(Rejected(i, "wrong_type", f"'ts': {exc}"))
                    continue
            p = pending.get(model)
            if p is None:
                p = pending[model] = _Pending(model)
            p.add(i, rec, ts, row, feats)
        out: dict[str, ModelBatch] = {}
        for model, p in pending.items():
            self.schemas[model].fill(p.batch, p.rows, p.slow, p.preds, self._fast[model].n_num)
            p.batch.predictions = p.preds
            out[model] = p.batch
        return out, rejected

    def _fallback(
        self, i: int, raw: bytes
    ) -> Rejected | tuple[str, Any, tuple[Any, ...], dict[str, Any] | None]:
        """A record that does not fit the typed union: why it is rejected, or its features
        as a plain object for the per-value path."""
        try:
            env = _ENVELOPE.decode(raw)
        except msgspec.ValidationError as exc:
            return Rejected(i, _reject_reason(str(exc)), str(exc))
        except msgspec.DecodeError as exc:
            return Rejected(i, "bad_json", str(exc))
        fast = self._fast.get(env.model)
        if fast is None:
            return Rejected(i, "unknown_model", f"model {env.model!r} is not configured")
        try:
            return env.model, env, astuple(fast.decoder.decode(env.features)), None
        except msgspec.DecodeError:
            feats = orjson.loads(bytes(env.features))  # valid JSON: msgspec parsed it
        if not isinstance(feats, dict):
            return Rejected(i, "wrong_type", "'features' must be an object")
        return env.model, env, (), feats


class _Pending:
    """The accepted records of one model in the batch being decoded."""

    def __init__(self, model: str) -> None:
        self.batch = ModelBatch(model)
        self.rows: list[tuple[Any, ...]] = []
        self.slow: list[tuple[int, dict[str, Any]]] = []
        self.preds: list[Any] = []

    def add(
        self, i: int, rec: Any, ts: float, row: tuple[Any, ...], feats: dict[str, Any] | None
    ) -> None:
        if feats is not None:  # checked value by value in ModelSchema.fill
            self.slow.append((len(self.rows), feats))
        self.rows.append(row)
        self.preds.append(rec.prediction)
        b = self.batch
        b.index.append(i)
        b.ids.append(rec.id)
        b.ts.append(ts)
        b.labels.append(rec.label)


class _LabelRecord(msgspec.Struct):
    model: str
    id: str
    label: Any
    ts: float | str | None = None


_LABEL = msgspec.json.Decoder(_LabelRecord)


@dataclass(frozen=True)
class LabelEvent:
    model: str
    id: str
    label: Any
    ts: float


def decode_labels(
    values: Sequence[bytes | None], models: Any, max_bytes: int
) -> tuple[list[LabelEvent], list[Rejected]]:
    """Label records ``{"model", "id", "label", "ts"}``; rejections as for predictions."""
    out: list[LabelEvent] = []
    rejected: list[Rejected] = []
    for i, raw in enumerate(values):
        if not raw:
            rejected.append(Rejected(i, "empty", "the record has no value"))
            continue
        if len(raw) > max_bytes:
            rejected.append(Rejected(i, "oversized", f"{len(raw)} bytes > max_record_bytes"))
            continue
        try:
            rec = _LABEL.decode(raw)
        except msgspec.ValidationError as exc:
            msg = str(exc)
            reason = (
                "missing_id"
                if "`id`" in msg
                else "missing_label"
                if "`label`" in msg
                else _reject_reason(msg)
            )
            rejected.append(Rejected(i, reason, msg))
            continue
        except msgspec.DecodeError as exc:
            rejected.append(Rejected(i, "bad_json", str(exc)))
            continue
        if rec.model not in models:
            rejected.append(Rejected(i, "unknown_model", f"model {rec.model!r} is not configured"))
            continue
        if rec.label is None:
            rejected.append(Rejected(i, "missing_label", "'label' is null"))
            continue
        try:
            ts = parse_ts(rec.ts)
        except ValueError as exc:
            rejected.append(Rejected(i, "wrong_type", f"'ts': {exc}"))
            continue
        out.append(LabelEvent(rec.model, rec.id, rec.label, ts))
    return out, rejected
