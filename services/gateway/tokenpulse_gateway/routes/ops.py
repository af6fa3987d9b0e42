"""Operations and the web pages: ``/healthz``, ``/readyz``, ``/metrics``, the dashboard and ``/``."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.deps import ContextDep, StoreDep
from tokenpulse_gateway.metrics import metrics_endpoint

STATIC_DIR = Path(__file__).parent.parent / "static"

router = APIRouter(route_class=JsonBodyRoute)
router.add_route("/metrics", metrics_endpoint, include_in_schema=False)


@cache
def dashboard_html() -> str:
    return (STATIC_DIR / "dashboard.html").read_text()


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/dashboard")


@router.get("/dashboard", include_in_schema=False)
async def dashboard() -> HTMLResponse:
    """The web dashboard: tokens and the halving-cycle panel (it asks for a free key itself)."""
    return HTMLResponse(dashboard_html())


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"])
async def readyz(ctx: ContextDep, store: StoreDep) -> JSONResponse:
    checks = {"store": await store.ping(), "bus": await ctx.bus.ready()}
    ready = all(checks.values()) and ctx.status.get("backfill") not in ("pending", "running")
    body = {"ready": ready, "checks": checks, **{k: v for k, v in ctx.status.items()}}
    return JSONResponse(body, 200 if ready else 503)
