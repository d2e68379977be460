"""Decoding: Kafka record values (JSON bytes) to columnar numpy batches per model.

The wire contract, one JSON object per record::

    {"model": "credit-v1", "id": "0f8e...", "ts": 1764158400.25,
     "features": {"salary": 52000.0, "age": 41, "elevel": "2"},
     "prediction": 0.83, "label": 1}

Any bytes at all may arrive. Each record is either **accepted** or **rejected** with one of
:data:`REJECT_REASONS` (and dead-lettered by the daemon); nothing a record holds can stop
the batch it came in. What each kind of value becomes:

* the envelope must be an object with a string ``model`` that is configured and a
  ``features`` object; ``id`` a string or an integer; ``ts`` as :mod:`monitor.ingest.timestamps`
  says (absent: the Kafka record's timestamp); otherwise the record is rejected;
* a **numeric** feature (or prediction) value is a number: integers and floats become
  float64, ``true``/``false`` 1 and 0; ``null``, an absent key and the non-standard
  literal ``NaN`` are *missing*; ``Infinity``, ``-Infinity`` and numbers beyond float64's
  range (``1e400``) are *out of range*; anything else is of the *wrong type*;
* a **categorical** value is a string, or a number or boolean written as one (``2`` and
  ``"2"`` are one category); ``null`` is missing; anything else is of the wrong type;
* a missing, out-of-range or wrong-typed value is counted per series (data quality) and
  treated as missing: one odd field never drops a prediction. Feature keys the model does
  not declare are counted as schema violations of the model;
* invalid UTF-8, JSON nested deeper than about a thousand levels and any other malformed
  JSON reject the record as ``bad_json``; an unexpected error while handling one record
  rejects that record as ``internal_error`` (with the exception's type), never the batch.

Well-formed records take one C-level pass (msgspec, typed per model); the rest take a
lenient path that explains what is wrong.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import msgspec
import numpy as np
import orjson
from msgspec.structs import astuple

from monitor.config.plan import ModelPlan
from monitor.config.schema import PREDICTION, Config
from monitor.ingest.timestamps import MAX_FUTURE_S, TimestampError, parse_ts
from monitor.logs import Throttle

log = logging.getLogger("driftline.decode")

REJECT_REASONS = (
    "oversized",
    "empty",
    "bad_json",
    "not_an_object",
    "missing_model",
    "missing_features",
    "unknown_model",
    "wrong_type",
    "bad_timestamp",
    "missing_id",
    "missing_label",
    "internal_error",
)

# What a series' value can be, besides usable: the data-quality counters of a series.
QUALITY = ("missing", "wrong_type", "out_of_range")


@dataclass(frozen=True)
class Rejected:
    """A record that could not be used: its position in the input and why."""

    index: int
    reason: str
    detail: str
    model: str | None = None  # when the record got as far as naming a configured model


def internal_error(index: int, exc: BaseException) -> Rejected:
    """A record whose handling raised unexpectedly: rejected, with the exception's type."""
    return Rejected(index, "internal_error", f"{type(exc).__name__}: {str(exc)[:300]}")


