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
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from monitor.config.plan import ModelPlan
from monitor.ingest.decode import ModelSchema

FORMAT = "driftline-reference"
VERSION = 1


@dataclass
class Reference:
    """Reference values of one model, in the order of its :class:`ModelSchema`."""

    model: str
    numeric: np.ndarray  # (n, n_numeric), NaN = missing
    categorical: list[list[str | None]]

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
            raise ValueError(
                f"reference file is for model {doc.get('model')!r}, not {schema.model!r}"
            )
        series = doc["series"]
        missing = [n for n in schema.series if n not in series]
        if missing:
            raise ValueError(f"reference file lacks series {missing}; rebuild it for this config")
        numeric = np.array(
            [
                [np.nan if v is None else float(v) for v in series[n]["values"]]
                for n in schema.numeric
            ],
            dtype=np.float64,
        ).T.reshape(-1, len(schema.numeric))
        categorical = [list(series[n]["values"]) for n in schema.categorical]
        return cls(schema.model, numeric, categorical)


def read_reference_file(path: Path, schema: ModelSchema) -> Reference:
    try:
        return Reference.from_json(path.read_bytes(), schema)
    except OSError as exc:
        raise ValueError(f"cannot read reference file {path}: {exc.strerror}") from None
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"reference file {path} is not valid: {exc}") from None


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
    return Reference(model, batch.numeric, cats)


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
