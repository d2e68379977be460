"""One HTTP port: ``/metrics``, ``/healthz``, ``/readyz``, ``/status``,
``/models/{model}/predict``, ``POST /models/{model}/reference`` (re-baseline),
``POST /-/reload`` (re-read the configuration file, as Prometheus does). Every read
goes through the status snapshot (never the live state of the worker thread).

Probe semantics for a sidecar: a failing readiness probe takes the *whole pod* (the model
server too) out of its Service, so ``/readyz`` must not fail because of drift monitoring's
own troubles. It answers 200 once the daemon has started (configuration valid, HTTP up,
consume loop running) and 503 only while starting or shutting down; a broker outage or
consumer lag shows in ``/status`` and the metrics, not here. ``/healthz`` answers 200
while the event loop is serving requests. With ``http.token`` set, ``/status`` and
``/models/*/predict`` need it as a bearer token; scrapes and probes stay open. Endpoints
that change state (re-baselining, reloading) need a token: without one configured they
answer 403.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib.resources import files
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from monitor.serve.status import Snapshot, status_document


def _dumps(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_INDENT_2)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(data), status=status, content_type="application/json")


def check_features(declared: Mapping[str, Any], body: Any) -> tuple[str, dict[str, Any]]:
    """``("", features)`` for a valid ``{"features": {...}}`` body, else the reason."""
    if not isinstance(body, dict) or not isinstance(body.get("features"), dict):
        return 'the body must be a JSON object with a "features" object', {}
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


def check_rebaseline(body: Any) -> tuple[str, str, int, list[str] | None]:
    """``("", from, events, features)`` for a valid re-baseline body, else the reason.

    >>> check_rebaseline({"from": "recent", "events": 2000, "features": ["salary"]})
    ('', 'recent', 2000, ['salary'])
    >>> check_rebaseline({"from": "last"})[0][:40]
    'the body must be {"from": "recent" or "n'
    """
    usage = (
        'the body must be {"from": "recent" or "next", "events": N, "features": [...] (optional)}'
    )
    if not isinstance(body, dict) or set(body) - {"from", "events", "features"}:
        return usage, "", 0, None
    source, events, features = body.get("from"), body.get("events"), body.get("features")
    if source not in ("recent", "next") or not isinstance(events, int) or isinstance(events, bool):
        return usage, "", 0, None
    if events <= 0:
        return "events must be a positive number of events", "", 0, None
    if features is not None and (
        not isinstance(features, list) or not all(isinstance(f, str) for f in features)
    ):
        return "features must be a list of series names", "", 0, None
    return "", source, events, features


OPEN = frozenset({"/metrics", "/healthz", "/readyz"})  # scrapes and probes: never gated
UI_PAGE = (files("monitor.serve") / "ui.html").read_bytes()  # the live status page
NO_TOKEN = (
    "this endpoint changes the monitor's state and is off without a token: set http.token "
    "in the configuration (e.g. token: ${DRIFTLINE_TOKEN}) and send "
    "'Authorization: Bearer <token>'"
)


COOKIE = "driftline_token"
READ_ONLY = frozenset({"/ui", "/status", "/status/history"})  # a browser may use the cookie


def _session(secret: str) -> str:
    """The cookie that stands for the token (derived from it, never the token itself)."""
    return hmac.new(secret.encode(), b"driftline-ui", "sha256").hexdigest()


def bearer_gate(token: Callable[[], str | None]) -> Any:
    """Middleware: with a token configured (``token()``, read at each request: a reload may
    change it), every endpoint but scrapes and probes wants ``Authorization: Bearer
    <token>`` (compared in constant time, as bytes: any header value, ASCII or not, is
    simply wrong when it is not the token); 401 otherwise. The read-only pages a browser
    opens (``/ui`` and what it reads) also take the ``driftline_token`` cookie that
    ``/ui?token=<token>`` sets (HttpOnly, SameSite=Strict; an HMAC of the token, not the
    token); endpoints that change state never do."""

    @web.middleware
    async def gate(request: web.Request, handler: Any) -> web.StreamResponse:
        secret = token()
        if secret is None or request.path in OPEN:
            response: web.StreamResponse = await handler(request)
            return response
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        expected = f"Bearer {secret}".encode()
        if request.method == "GET" and request.path in READ_ONLY:
            session = _session(secret)
            offered = request.query.get("token") if request.path == "/ui" else None
            if offered is not None and hmac.compare_digest(
                offered.encode("utf-8", "surrogateescape"), secret.encode()
            ):
                raise web.HTTPFound(
                    "/ui",
                    headers={
                        "Set-Cookie": f"{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/"
                    },
                )
            cookie = request.cookies.get(COOKIE, "")
            if hmac.compare_digest(cookie.encode("utf-8", "surrogateescape"), session.encode()):
                given = expected
        if not hmac.compare_digest(given, expected):
            hint = (
                "; in a browser, open /ui?token=<http.token> once" if request.path == "/ui" else ""
            )
            return web.json_response(
                {"error": f"this endpoint needs 'Authorization: Bearer <http.token>'{hint}"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="driftline"'},
            )
        allowed: web.StreamResponse = await handler(request)
        return allowed

    return gate


def build_app(
    snapshot: Callable[[], Snapshot],
    *,
    registry: CollectorRegistry,
    token: str | Callable[[], str | None] | None = None,
    learners: Mapping[str, Any] | None = None,
    models: Mapping[str, Any] | None = None,
    rebaseline: Callable[..., Awaitable[tuple[int, dict[str, Any]]]] | None = None,
    reload: Callable[[], Awaitable[tuple[int, dict[str, Any]]]] | None = None,
    cache_s: float = 0.25,
) -> web.Application:
    """The daemon's HTTP app. ``snapshot`` is the only view of the daemon it has;
    ``learners`` answer predictions; ``models`` are the configured models (their declared
    features check a prediction request); ``rebaseline(model, from, events, features)``
    re-baselines (answering a status and a document); ``/metrics`` and ``/status`` are at
    most ``cache_s`` old."""
    learners = dict(learners or {})
    models = dict(models or {})
    # A rendered page is reused for ``cache_s``: a scraper hammering the port costs the
    # event loop a few renders a second, not one per request.
    cache: dict[str, tuple[float, bytes]] = {}

    def cached(path: str, render: Callable[[], bytes]) -> bytes:
        now = time.monotonic()
        hit = cache.get(path)
        if hit is not None and now - hit[0] < cache_s:
            return hit[1]
        body = render()
        cache[path] = (now, body)
        return body

    async def metrics(_: web.Request) -> web.Response:
        body = cached("/metrics", lambda: generate_latest(registry))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        d = snapshot().daemon
        if d.ready:
            return _json({"status": "ready"})
        return _json({"status": "stopping" if d.stopping else "starting"}, status=503)

    async def status(_: web.Request) -> web.Response:
        body = cached("/status", lambda: _dumps(status_document(snapshot())))
        return web.Response(body=body, content_type="application/json")

    async def history(_: web.Request) -> web.Response:
        body = cached("/status/history", lambda: _dumps(snapshot().pipeline.history))
        return web.Response(body=body, content_type="application/json")

    async def ui(_: web.Request) -> web.Response:
        return web.Response(body=UI_PAGE, content_type="text/html", charset="utf-8")

    async def predict(request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model not in models:
            return _json({"error": f"unknown model {model!r}"}, status=404)
        learner = learners.get(model)
        if learner is None:
            return _json({"error": f"model {model!r} has no online_model configured"}, 404)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _json({"error": f"the body is not JSON: {exc}"}, status=400)
        problem, features = check_features(models[model].features, body)
        if problem:
            return _json({"error": problem}, status=400)
        try:
            return _json(await learner.predict(features))
        except (TimeoutError, RuntimeError) as exc:
            return _json({"error": f"the online learner cannot answer: {exc}"}, status=503)

    token_of: Callable[[], str | None] = token if callable(token) else (lambda: token)

    async def reference(request: web.Request) -> web.Response:
        if token_of() is None:
            return _json({"error": NO_TOKEN}, status=403)
        model = request.match_info["model"]
        if model not in models:
            return _json({"error": f"unknown model {model!r}"}, status=404)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _json({"error": f"the body is not JSON: {exc}"}, status=400)
        problem, source, events, features = check_rebaseline(body)
        if problem or rebaseline is None:
            return _json({"error": problem or "re-baselining is not available"}, status=400)
        code, answer = await rebaseline(model, source, events, features)
        return _json(answer, status=code)

    async def reload_config(_: web.Request) -> web.Response:
        if token_of() is None:
            return _json({"error": NO_TOKEN}, status=403)
        if reload is None:
            return _json({"error": "this daemon was started without a configuration file"}, 400)
        code, answer = await reload()
        return _json(answer, status=code)

    app = web.Application(middlewares=[bearer_gate(token_of)])
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/status/history", history)
    app.router.add_get("/ui", ui)
    app.router.add_post("/models/{model}/predict", predict)
    app.router.add_post("/models/{model}/reference", reference)
    app.router.add_post("/-/reload", reload_config)
    return app