@dataclass
class ModelBatch:
    """The usable records of one model in one input batch, column by column.

    ``numeric`` is ``(n, n_numeric)`` float64 with NaN for missing; ``categorical`` holds
    one list of canonical strings (None = missing) per categorical series. The quality
    arrays count, per series, the values of this batch that were missing, of the wrong
    type or out of range.
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
    out_of_range: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    schema_violations: int = 0
    predictions: list[Any] = field(default_factory=list)  # as sent, for the label join

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
            out_of_range=np.zeros_like(self.out_of_range),
        )


# -- values --------------------------------------------------------------------------------
_MISSING, _WRONG, _OUT = 0, 1, 2  # what a value that is not usable counts as


def numeric_value(v: Any) -> float | int:
    """A numeric series' value: a float, or a code (``_MISSING``, ``_WRONG``, ``_OUT``)
    as an int when unusable.

    >>> numeric_value(41), numeric_value(float("nan")), numeric_value(float("inf"))
    (41.0, 0, 2)
    >>> numeric_value(10**400), numeric_value("41"), numeric_value(True)
    (2, 1, 1.0)
    """
    if v is None:
        return _MISSING
    if isinstance(v, float):
        if v != v:
            return _MISSING
        return v if v - v == 0.0 else _OUT  # inf - inf is NaN
    if isinstance(v, int):  # bool included: 1.0 / 0.0
        try:
            return float(v)
        except OverflowError:
            return _OUT
    return _WRONG


def category_value(v: Any) -> str | int:
    """A categorical series' value as its canonical string, or a code when unusable.

    >>> category_value(2), category_value("2"), category_value(2.0), category_value(True)
    ('2', '2', '2', 'true')
    >>> category_value(None), category_value([1]), category_value(float("inf"))
    (0, 1, 2)
    """
    if isinstance(v, str):
        return v
    if v is None:
        return _MISSING
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return _MISSING
        if v - v != 0.0:
            return _OUT
        return str(int(v)) if v.is_integer() else repr(v)
    return _WRONG


class ModelSchema:
    """The series one model declares, split by type (the prediction is one of them)."""

    def __init__(self, plan: ModelPlan) -> None:
        self.model = plan.name
        self.numeric = plan.numeric
        self.categorical = plan.categorical
        self.series = self.numeric + self.categorical  # quality counters use this order
        self.features = set(plan.features)
        self.num_features = [n for n in self.numeric if n != PREDICTION]
        self.cat_features = [n for n in self.categorical if n != PREDICTION]
        self.prediction_type = (
            "numeric"
            if PREDICTION in self.numeric
            else "categorical"
            if PREDICTION in self.categorical
            else None
        )

    def columns(self, records: list[dict[str, Any]]) -> ModelBatch:
        """Columns from already parsed records (``{"features": {...}, "prediction": ...}``)."""
        batch = ModelBatch(self.model)
        counts = np.zeros((3, len(self.series)), dtype=np.int64)
        rows = [self.row(rec["features"], counts)[0] for rec in records]
        self.fill(batch, rows, [rec.get(PREDICTION) for rec in records], counts)
        return batch

    def row(self, feats: dict[str, Any], counts: np.ndarray) -> tuple[tuple[Any, ...], bool]:
        """One record's feature values as the typed path gives them (numeric features as
        float or None, then categorical ones as canonical strings or None), checking each
        value; unusable values are counted into ``counts[kind, series]``. Also whether the
        record carries keys the model does not declare."""
        vals: list[Any] = []
        for k, name in enumerate(self.num_features):
            v = numeric_value(feats.get(name))
            if v.__class__ is int:
                counts[v, k] += v != _MISSING  # missing ones are counted from the NaN
                vals.append(None)
            else:
                vals.append(v)
        base = len(self.numeric)
        for k, name in enumerate(self.cat_features):
            c = category_value(feats.get(name))
            if c.__class__ is int:
                counts[c, base + k] += c != _MISSING
                vals.append(None)
            else:
                vals.append(c)
        return tuple(vals), not feats.keys() <= self.features

    def fill(
        self,
        batch: ModelBatch,
        rows: list[tuple[Any, ...]],
        preds: list[Any],
        counts: np.ndarray,
        violations: int = 0,
    ) -> None:
        """Set ``batch``'s columns and quality counts from checked rows (see :meth:`row`;
        the typed path gives numeric values as float or None and categorical ones as str,
        a number or None) and the raw predictions; ``counts`` holds the wrong-type and
        out-of-range counts found so far."""
        n = len(rows)
        n_num = len(self.num_features)
        num = np.array([r[:n_num] for r in rows], dtype=np.float64).reshape(n, n_num)
        # What the label join gets: the prediction as sent when usable, else None.
        clean = [p if p is None or _usable_prediction(p) else None for p in preds]
        if self.prediction_type == "numeric":
            col = np.full(n, np.nan)
            j = n_num
            for i, p in enumerate(preds):
                v = numeric_value(p)
                if v.__class__ is int:
                    counts[v, j] += v != _MISSING
                    clean[i] = None
                else:
                    col[i] = v
            num = np.column_stack([num, col])
        cats: list[list[str | None]] = []
        base = len(self.numeric)
        for k in range(len(self.cat_features)):
            col_values: list[str | None] = []
            for r in rows:
                c = category_value(r[n_num + k])  # the typed path may give a float
                if c.__class__ is int:
                    counts[c, base + k] += c != _MISSING
                    col_values.append(None)
                else:
                    col_values.append(c)  # type: ignore[arg-type]
            cats.append(col_values)
        if self.prediction_type == "categorical":
            col_values = []
            j = len(self.series) - 1
            for i, p in enumerate(preds):
                c = category_value(p)
                if c.__class__ is int:
                    counts[c, j] += c != _MISSING
                    col_values.append(None)
                    clean[i] = None
                else:
                    col_values.append(c)  # type: ignore[arg-type]
            cats.append(col_values)
        missing = np.zeros(len(self.series), dtype=np.int64)
        missing[: len(self.numeric)] = np.isnan(num).sum(axis=0)
        for k, col_values in enumerate(cats):
            missing[base + k] = sum(v is None for v in col_values)
        missing -= counts[_WRONG] + counts[_OUT]
        batch.numeric = num
        batch.categorical = cats
        batch.missing = missing
        batch.wrong_type = counts[_WRONG].copy()
        batch.out_of_range = counts[_OUT].copy()
        batch.schema_violations = violations
        batch.predictions = clean


def _usable_prediction(p: Any) -> bool:
    if isinstance(p, float):
        return p - p == 0.0  # finite
    return isinstance(p, str | int)


# -- the envelope ----------------------------------------------------------------------------
class _Envelope(msgspec.Struct):
    """The record's outer object, validated in C; ``features`` stays raw bytes."""

    model: str
    features: msgspec.Raw
    id: str | int | None = None
    ts: float | str | None = None
    prediction: float | str | None = None
    label: Any = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)


