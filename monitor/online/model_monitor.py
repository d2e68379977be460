"""Per-model monitoring: warm-up into a reference, then a bank of detectors over every
series; re-baselines that make a new reference while monitoring goes on.

A :class:`ModelMonitor` counts the model's events (its *event index* orders everything the
alert policy does, so replays of the same stream give the same alerts), collects the
reference during warm-up (or loads it from a file), then feeds each batch to a
:class:`~monitor.online.bank.DetectorBank`. It keeps the model's most recent events
(:class:`~monitor.online.recent.RecentValues`) so that a drift accepted as the new normal
can become the reference at once (:meth:`ModelMonitor.rebaseline_recent`), or from the
next events (:meth:`ModelMonitor.rebaseline_next`: the series re-baselined raise no
detection until their new reference is complete; the others are watched throughout).

>>> from monitor.config.schema import parse_config
>>> from monitor.ingest.decode import Decoder
>>> from monitor.config.plan import plan
>>> cfg = parse_config({"kafka": {"topic": "p"}, "defaults": {"reference": {"warmup": 500},
...     "detectors": ["ks"]}, "models": {"m": {"features": {"x": "numeric"}}}}, env={})
>>> rng = np.random.default_rng(0)
>>> events = [f'{{"model": "m", "features": {{"x": {v}}}}}'.encode()
...           for v in np.r_[rng.normal(0, 1, 1000), rng.normal(2, 1, 500)]]
>>> mon = ModelMonitor(plan(cfg)["m"])
>>> detections, view = mon.process(Decoder.of(cfg).decode(events)[0]["m"])
>>> mon.ready, detections[0].event, detections[0].detector
(True, 1199, 'ks')
>>> mon.rebaseline_recent(500, None, made_at="2026-12-01T00:00:00Z").version
2
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import numpy as np

from monitor.config.plan import ModelPlan
from monitor.errors import CheckpointError
from monitor.ingest.decode import ModelBatch, ModelSchema
from monitor.ingest.timestamps import iso
from monitor.online.bank import RECENT, BankView, Detection, DetectorBank
from monitor.online.recent import RecentValues
from monitor.online.reference import (
    MIN_REFERENCE_VALUES,
    Reference,
    ReferenceInfo,
    merged,
    read_reference_file,
)


class RebaselineError(ValueError):
    """A re-baseline that cannot be done now; ``status`` is the HTTP status that says so."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class Collector:
    """Events gathered for a reference, up to ``wanted``."""

    def __init__(self, wanted: int, n_numeric: int, n_categorical: int) -> None:
        self.wanted = wanted
        self.n_numeric = n_numeric
        self.numeric: list[np.ndarray] = []
        self.categorical: list[list[str | None]] = [[] for _ in range(n_categorical)]
        self.n = 0

    @property
    def complete(self) -> bool:
        return self.n >= self.wanted

    def take(self, batch: ModelBatch, start: int = 0) -> int:
        """Take rows of ``batch`` from ``start`` until complete; returns how many."""
        taken = min(len(batch) - start, self.wanted - self.n)
        if taken <= 0:
            return 0
        self.numeric.append(batch.numeric[start : start + taken])
        for j, col in enumerate(batch.categorical):
            self.categorical[j].extend(col[start : start + taken])
        self.n += taken
        return taken

    def values(self) -> tuple[np.ndarray, list[list[str | None]]]:
        num = np.concatenate(self.numeric) if self.numeric else np.empty((0, self.n_numeric))
        return num.reshape(self.n, self.n_numeric), self.categorical  # rows known: k may be 0

    def export_state(self) -> dict[str, Any]:
        num, cat = self.values()
        return {"n": self.n, "numeric": num, "categorical": [list(c) for c in cat]}

    def load_state(self, state: dict[str, Any]) -> None:
        self.n = int(state["n"])
        num = np.asarray(state["numeric"], dtype=np.float64)
        self.numeric = [num.reshape(self.n, self.n_numeric)] if self.n else []
        self.categorical = [list(c) for c in state["categorical"]]


def series_of(schema: ModelSchema, features: Iterable[str] | None) -> tuple[str, ...] | None:
    """The configured series named (None: all); RebaselineError (400) for others."""
    if features is None:
        return None
    names = tuple(dict.fromkeys(features))
    unknown = [f for f in names if f not in schema.series]
    if unknown or not names:
        raise RebaselineError(
            f"no series {unknown} in model {schema.model} (series: {', '.join(schema.series)})"
            if unknown
            else "features, when given, must name at least one series",
            400,
        )
    return names


