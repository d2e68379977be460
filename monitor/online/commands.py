"""Commands to the pipeline from outside the stream (an operator, a restore), run in the
worker thread with no batch in flight, like a batch: each returns a :class:`Command` with
its answer, the alerts to send and the partitions to checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitor.alerting.alerts import Alert
from monitor.config.plan import ModelPlan
from monitor.ingest.decode import ModelSchema
from monitor.online.model_monitor import RebaselineError
from monitor.online.model_state import now_iso
from monitor.online.pipeline import Pipeline
from monitor.online.reference import read_reference_file

log = logging.getLogger("driftline.pipeline")


@dataclass(frozen=True)
class Command:
    """What a command run in the worker thread made: its answer, the alerts to send and
    the partitions whose state it changed (to checkpoint)."""

    answer: dict[str, Any]
    alerts: list[Alert]
    partitions: set[int]


def rebaseline(
    pipeline: Pipeline, model: str, source: str, events: int, features: Sequence[str] | None
) -> Command:
    """Re-baseline ``model`` (see ``ModelState.rebaseline``): the answer for the
    caller, the resolved alerts and the partition to checkpoint. RebaselineError (with
    an HTTP status) when it cannot be done here or now."""
    state = pipeline.states.models.get(model)
    if state is None:
        raise RebaselineError(f"unknown model {model!r}", 404)
    if state.partition is None:
        raise RebaselineError(
            f"this instance holds no events of model {model}: in a consumer group, ask "
            "the instance that owns its partition (its /status lists the model)"
        )
    _, alerts = state.rebaseline(source, events, features, now_iso())
    log.warning(
        "model %s re-baselined from the %s %d events (%s): %d open episode(s) resolved",
        model,
        source,
        events,
        "series " + ", ".join(features) if features else "every series",
        len(alerts),
        extra={"model": model},
    )
    pipeline.publish([model])
    return Command(
        {
            "model": model,
            "reference": {
                "ready": state.monitor.ready,
                "events": state.monitor.reference_events,
                **pipeline.status.models[model].reference,
            },
            "resolved": [a.id for a in alerts if a.feature is not None],
        },
        alerts,
        {state.partition},
    )


def reconfigure(pipeline: Pipeline, plans: Mapping[str, ModelPlan]) -> Command:
    """Apply reloaded plans (same models, same fingerprints: checked before) to every
    model: alerting and thresholds at once, a changed reference file followed. Every
    reference file is read first: an unusable one raises ValueError with nothing changed."""
    files = {
        name: read_reference_file(p.reference_file, ModelSchema(p))
        for name, p in plans.items()
        if p.reference_file is not None
    }
    for name, fresh in files.items():
        pipeline.states.models[name].monitor.file_reference = fresh
    pipeline.plans.update(plans)
    pipeline.states.plans.update(plans)
    for state in pipeline.states.models.values():
        state.reconfigure(plans[state.name])
    pipeline.publish()
    return take_unsent(pipeline)


def take_unsent(pipeline: Pipeline) -> Command:
    """Alerts made outside a batch (a reference file changed at a restore), and the
    partitions whose state they changed."""
    alerts: list[Alert] = []
    touched: set[int] = set()
    for state in pipeline.states.models.values():
        if state.unsent:
            alerts += state.unsent
            state.unsent = []
            if state.partition is not None:
                touched.add(state.partition)
    return Command({}, alerts, touched)


def has_unsent(pipeline: Pipeline) -> bool:
    return any(s.unsent for s in pipeline.states.models.values())