class _NoModel(msgspec.Struct, tag_field="model", tag="\x00never"):
    """Sentinel member of the event union (see Decoder)."""


class _FastFeatures:
    """A model's features as a typed struct: numbers for numeric features, strings or
    numbers for categorical ones, unknown keys refused. A record that does not fit takes the
    lenient path instead (which counts what is wrong)."""

    def __init__(self, schema: ModelSchema) -> None:
        names = schema.num_features + schema.cat_features
        n_num = len(schema.num_features)
        fields: list[tuple[str, Any, None]] = [(f"f{i}", float | None, None) for i in range(n_num)]
        fields += [
            (f"f{n_num + i}", str | int | float | None, None)
            for i in range(len(schema.cat_features))
        ]
        struct = msgspec.defstruct(
            f"Features_{abs(hash(schema.model))}",
            fields,
            rename={f"f{i}": n for i, n in enumerate(names)},
            forbid_unknown_fields=True,
        )
        self.decoder = msgspec.json.Decoder(struct)
        # The whole event with typed features, tagged by its model: one C-level pass.
        self.event = msgspec.defstruct(
            f"Event_{abs(hash(schema.model))}",
            [
                ("features", struct),
                ("id", str | int | None, None),
                ("ts", float | str | None, None),
                ("prediction", float | str | None, None),
                ("label", Any, None),
            ],
            tag_field="model",
            tag=schema.model,
        )


@dataclass
class _Parsed:
    """One record's envelope after the lenient path."""

    model: str
    id: str | None
    ts: Any
    prediction: Any
    label: Any
    row: tuple[Any, ...]
    violation: bool
    counts: np.ndarray | None = None  # unusable values found, by kind and series


