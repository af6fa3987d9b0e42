"""``GET /v1/reports/{symbol}``: a token's research report, Markdown (or the HTML page with ``Accept: text/html``),
assembled from the same numbers the other endpoints answer (model in ``analytics/reports.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway.analytics.levels import key_levels
from tokenpulse_gateway.analytics.quant import WINDOWS, InsufficientHistory, Quant, quant
from tokenpulse_gateway.analytics.reports import PAGE_CSP, ReportInputs, report_html, report_markdown
from tokenpulse_gateway.analytics.scenarios import Scenarios
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.deps import Authed, SymbolsDep
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.examples import REPORT_MARKDOWN
from tokenpulse_gateway.market_data import computed, market_data
from tokenpulse_gateway.routes.analytics import track_record_body
from tokenpulse_gateway.routes.scenarios import ScenarioQuery, scenarios_of
from tokenpulse_gateway.routes.tokens import predictions_of, public, roi, slow_parts
from tokenpulse_gateway.state import GatewayState, state_of

router = APIRouter(route_class=JsonBodyRoute, tags=["analytics"])
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the report: Markdown, or an HTML page when `Accept` asks for text/html",
        "content": {
            "text/markdown": {"schema": {"type": "string"}, "example": REPORT_MARKDOWN},
            "text/html": {"schema": {"type": "string"}, "example": "<!doctype html>…"},
        },
    },
}


async def token_part(state: GatewayState, symbol: str) -> dict[str, Any]:
    """The token's live row with its ROI, as ``/v1/tokens/{symbol}`` shows them (404 when not tracked live)."""
    await state.live.ensure()
    row = state.live.row_of(symbol)
    if row is None:
        raise ApiError(404, "unknown_symbol", f"{symbol} is not tracked")
    parts = await state.live.slow_parts(symbol, lambda: slow_parts(state.queries.market, symbol, row["_at_ms"]))
    return {**public(row), "roi": roi(row["price"], parts["refs"])}


async def quant_part(state: GatewayState, symbol: str) -> dict[str, Quant | str]:
    """Each window's metrics, or why there are none."""
    data = await market_data(state.queries.analytics, state.caches.market)
    closes, btc = data.daily.get(symbol), data.daily.get("BTC")
    out: dict[str, Quant | str] = {}
    for window in WINDOWS:
        try:
            if closes is None:
                raise InsufficientHistory(f"{symbol} has no daily closes")
            out[window] = await computed(
                state.caches.market, ("quant-model", symbol, window), quant, symbol, window, closes, btc
            )
        except InsufficientHistory as exc:
            out[window] = str(exc)
    return out


async def scenarios_part(state: GatewayState, symbol: str) -> Scenarios | str:
    try:
        return await scenarios_of(state, symbol, ScenarioQuery())
    except ApiError as exc:  # no market cap: the report says so instead
        return exc.message


async def signal_record_part(state: GatewayState, symbol: str) -> dict[str, Any] | None:
    record = await track_record_body(state.queries, state.caches)
    return next((r for r in record.get("signals", []) if r["symbol"] == symbol), None)


async def report_inputs(state: GatewayState, symbol: str) -> ReportInputs:
    token = await token_part(state, symbol)
    analytics = state.queries.analytics
    return ReportInputs(
        symbol=symbol,
        name=token.get("name") or symbol,
        generated_at=datetime.now(UTC).replace(microsecond=0),
        token=token,
        grade=await analytics.latest_grade(symbol),
        signal=await analytics.latest_daily_signal(symbol),
        signal_record=await signal_record_part(state, symbol),
        levels=key_levels(await state.queries.market.daily_bars(symbol)),
        predictions=await predictions_of(state, symbol),
        quant=await quant_part(state, symbol),
        scenarios=await scenarios_part(state, symbol),
    )


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "").lower()


@router.get(
    "/v1/reports/{symbol}",
    summary="A generated research report of a token (Markdown; HTML with Accept: text/html)",
    responses={**RESPONSES, **ex.responses("report", 400, 401, 404, 429)},
)
async def report(request: Request, _: Authed, symbol: str, known: SymbolsDep) -> Response:
    """The token's published numbers in one dated document: price and ROI, grades and their components, the
    current daily signal and its track record, key levels, predictions with their backtest, quant metrics and
    scenarios; every number links to the method that makes it. No prose beyond fixed templates, no advice."""
    symbol = await known.resolve(symbol)
    state = state_of(request)
    markdown = report_markdown(await report_inputs(state, symbol))
    headers = {"cache-control": "private, max-age=60", "vary": "Accept"}
    if wants_html(request):
        page = report_html(markdown, f"{symbol} research report - Tokenpulse")
        return Response(page, media_type="text/html", headers={**headers, "content-security-policy": PAGE_CSP})
    return Response(markdown, media_type="text/markdown", headers=headers)
