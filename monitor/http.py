"""One HTTP port: ``/metrics``, ``/healthz``, ``/readyz``, ``/status``.

Probe semantics for a sidecar: a failing readiness probe takes the *whole pod* (the model
server too) out of its Service, so ``/readyz`` must not fail because of drift monitoring's
own troubles. It answers 200 once the daemon has started (configuration valid, HTTP up,
consume loop running) and 503 only while starting or shutting down; a broker outage or
consumer lag shows in ``/status`` and the metrics, not here. ``/healthz`` answers 200
while the event loop is serving requests.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from .daemon import Daemon


def _json(data: Any, status: int = 200) -> web.Response:
    body = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_INDENT_2)
    return web.Response(body=body, status=status, content_type="application/json")


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def status_document(d: Daemon) -> dict[str, Any]:
    p = d.pipeline
    models: dict[str, Any] = {}
    firing = {(m, f, det): aid for m, f, det, aid in p.policy.firing()}
    for model, mon in p.monitors.items():
        series: dict[str, Any] = {}
        for j, name in enumerate(mon.schema.series):
            kind = "numeric" if name in mon.schema.numeric else "categorical"
            series[name] = {
                "type": kind,
                "missing": int(mon.missing[j]),
                "wrong_type": int(mon.wrong_type[j]),
                "detectors": {},
            }
        if mon.bank is not None:
            for j, name in enumerate(mon.schema.categorical):
                series[name]["unseen"] = int(mon.bank.unseen[j])
            for name, why in mon.bank.skipped.items():
                series[name]["not_monitored"] = why
            for (feature, det), st in mon.bank.status.items():
                series[feature]["detectors"][det] = {
                    "score": _num(st.score),
                    "threshold": _num(st.threshold),
                    "p_value": st.p_value,
                    "drifting": st.drifting,
                    "window_size": st.window_size,
                    "reference_size": st.reference_size,
                    "alert_id": firing.get((model, feature, det)),
                }
        models[model] = {
            "events": mon.events,
            "reference": {
                "ready": mon.ready,
                "events": mon.reference_events,
                "warmup": mon.warmup or None,
            },
            "schema_violations": mon.schema_violations,
            "model_alert_id": firing.get((model, None, "multiple")),
            "performance": {
                "task": p.performance[model].task,
                "labelled": p.performance[model].n,
                "metrics": p.performance[model].metrics(),
                "concept_drift_alert_id": firing.get((model, None, "concept_drift")),
                "labels": {
                    "joined": p.joins[model].counts.joined,
                    "expired": p.joins[model].counts.expired,
                    "orphan": p.joins[model].counts.orphan,
                    "awaiting": len(p.joins[model].pending),
                },
            },
            "series": series,
        }
    return {
        "version": d.version,
        "ready": d.ready,
        "kafka": {
            "connected": d.source_started,
            "topic": d.config.kafka.topic,
            "group_id": d.config.kafka.group_id,
            "assignment": [f"{t}/{p_}" for t, p_ in d.source.assignment()]
            if d.source_started
            else [],
            "lag_records": d.source.lag() if d.source_started else None,
            "last_error": d.last_kafka_error,
        },
        "events_rejected": dict(p.rejected),
        "alerts_firing": [
            {"model": m, "feature": f, "detector": det, "id": aid}
            for m, f, det, aid in p.policy.firing()
        ],
        "sinks": {s.name: s.stats() for s in p.sinks},
        "models": models,
    }


def build_app(d: Daemon) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(d.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if d.ready:
            return _json({"status": "ready"})
        return _json({"status": "stopping" if d.stopping else "starting"}, status=503)

    async def status(_: web.Request) -> web.Response:
        return _json(status_document(d))

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    return app