class ModelMonitor:
    """One model: its event counter, data-quality counters, reference and detectors."""

    def __init__(self, plan: ModelPlan) -> None:
        self.plan = plan
        self.model = plan.name
        self.schema = ModelSchema(plan)
        n = len(self.schema.series)
        n_num, n_cat = len(self.schema.numeric), len(self.schema.categorical)
        self.events = 0  # events accepted so far: the next event's index
        self.missing = np.zeros(n, dtype=np.int64)
        self.wrong_type = np.zeros(n, dtype=np.int64)
        self.out_of_range = np.zeros(n, dtype=np.int64)
        self.schema_violations = 0
        self.bank: DetectorBank | None = None
        self.reference: Reference | None = None
        self.info = ReferenceInfo()
        self.warmup = plan.warmup or 0
        self._warm = Collector(self.warmup, n_num, n_cat)
        self.recent = RecentValues(plan.keep_recent, n_num, n_cat)
        # A re-baseline from the next events: the series (None: all) and what is gathered.
        self.pending: tuple[tuple[str, ...] | None, str | None, Collector] | None = None
        self.file_reference: Reference | None = None
        self.file_sha256: str | None = None  # of the reference file when last taken
        if plan.reference_file is not None:
            self.file_reference = read_reference_file(plan.reference_file, self.schema)
            self._ready(self.file_reference)
            self.file_sha256 = self.file_reference.sha256
            self.info = ReferenceInfo(
                source="file", events=self.file_reference.n_events, sha256=self.file_sha256
            )

    @property
    def ready(self) -> bool:
        return self.bank is not None

    @property
    def reference_events(self) -> int:
        return self._warm.n if self.reference is None else self.reference.n_events

    def _ready(self, reference: Reference, saved: dict[str, Any] | None = None) -> None:
        self.reference = reference
        self.bank = DetectorBank(self.plan, self.schema, reference, saved)
        self._warm = Collector(self.warmup, len(self.schema.numeric), len(self.schema.categorical))

    # -- re-baselining ---------------------------------------------------------------------
    def rebaseline_recent(
        self, n: int, features: Iterable[str] | None, *, made_at: str
    ) -> ReferenceInfo:
        """Make the last ``n`` events the reference of ``features`` (all when None)."""
        names = series_of(self.schema, features)
        if self.reference is None:
            raise RebaselineError(
                f"model {self.model} is still warming up its first reference "
                f"({self._warm.n} of {self.warmup} events); re-baseline once it is ready"
            )
        if n < MIN_REFERENCE_VALUES:
            raise RebaselineError(f"events must be at least {MIN_REFERENCE_VALUES}", 400)
        if n > self.recent.size:
            raise RebaselineError(
                f"only the last {self.recent.size} events are kept (reference.keep_recent); "
                f"ask for at most that many, or re-baseline from the next {n} events",
                400,
            )
        if n > self.recent.available:
            raise RebaselineError(
                f"only {self.recent.available} recent events of model {self.model} are kept "
                f"so far (asked for {n}); ask for fewer, or re-baseline from the next events"
            )
        num, cat = self.recent.last(n)
        return self._apply(
            merged(self.reference, num, cat, self.schema, names), "recent", names, made_at
        )

    def rebaseline_next(self, n: int, features: Iterable[str] | None, *, made_at: str) -> None:
        """Make the next ``n`` events the reference of ``features`` once they have come;
        until then those series raise no detection."""
        names = series_of(self.schema, features)
        if self.reference is None:
            raise RebaselineError(
                f"model {self.model} is still warming up its first reference "
                f"({self._warm.n} of {self.warmup} events): it is made from the next events "
                "already"
            )
        if n < MIN_REFERENCE_VALUES:
            raise RebaselineError(f"events must be at least {MIN_REFERENCE_VALUES}", 400)
        n_num, n_cat = len(self.schema.numeric), len(self.schema.categorical)
        self.pending = (names, made_at, Collector(n, n_num, n_cat))

    def rebaseline_file(self, reference: Reference, *, made_at: str) -> ReferenceInfo:
        """Make a reference file's content the reference (the file changed)."""
        self.file_sha256 = reference.sha256
        return self._apply(reference, "file", None, made_at)

    def _apply(
        self,
        reference: Reference,
        source: str,
        features: tuple[str, ...] | None,
        made_at: str | None,
    ) -> ReferenceInfo:
        old = self.bank
        self._ready(reference)
        assert self.bank is not None
        if old is not None:  # counters and recent values go on
            self.bank.outliers[...] = old.outliers
            self.bank.unseen[...] = old.unseen
        self.bank.seed_recent(*self.recent.last(RECENT))
        self.pending = None
        self.info = ReferenceInfo(
            version=self.info.version + 1,
            source=source,
            made_at=made_at,
            at_event=self.events,
            events=reference.n_events,
            sha256=reference.sha256,
            features=features,
        )
        return self.info

    def retune(self, plan: ModelPlan) -> None:
        """Take a plan that differs in tunable detector parameters only (a reload): each
        detector keeps its windows under its new thresholds."""
        self.plan = plan
        if self.bank is not None and self.reference is not None:
            self.bank = DetectorBank(plan, self.schema, self.reference, self.bank.export_state())

    # -- state -----------------------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        """Plain data: everything that determines this model's future output."""
        ref = self.reference
        pending = self.pending
        return {
            "kind": "model_monitor",
            "version": 1,
            "events": self.events,
            "missing": self.missing.copy(),
            "wrong_type": self.wrong_type.copy(),
            "out_of_range": self.out_of_range.copy(),
            "schema_violations": self.schema_violations,
            "warmup": self._warm.export_state(),
            "reference": None
            if ref is None
            else {"numeric": ref.numeric.copy(), "categorical": [list(c) for c in ref.categorical]},
            "bank": None if self.bank is None else self.bank.export_state(),
            "info": self.info.to_dict(),
            "file_sha256": self.file_sha256,
            "recent": self.recent.export_state(),
            "pending": None
            if pending is None
            else {
                "features": None if pending[0] is None else list(pending[0]),
                "made_at": pending[1],
                "wanted": pending[2].wanted,
                "collected": pending[2].export_state(),
            },
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`export_state`: the detector bank is rebuilt from the plan and the
        saved reference, then each detector takes its saved state. (Checkpoints made before
        re-baselines existed load too: no recent events, reference version 1.)"""
        if state.get("kind") != "model_monitor" or state.get("version") != 1:
            raise CheckpointError(f"not a model monitor state of version 1: {state.get('kind')}")
        self.events = int(state["events"])
        for name in ("missing", "wrong_type", "out_of_range"):
            getattr(self, name)[...] = state[name]
        self.schema_violations = int(state["schema_violations"])
        self.bank = None
        self.reference = None
        self._warm.load_state(state["warmup"])
        info = state.get("info")
        self.info = (
            ReferenceInfo(source="file" if self.plan.reference_file else "warmup")
            if info is None
            else ReferenceInfo.from_dict(info)
        )
        self.recent.load_state(state.get("recent"))
        self.file_sha256 = state.get("file_sha256")
        ref = state["reference"]
        if ref is not None:
            reference = Reference(
                self.model,
                np.asarray(ref["numeric"], dtype=np.float64),
                [list(c) for c in ref["categorical"]],
                sha256=self.info.sha256,
            )
            warm = self._warm
            self._ready(reference, state["bank"])
            self._warm = warm
        pending = state.get("pending")
        self.pending = None
        if pending is not None:
            collector = Collector(
                int(pending["wanted"]), len(self.schema.numeric), len(self.schema.categorical)
            )
            collector.load_state(pending["collected"])
            feats = pending["features"]
            self.pending = (None if feats is None else tuple(feats), pending["made_at"], collector)

    # -- events ----------------------------------------------------------------------------
    def process(
        self, batch: ModelBatch, on_ready: Callable[[ModelMonitor], None] | None = None
    ) -> tuple[list[Detection], BankView | None]:
        """Warm up or detect, then count; returns the batch's detections and the view the
        alert policy needs (None while warming up)."""
        found = self._process(batch, on_ready)
        self.missing += batch.missing
        self.wrong_type += batch.wrong_type
        self.out_of_range += batch.out_of_range
        self.schema_violations += batch.schema_violations
        self.events += len(batch)
        self.recent.push(batch.numeric, batch.categorical)
        if self.pending is not None and self.pending[2].complete:
            names, made_at, collector = self.pending
            assert self.reference is not None
            num, cat = collector.values()
            self._apply(
                merged(self.reference, num, cat, self.schema, names), "next", names, made_at
            )
        return found

    def _process(
        self, batch: ModelBatch, on_ready: Callable[[ModelMonitor], None] | None
    ) -> tuple[list[Detection], BankView | None]:
        n = len(batch)
        start = self.events
        taken = 0
        if self.bank is None:
            taken = self._warm.take(batch)
            if not self._warm.complete:
                return [], None
            num, cat = self._warm.values()
            self._ready(Reference(self.model, num, cat))
            last_ts = batch.ts[taken - 1] if taken else np.nan
            self.info = replace(
                self.info,
                made_at=iso(last_ts) if np.isfinite(last_ts) else None,
                at_event=start + taken,
                events=self._warm.wanted,
            )
            if on_ready is not None:
                on_ready(self)
            if taken == n:
                return [], None
        assert self.bank is not None
        rest = batch if taken == 0 else batch.slice(taken, n)
        detections, view = self.bank.update(rest, start + taken)
        if self.pending is not None:
            names, _, collector = self.pending
            collector.take(rest)
            detections = [] if names is None else [d for d in detections if d.feature not in names]
        return detections, view
