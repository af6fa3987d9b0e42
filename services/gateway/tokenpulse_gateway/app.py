"""The gateway's REST API (FastAPI): the app, assembled from the state, the middleware and the routers.

Contract: ``/v1`` JSON, ISO-8601 UTC timestamps, upper-case symbols, errors as
``{"error": {"code", "message"}}`` with a 4xx for client mistakes, list
endpoints ``{"data": [...], "next_cursor": ...}`` with ``limit``/``cursor``.
Each resource's routes are in :mod:`tokenpulse_gateway.routes`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import GatewaySettings

from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.errors import RequestBoundary, install
from tokenpulse_gateway.metrics import HttpMetrics
from tokenpulse_gateway.middleware import GatewayMiddleware
from tokenpulse_gateway.routes import ROUTERS
from tokenpulse_gateway.routes.ops import STATIC_DIR
from tokenpulse_gateway.state import build_state

DESCRIPTION = """Open crypto market intelligence.

**Keys**: `POST /v1/keys` gives a free key (shown once); send it as `X-API-Key` (or `Authorization: Bearer`).
Paid tiers are issued by an admin. **Limits**: every `/v1` answer carries `X-RateLimit-Limit`,
`X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds) for your per-minute limit; over it you get 429 with
`Retry-After`. `GET /v1/usage` shows your minute and month. **Caching**: history answers carry an `ETag`;
send it back as `If-None-Match` to get a 304. **Errors**: `{"error": {"code", "message"}}`.
"""

CORS_HEADERS = ["X-API-Key", "Authorization", "Content-Type", "Last-Event-ID", "If-None-Match", "X-Request-ID"]
CORS_EXPOSED = [
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
    "ETag",
    "X-Request-ID",
]


def create_app(ctx: Context) -> FastAPI:
    # FastAPI's own OpenTelemetry is off: the instrumentor below traces requests when an exporter is set
    # (one span per request, not one per dependency), and the stream's ?api_key= stays out of span attributes.
    telemetry: Any = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    # no trailing-slash redirects: Starlette builds their Location from the Host header, which the client chooses
    app = FastAPI(
        title="Tokenpulse API", version="1.0", description=DESCRIPTION, telemetry=telemetry, redirect_slashes=False
    )
    app.router.route_class = JsonBodyRoute  # bodies bounded in nesting before they are parsed
    app.state = build_state(ctx)
    install(app)
    add_middleware(app, ctx.settings.gateway, tracing=ctx.settings.telemetry.otel_exporter != "none")
    for router in ROUTERS:  # the routes themselves: an included router is searched again on every request
        app.router.routes.extend(router.routes)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def add_middleware(app: FastAPI, settings: GatewaySettings, *, tracing: bool) -> None:
    """Outermost last: the request boundary, metrics, then the limits and security headers, then CORS."""
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=CORS_HEADERS,
            expose_headers=CORS_EXPOSED,
            max_age=600,
        )
    app.add_middleware(
        GatewayMiddleware,
        max_body_bytes=settings.max_body_bytes,
        timeout_s=settings.request_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
    )
    app.add_middleware(HttpMetrics)
    app.add_middleware(RequestBoundary)  # outermost: a request id for all, and the last word on any error
    if tracing:  # no exporter, no spans: tracing each request is a large part of a hot read
        try:
            from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

            # the stream may carry ?api_key= (EventSource): keep its URL out of traces
            FastAPIInstrumentor.instrument_app(app, excluded_urls="/metrics,/healthz,/v1/stream")
        except Exception:  # pragma: no cover - instrumentation is optional at runtime
            pass
