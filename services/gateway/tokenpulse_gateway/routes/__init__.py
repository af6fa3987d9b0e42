"""The API, one router per resource. :data:`ROUTERS` is the order they are matched and documented in.

``create_app`` puts their routes on the app's own router rather than ``include_router`` them: FastAPI matches a
request against an included router's routes through a layer of its own, a measurable part of a hot read. So a
router here takes no prefix or router-wide dependencies (each route states its own), and ``app.dependency_overrides``
does not reach these routes.
"""

from __future__ import annotations

from fastapi import APIRouter

from tokenpulse_gateway.routes import (
    alerts,
    analytics,
    cycles,
    history,
    indices,
    keys,
    market,
    mcp,
    ops,
    predictions,
    quant,
    reports,
    scenarios,
    stream,
    tokens,
    usage,
)

ROUTERS: tuple[APIRouter, ...] = (
    ops.router,
    keys.router,
    tokens.router,
    history.router,
    analytics.router,
    cycles.router,
    quant.router,
    market.router,
    indices.router,
    scenarios.router,
    reports.router,
    keys.admin,
    usage.router,
    stream.router,
    alerts.router,
    predictions.router,
    mcp.router,
)
