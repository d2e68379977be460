"""One HTTP port: ``/metrics``, ``/healthz``, ``/readyz``, ``/status``.

Probe semantics for a sidecar: a failing readiness probe takes the *whole pod* (the model
server too) out of its Service, so ``/readyz`` must not fail because of drift monitoring's
own troubles. It answers 200 once the daemon has started (configuration valid, HTTP up,
consume loop running) and 503 only while starting or shutting down; a broker outage or
consumer lag shows in ``/status`` and the metrics, not here. ``/healthz`` answers 200
while the event loop is serving requests. With ``http.token`` set, ``/status`` and
``/models/*/predict`` need it as a bearer token; scrapes and probes stay open.
"""

from __future__ import annotations

import asyncio
import hmac
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


def _learner_status(learner: Any) -> dict[str, Any] | None:
    if learner is None:
        return None
    return {
        "learner": learner.learner,
        "learned": learner.learned,
        "lag_pairs": learner.lag,
        "dropped": learner.dropped,
        "adaptations": learner.adaptations,
        "metrics": learner.metrics(),
        "error": learner.error,
    }


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
                "out_of_range": int(mon.out_of_range[j]),
                "detectors": {},
            }
        if mon.bank is not None:
            for j, name in enumerate(mon.schema.categorical):
                series[name]["unseen"] = int(mon.bank.unseen[j])
            for j, name in enumerate(mon.schema.numeric):
                series[name]["outliers"] = int(mon.bank.outliers[j])
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
            "online_model": _learner_status(p.learners.get(model)),
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
        "partitions": {
            str(part): {
                "models": p.models_of(part),
                "position": {
                    f"{t}/{p_}": o for (t, p_), o in sorted(d._position.items()) if p_ == part
                },
            }
            for part in sorted(d.owned)
        },
        "misrouted_events": p.misrouted,
        "state": None
        if d.store is None
        else {
            "store": d.store.describe(),
            "checkpoints_written": d.checkpoints,
            "last_checkpoint_seconds": d.checkpoint_seconds,
            "last_checkpoint_bytes": d.checkpoint_bytes,
            "restores": dict(d.restores),
        },
        "alerts_firing": [
            {"model": m, "feature": f, "detector": det, "id": aid}
            for m, f, det, aid in p.policy.firing()
        ],
        "sinks": {s.name: s.stats().as_dict() for s in p.sinks},
        "models": models,
    }


def check_features(d: Daemon, model: str, body: Any) -> tuple[str, dict[str, Any]]:
    """``("", features)`` for a valid ``{"features": {...}}`` body, else the reason."""
    if not isinstance(body, dict) or not isinstance(body.get("features"), dict):
        return 'the body must be a JSON object with a "features" object', {}
    declared = d.config.models[model].features
    features: dict[str, Any] = {}
    for name, value in body["features"].items():
        spec = declared.get(name)
        if spec is None:
            return f"unknown feature {name!r} (declared: {', '.join(declared)})", {}
        if value is None:
            continue
        if spec.type == "numeric":
            if not isinstance(value, int | float) or isinstance(value, bool):
                return f"feature {name!r} must be a number or null", {}
            features[name] = float(value)
        else:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                return f"feature {name!r} must be a string, a number or null", {}
            features[name] = value if isinstance(value, str) else str(value)
    return "", features


OPEN = frozenset({"/metrics", "/healthz", "/readyz"})  # scrapes and probes: never gated


def bearer_gate(token: str | None) -> Any:
    """Middleware: with a token configured, every endpoint but scrapes and probes wants
    ``Authorization: Bearer <token>`` (compared in constant time); 401 otherwise."""
    expected = None if token is None else f"Bearer {token}".encode()

    @web.middleware
    async def gate(request: web.Request, handler: Any) -> web.StreamResponse:
        if expected is None or request.path in OPEN:
            response: web.StreamResponse = await handler(request)
            return response
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return web.json_response(
                {"error": "this endpoint needs 'Authorization: Bearer <http.token>'"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="driftline"'},
            )
        allowed: web.StreamResponse = await handler(request)
        return allowed

    return gate


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

    async def predict(request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model not in d.config.models:
            return _json({"error": f"unknown model {model!r}"}, status=404)
        learner = d.pipeline.learners.get(model)
        if learner is None:
            return _json({"error": f"model {model!r} has no online_model configured"}, 404)
        if learner.error is not None:
            return _json({"error": f"the online learner stopped: {learner.error}"}, 503)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _json({"error": f"the body is not JSON: {exc}"}, status=400)
        problem, features = check_features(d, model, body)
        if problem:
            return _json({"error": problem}, status=400)
        try:
            return _json(await asyncio.to_thread(learner.predict, features))
        except (TimeoutError, RuntimeError) as exc:
            return _json({"error": f"the online learner cannot answer: {exc}"}, status=503)

    token = d.config.http.token
    app = web.Application(
        middlewares=[bearer_gate(None if token is None else token.get_secret_value())]
    )
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_post("/models/{model}/predict", predict)
    return app
