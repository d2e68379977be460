"""A model's reference sample: what "no drift" looks like, per series.

It comes either from the model's first ``warmup`` events or from a file made by
``driftline reference build`` from training data. The file is JSON::

    {"format": "driftline-reference", "version": 1, "model": "credit-v1",
     "n_events": 5000,
     "series": {"salary": {"type": "numeric", "values": [52000.0, null, ...]},
                "elevel": {"type": "categorical", "values": ["2", "0", null, ...]}}}
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from monitor.config.plan import ModelPlan
from monitor.ingest.decode import ModelSchema

FORMAT = "driftline-reference"
VERSION = 1
MIN_REFERENCE_VALUES = 20  # usable values a series needs to be monitored


@dataclass(frozen=True)
class ReferenceInfo:
    """Where a model's reference came from: its ``version`` (1, then one more at each
    re-baseline), ``source`` (``warmup``, ``file``, ``recent`` or ``next``), when it was
    made (wall clock, RFC 3339) and at which event of the model, its size in events, the
    SHA-256 of its file (``file`` only) and the series it replaced (None: all)."""

    version: int = 1
    source: str = "warmup"
    made_at: str | None = None
    at_event: int = 0
    events: int = 0
    sha256: str | None = None
    features: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"] = None if self.features is None else list(self.features)
        return out

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ReferenceInfo:
        feats = doc.get("features")
        return cls(**{**doc, "features": None if feats is None else tuple(feats)})


@dataclass
class Reference:
    """Reference values of one model, in the order of its :class:`ModelSchema`."""

    model: str
    numeric: np.ndarray  # (n, n_numeric), NaN = missing
    categorical: list[list[str | None]]
    sha256: str | None = field(default=None, compare=False)  # of the file it was read from

    @property
    def n_events(self) -> int:
        return (
            int(self.numeric.shape[0])
            if self.numeric.size
            else len(self.categorical[0] if self.categorical else [])
        )

    def vocabulary(self, j: int, max_categories: int) -> dict[str, int]:
        """Codes of categorical series ``j``: the most frequent values first, capped; every
        other value (and any value never seen) maps to the unseen bucket."""
        counts = Counter(v for v in self.categorical[j] if v is not None)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_categories]
        return {value: code for code, (value, _) in enumerate(ranked)}

    def to_json(self, schema: ModelSchema) -> bytes:
        series: dict[str, Any] = {}
        for j, name in enumerate(schema.numeric):
            col = self.numeric[:, j]
            series[name] = {
                "type": "numeric",
                "values": [None if np.isnan(v) else float(v) for v in col],
            }
        for j, name in enumerate(schema.categorical):
            series[name] = {"type": "categorical", "values": self.categorical[j]}
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model,
            "n_events": self.n_events,
            "series": series,
        }
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, data: bytes, schema: ModelSchema) -> Reference:
        doc = orjson.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("not a driftline reference file")
        if doc.get("version") != VERSION:
            raise ValueError(
                f"reference file format version {doc.get('version')!r} is not supported "
                f"(this driftline reads version {VERSION}); rebuild it with "
                "'driftline reference build'"
            )
        if doc.get("model") != schema.model:
            raise ValueError(f"made for model {doc.get('model')!r}, not {schema.model!r}")
        series = doc["series"]
        missing = [n for n in schema.series if n not in series]
        if missing:
            raise ValueError(f"lacks series {missing}; rebuild it for this configuration")
        categorical = [list(series[n]["values"]) for n in schema.categorical]
        rows = len(series[schema.numeric[0]]["values"]) if schema.numeric else len(categorical[0])
        numeric = np.array(
            [
                [np.nan if v is None else float(v) for v in series[n]["values"]]
                for n in schema.numeric
            ],
            dtype=np.float64,
        ).T.reshape(rows, len(schema.numeric))  # rows known: a model may have no numeric series
        return cls(schema.model, numeric, categorical)


def unmonitorable(reference: Reference, schema: ModelSchema) -> dict[str, str]:
    """The series that a reference cannot monitor, and why: too few usable values (each
    needs ``MIN_REFERENCE_VALUES``; missing values and values of the wrong type do not
    count).

    >>> from monitor.config.schema import parse_config
    >>> from monitor.config.plan import plan
    >>> p = plan(parse_config({"kafka": {"topic": "t"},
    ...     "models": {"m": {"features": {"x": "numeric"}}}}, env={}))["m"]
    >>> unmonitorable(Reference("m", np.full((50, 1), np.nan), []), ModelSchema(p))
    {'x': 'only 0 usable reference values of 50 (needs 20)'}
    """
    n = reference.n_events
    valid = {
        name: int(np.count_nonzero(~np.isnan(reference.numeric[:, j])))
        for j, name in enumerate(schema.numeric)
    }
    valid.update(
        (name, sum(v is not None for v in reference.categorical[j]))
        for j, name in enumerate(schema.categorical)
    )
    return {
        name: f"only {k} usable reference values of {n} (needs {MIN_REFERENCE_VALUES})"
        for name, k in valid.items()
        if k < MIN_REFERENCE_VALUES
    }


def merged(
    old: Reference,
    new_numeric: np.ndarray,
    new_categorical: list[list[str | None]],
    schema: ModelSchema,
    features: Iterable[str] | None,
) -> Reference:
    """``old`` with the series in ``features`` (all when None) replaced by the new values;
    the shorter of the two is padded with missing values (detectors ignore them).

    >>> from monitor.config.schema import parse_config
    >>> from monitor.config.plan import plan
    >>> p = plan(parse_config({"kafka": {"topic": "t"},
    ...     "models": {"m": {"features": {"x": "numeric", "y": "numeric"}}}}, env={}))["m"]
    >>> old = Reference("m", np.zeros((2, 2)), [])
    >>> merged(old, np.ones((3, 2)), [], ModelSchema(p), ["y"]).numeric.tolist()
    [[0.0, 1.0], [0.0, 1.0], [nan, 1.0]]
    """
    if features is None:
        return Reference(old.model, new_numeric, new_categorical)
    chosen = set(features)
    n = max(old.n_events, new_numeric.shape[0] if schema.numeric else len(new_categorical[0]))
    numeric = np.full((n, len(schema.numeric)), np.nan)
    for j, name in enumerate(schema.numeric):
        col = new_numeric[:, j] if name in chosen else old.numeric[:, j]
        numeric[: col.shape[0], j] = col
    categorical = []
    for j, name in enumerate(schema.categorical):
        values = list(new_categorical[j] if name in chosen else old.categorical[j])
        categorical.append(values + [None] * (n - len(values)))
    return Reference(old.model, numeric, categorical)


def read_reference_file(path: Path, schema: ModelSchema) -> Reference:
    """The reference in ``path``; ValueError naming the file and what is wrong with it
    (unreadable, not a reference, another model's, lacking a series)."""
    try:
        data = path.read_bytes()
        ref = Reference.from_json(data, schema)
        ref.sha256 = hashlib.sha256(data).hexdigest()
        return ref
    except OSError as exc:
        raise ValueError(f"cannot read reference file {path}: {exc.strerror}") from None
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"reference file {path} is not valid: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"reference file {path}: {exc}") from None


def _rows_from_input(path: Path) -> Iterable[dict[str, Any]]:
    """Training data rows: CSV with a header, or JSON Lines (events or flat objects)."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                yield {k: _csv_value(v) for k, v in row.items()}
        return
    with path.open("rb") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object")
            if isinstance(obj.get("features"), dict):  # a prediction event
                flat = dict(obj["features"])
                if "prediction" in obj:
                    flat["prediction"] = obj["prediction"]
                yield flat
            else:
                yield obj


def _csv_value(v: str | None) -> Any:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        return v


def build_reference(plan: ModelPlan, path: Path, sample: int, seed: int = 0) -> Reference:
    """A reference for the model from training data (a seeded sample of ``sample`` rows)."""
    model = plan.name
    schema = ModelSchema(plan)
    rows = list(_rows_from_input(path))
    if not rows:
        raise ValueError(f"{path} holds no rows")
    absent = [n for n in schema.series if all(n not in r for r in rows[:1000])]
    if absent:
        raise ValueError(
            f"{path} has no column for {absent} (among its first rows); "
            f"columns seen: {sorted(rows[0])}"
        )
    if len(rows) > sample:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), sample, replace=False))
        rows = [rows[i] for i in keep]
    events = [{"features": r, "prediction": r.get("prediction")} for r in rows]
    batch = schema.columns(events)
    cats = [list(col) for col in batch.categorical]
    ref = Reference(model, batch.numeric, cats)
    bad = unmonitorable(ref, schema)
    if bad:
        lines = []
        for name, why in bad.items():
            j = schema.series.index(name)
            example = next(
                (
                    r[name]
                    for r in rows
                    if r.get(name) is not None and not _fits(r[name], name, schema)
                ),
                None,
            )
            lines.append(
                f"  {name}: {why}: {int(batch.wrong_type[j])} of the wrong type"
                + (f" (e.g. {str(example)[:40]!r})" if example is not None else "")
                + f", {int(batch.missing[j])} missing"
            )
        raise ValueError(
            f"{path}: {len(bad)} configured series could not be monitored with this data:\n"
            + "\n".join(lines)
            + "\nclean the column (numbers without units or separators), give the feature "
            "another type, or drop it from the configuration"
        )
    return ref


def _fits(value: Any, name: str, schema: ModelSchema) -> bool:
    """Whether a training value is of its series' type (numbers for numeric series)."""
    if name in schema.numeric:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def write_reference(ref: Reference, plan: ModelPlan, out: Path) -> None:
    out.write_bytes(ref.to_json(ModelSchema(plan)))


def describe(ref: Reference, schema: ModelSchema) -> str:
    """A one-line summary per series, for the CLI."""
    lines = [f"model {ref.model}: {ref.n_events} reference events"]
    for j, name in enumerate(schema.numeric):
        col = ref.numeric[:, j]
        ok = col[~np.isnan(col)]
        lines.append(
            f"  {name} (numeric): {ok.size} values, mean {ok.mean():.4g}, "
            f"p5 {np.percentile(ok, 5):.4g}, p95 {np.percentile(ok, 95):.4g}"
            if ok.size
            else f"  {name} (numeric): no values"
        )
    for j, name in enumerate(schema.categorical):
        counts = Counter(v for v in ref.categorical[j] if v is not None)
        top = ", ".join(f"{k} ({c})" for k, c in counts.most_common(5))
        lines.append(f"  {name} (categorical): {len(counts)} categories; top: {top}")
    return "\n".join(lines)