def _json(raw: bytes) -> Any:
    """The lenient parse: Python's json, which takes NaN and Infinity literals and any
    number (an overflowing one becomes inf). Raises _Bad."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise _Bad("bad_json", "JSON nested too deeply (about 1,000 levels at most)") from None
    except UnicodeDecodeError as exc:
        raise _Bad("bad_json", f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:  # json.JSONDecodeError
        raise _Bad("bad_json", f"not valid JSON: {exc}") from None


class _Bad(Exception):
    def __init__(self, reason: str, detail: str, model: str | None = None) -> None:
        self.reason, self.detail, self.model = reason, detail, model


def _plausible(seconds: float, horizon: float) -> float:
    """A Kafka record's timestamp as event time, or NaN when it cannot be one (producers
    set it freely: before 1970 or beyond ``horizon`` it is ignored, never rejected)."""
    return seconds if 0.0 <= seconds <= horizon else math.nan


def _check_id(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _Bad("wrong_type", f"'id' must be a string or an integer, got {type(value).__name__}")


class Decoder:
    """Turns a batch of record values into per-model column batches and rejections.

    ``clock`` and ``max_future_s`` bound event times (see :mod:`monitor.ingest.timestamps`);
    ``record_ts`` passed to :meth:`decode` is the event time of records without ``ts``
    (the Kafka record timestamps, in seconds; NaN where none).
    """

    def __init__(
        self,
        plans: dict[str, ModelPlan],
        *,
        max_record_bytes: int = 1_000_000,
        clock: Callable[[], float] = time.time,
        max_future_s: float | None = MAX_FUTURE_S,
    ) -> None:
        self.max_bytes = max_record_bytes
        self.clock = clock
        self.max_future_s = max_future_s
        self.schemas = {name: ModelSchema(p) for name, p in plans.items()}
        self._fast = {name: _FastFeatures(s) for name, s in self.schemas.items()}
        # A union needs the tag (a lone tagged struct would take records without one), so a
        # sentinel no event can match keeps it a union even for a single model.
        events = (*(f.event for f in self._fast.values()), _NoModel)
        self._model_of = {f.event: name for name, f in self._fast.items()}
        self._events = msgspec.json.Decoder(Union[events])  # noqa: UP007 - a runtime tuple
        self._throttle = Throttle(log, period_s=30.0)

    @classmethod
    def of(cls, config: Config, **options: Any) -> Decoder:
        """A decoder for every model of a configuration."""
        from monitor.config.plan import plan

        return cls(plan(config), max_record_bytes=config.kafka.max_record_bytes, **options)

    def decode(
        self, values: Sequence[bytes | None], record_ts: Sequence[float] | None = None
    ) -> tuple[dict[str, ModelBatch], list[Rejected]]:
        pending: dict[str, _Pending] = {}
        rejected: list[Rejected] = []
        max_bytes = self.max_bytes
        now = self.clock()
        horizon = math.inf if self.max_future_s is None else now + self.max_future_s
        fast_ts_below = min(1e11, horizon)
        events, model_of = self._events, self._model_of
        for i, raw in enumerate(values):
            model = None
            try:
                if not raw:
                    rejected.append(Rejected(i, "empty", "the record has no value"))
                    continue
                if len(raw) > max_bytes:
                    rejected.append(
                        Rejected(i, "oversized", f"{len(raw)} bytes > max_record_bytes {max_bytes}")
                    )
                    continue
                try:  # the common case: the whole event fits its model's typed struct
                    ev = events.decode(raw)
                    model = model_of[type(ev)]
                    rid, ts, row, violation = ev.id, ev.ts, astuple(ev.features), False
                    pred, label, counts = ev.prediction, ev.label, None
                    if rid.__class__ is int:
                        rid = str(rid)
                except (msgspec.DecodeError, RecursionError):
                    parsed = self._lenient(raw)
                    model, rid, ts, row = parsed.model, parsed.id, parsed.ts, parsed.row
                    pred, label, violation = parsed.prediction, parsed.label, parsed.violation
                    counts = parsed.counts
                if ts.__class__ is float and 0.0 <= ts < fast_ts_below:
                    pass  # seconds, plausible: the common case
                elif ts is None:
                    ts = math.nan if record_ts is None else _plausible(record_ts[i], horizon)
                else:
                    ts = parse_ts(ts, now=now, max_future_s=self.max_future_s)
                p = pending.get(model)
                if p is None:
                    p = pending[model] = _Pending(model, len(self.schemas[model].series))
                p.add(i, rid, ts, pred, label, row, violation, counts)
            except _Bad as bad:
                rejected.append(Rejected(i, bad.reason, bad.detail, bad.model))
            except TimestampError as exc:
                rejected.append(Rejected(i, "bad_timestamp", f"'ts': {exc}", model))
            except Exception as exc:  # a bug: reject this record, never the batch
                rejected.append(internal_error(i, exc))
                self._throttle.exception("internal error decoding record %d: %r", i, exc)
        out: dict[str, ModelBatch] = {}
        for model, p in pending.items():
            try:
                self.schemas[model].fill(p.batch, p.rows, p.preds, p.counts, p.violations)
                out[model] = p.batch
            except Exception as exc:  # a bug: these records are rejected, nothing else
                self._throttle.exception("internal error building model %s's batch", model)
                rejected.extend(internal_error(i, exc) for i in p.batch.index)
                rejected.sort(key=lambda r: r.index)
        return out, rejected

    def _lenient(self, raw: bytes) -> _Parsed:
        """A record that does not fit the typed union: its parts, checked one by one, or
        _Bad saying why it is rejected."""
        try:
            env = _ENVELOPE.decode(raw)
        except msgspec.ValidationError:  # valid JSON, other types: say which, value by value
            return self._from_document(_json(raw))
        except RecursionError:
            raise _Bad("bad_json", "JSON nested too deeply (about 1,000 levels at most)") from None
        except msgspec.DecodeError as exc:
            # Malformed for msgspec. Python's json also takes the NaN and Infinity literals
            # some producers write (Python's own json.dumps does): only then try it, since a
            # failing parse costs five times a good record.
            if b"NaN" in raw or b"Infinity" in raw:
                return self._from_document(_json(raw))
            raise _Bad("bad_json", str(exc)) from None
        schema = self.schemas.get(env.model)
        if schema is None:
            raise _Bad("unknown_model", f"model {env.model[:200]!r} is not configured")
        fast = self._fast[env.model]
        try:
            row = astuple(fast.decoder.decode(env.features))
            return _Parsed(
                env.model, _check_id(env.id), env.ts, env.prediction, env.label, row, False
            )
        except (msgspec.DecodeError, RecursionError):
            pass
        try:
            feats = orjson.loads(bytes(env.features))
        except orjson.JSONDecodeError:
            feats = _json(bytes(env.features))
        return self._checked(env.model, _check_id(env.id), env.ts, env.prediction, env.label, feats)

    def _from_document(self, doc: Any) -> _Parsed:
        model = _model_of(doc, "record")
        if model not in self.schemas:
            raise _Bad("unknown_model", f"model {model[:200]!r} is not configured")
        if "features" not in doc or doc["features"] is None:
            raise _Bad("missing_features", "the record has no 'features'", model)
        return self._checked(
            model,
            _check_id(doc.get("id")),
            doc.get("ts"),
            doc.get("prediction"),
            doc.get("label"),
            doc["features"],
        )

    def _checked(
        self, model: str, rid: str | None, ts: Any, pred: Any, label: Any, feats: Any
    ) -> _Parsed:
        if not isinstance(feats, dict):
            raise _Bad(
                "wrong_type", f"'features' must be an object, got {type(feats).__name__}", model
            )
        if isinstance(ts, float) and ts != ts:
            raise _Bad("bad_timestamp", "'ts' is NaN", model)
        schema = self.schemas[model]
        counts = np.zeros((3, len(schema.series)), dtype=np.int64)
        row, violation = schema.row(feats, counts)
        return _Parsed(model, rid, ts, pred, label, row, violation, counts)


class _Pending:
    """The accepted records of one model in the batch being decoded."""

    def __init__(self, model: str, n_series: int) -> None:
        self.batch = ModelBatch(model)
        self.rows: list[tuple[Any, ...]] = []
        self.preds: list[Any] = []
        self.counts = np.zeros((3, n_series), dtype=np.int64)
        self.violations = 0

    def add(
        self,
        i: int,
        rid: str | None,
        ts: float,
        pred: Any,
        label: Any,
        row: tuple[Any, ...],
        violation: bool,
        counts: np.ndarray | None,
    ) -> None:
        if counts is not None:
            self.counts += counts
        self.violations += violation
        self.rows.append(row)
        self.preds.append(pred)
        b = self.batch
        b.index.append(i)
        b.ids.append(rid)
        b.ts.append(ts)
        b.labels.append(label)


# -- labels ------------------------------------------------------------------------------------
class _LabelRecord(msgspec.Struct):
    model: str
    id: str | int
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
    values: Sequence[bytes | None],
    models: Any,
    max_bytes: int,
    *,
    record_ts: Sequence[float] | None = None,
    now: float | None = None,
    max_future_s: float | None = MAX_FUTURE_S,
) -> tuple[list[LabelEvent], list[Rejected]]:
    """Label records ``{"model", "id", "label", "ts"}``; rejections as for predictions."""
    out: list[LabelEvent] = []
    rejected: list[Rejected] = []
    clock = time.time() if now is None else now
    for i, raw in enumerate(values):
        try:
            if not raw:
                rejected.append(Rejected(i, "empty", "the record has no value"))
                continue
            if len(raw) > max_bytes:
                rejected.append(Rejected(i, "oversized", f"{len(raw)} bytes > max_record_bytes"))
                continue
            try:
                rec = _LABEL.decode(raw)
                model, rid, label, ts = rec.model, rec.id, rec.label, rec.ts
            except (msgspec.DecodeError, RecursionError):
                model, rid, label, ts = _label_document(_json(raw))
            if model not in models:
                rejected.append(
                    Rejected(i, "unknown_model", f"model {str(model)[:200]!r} is not configured")
                )
                continue
            label_id = _check_id(rid)
            if label_id is None:
                rejected.append(Rejected(i, "missing_id", "the label has no 'id'", model))
                continue
            if label is None:
                rejected.append(Rejected(i, "missing_label", "'label' is null", model))
                continue
            if ts is None:
                horizon = math.inf if max_future_s is None else clock + max_future_s
                seconds = math.nan if record_ts is None else _plausible(record_ts[i], horizon)
            else:
                seconds = parse_ts(ts, now=clock, max_future_s=max_future_s)
            out.append(LabelEvent(model, label_id, label, seconds))
        except _Bad as bad:
            rejected.append(Rejected(i, bad.reason, bad.detail))
        except TimestampError as exc:
            rejected.append(Rejected(i, "bad_timestamp", f"'ts': {exc}"))
        except Exception as exc:  # a bug: reject this record, never the batch
            rejected.append(internal_error(i, exc))
            log.exception("internal error decoding label record %d", i)
    return out, rejected


def _model_of(doc: Any, what: str) -> str:
    """The ``model`` of a parsed document, or _Bad saying what is wrong with it."""
    if not isinstance(doc, dict):
        raise _Bad("not_an_object", f"the {what} is a JSON {type(doc).__name__}, not an object")
    model = doc.get("model")
    if model is None:
        raise _Bad("missing_model", f"the {what} has no 'model'")
    if not isinstance(model, str):
        raise _Bad("wrong_type", f"'model' must be a string, got {type(model).__name__}")
    return model


def _label_document(doc: Any) -> tuple[Any, Any, Any, Any]:
    model = _model_of(doc, "label")
    if "label" not in doc:
        raise _Bad("missing_label", "the label record has no 'label'")
    return model, doc.get("id"), doc.get("label"), doc.get("ts")
