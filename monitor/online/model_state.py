"""Everything one model's future output depends on, in one object, exported as plain data.

A :class:`ModelState` holds the model's monitor (event count, data quality, reference,
detectors), its alert episodes, its label join and its production model's performance.
:meth:`~ModelState.export_state` gives plain, versioned data (numbers, strings, lists,
dicts and numpy arrays: never pickled objects of driftline's own classes), and
:meth:`~ModelState.from_state` refuses a state of another format version or made under
another plan of the model (its series, detectors, task: see ``ModelPlan.fingerprint``)
with a :class:`~monitor.errors.CheckpointError` saying so. The online learner's model is
not here: it lives in its own process and is checkpointed next to this state.

>>> from monitor.config.schema import parse_config
>>> from monitor.config.plan import plan
>>> p = plan(parse_config({"kafka": {"topic": "t"},
...     "models": {"m": {"features": {"x": "numeric"}}}}, env={}))["m"]
>>> state = ModelState(p)
>>> state.monitor.events = 7
>>> ModelState.from_state(p, state.export_state()).monitor.events
7
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from monitor.alerting.alerts import Alert
from monitor.alerting.policy import AlertPolicy, ModelAlerts
from monitor.config.plan import ModelPlan
from monitor.errors import CheckpointError
from monitor.online.labels import LabelJoin, Performance
from monitor.online.model_monitor import ModelMonitor, RebaselineError, series_of
from monitor.online.reference import ReferenceInfo

log = logging.getLogger("driftline.pipeline")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


VERSION = 1


class ModelState:
    def __init__(self, plan: ModelPlan) -> None:
        self.plan = plan
        self.name = plan.name
        labels = plan.labels
        self.monitor = ModelMonitor(plan)
        self.alerts = ModelAlerts(plan.name, plan.alerting)
        self.policy = AlertPolicy(plan.alerting)  # stateless: the rules for its episodes
        self.join = LabelJoin(labels.max_pending, labels.max_age_s)
        self.performance = Performance(plan.task, labels.window, labels.decay, labels.delta)  # type: ignore[arg-type]
        self.last_ts = math.nan  # event time of the newest event seen
        self.partition: int | None = None  # the partition whose state holds this model
        self.unsent: list[Alert] = []  # alerts made outside a batch (at a restore)

    def rebaseline(
        self, source: str, events: int, features: Sequence[str] | None, made_at: str
    ) -> tuple[ReferenceInfo | None, list[Alert]]:
        """Re-baseline from the ``recent`` or the ``next`` ``events`` (the series in
        ``features``, all when None): returns the new reference's info (None until the
        next events have come) and the resolved alerts of the series' open episodes.
        RebaselineError when it cannot be done now."""
        mon = self.monitor
        if source == "recent":
            info: ReferenceInfo | None = mon.rebaseline_recent(events, features, made_at=made_at)
        elif source == "next":
            mon.rebaseline_next(events, features, made_at=made_at)
            info = None
        else:
            raise RebaselineError(f"'from' must be 'recent' or 'next', not {source!r}", 400)
        return info, self._resolve(series_of(mon.schema, features))

    def _resolve(self, features: Sequence[str] | None) -> list[Alert]:
        bank = self.monitor.bank
        return self.policy.rebaselined(
            self.alerts,
            features,
            at=self.monitor.events,
            ts=self.last_ts,
            reference_summary=lambda f: None if bank is None else bank.ref_summary.get(f),
        )

    def reconfigure(self, plan: ModelPlan) -> None:
        """Take a reloaded plan of the same fingerprint (see ``monitor.config.reload``):
        alerting and thresholds apply at once; a changed reference file is followed
        (its resolved alerts go to ``unsent``): set ``monitor.file_reference`` to the file's
        content first (``commands.reconfigure`` reads every file before changing anything)."""
        self.plan = plan
        self.policy = AlertPolicy(plan.alerting)
        self.alerts.retune(plan.alerting)
        self.monitor.retune(plan)
        self.follow_file()

    def follow_file(self) -> None:
        """At a restore: a reference file whose content changed since the checkpoint
        replaces the checkpointed reference (its open episodes resolve, into ``unsent``)."""
        mon, fresh = self.monitor, self.monitor.file_reference
        if fresh is None or fresh.sha256 == mon.file_sha256:
            return
        log.warning(
            "model %s: reference file %s changed since the checkpoint (sha256 %s, now %s): "
            "it replaces the checkpointed reference",
            self.name,
            self.plan.reference_file,
            mon.file_sha256,
            fresh.sha256,
            extra={"model": self.name},
        )
        mon.rebaseline_file(fresh, made_at=now_iso())
        self.unsent += self._resolve(None)

    def export_state(self) -> dict[str, Any]:
        return {
            "kind": "model",
            "version": VERSION,
            "model": self.name,
            "fingerprint": self.plan.fingerprint(),
            "partition": self.partition,
            "last_ts": self.last_ts,
            "monitor": self.monitor.export_state(),
            "alerts": self.alerts.export_state(),
            "join": self.join.export_state(),
            "performance": self.performance.export_state(),
        }

    @classmethod
    def from_state(cls, plan: ModelPlan, state: dict[str, Any]) -> ModelState:
        if state.get("kind") != "model":
            raise CheckpointError(f"not a model state: {state.get('kind')!r}")
        if state.get("version") != VERSION:
            raise CheckpointError(
                f"model state format version {state.get('version')!r} is not supported "
                f"(this driftline reads version {VERSION})"
            )
        if state.get("fingerprint") not in (plan.fingerprint(), plan.fingerprint(legacy=True)):
            raise CheckpointError(
                f"model {plan.name} was checkpointed under another configuration of its "
                "series, detectors or task"
            )
        out = cls(plan)
        out.partition = state["partition"]
        out.last_ts = float(state["last_ts"])
        out.monitor.load_state(state["monitor"])
        out.alerts.load_state(state["alerts"])
        out.join.load_state(state["join"])
        out.performance.load_state(state["performance"])
        out.follow_file()
        return out
