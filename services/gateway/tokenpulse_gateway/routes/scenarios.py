"""``GET /v1/scenarios/{symbol}``: what price targets imply in market cap and share of the crypto market, what
the halving-cycle projection's total-market-cap targets imply for the token, and the reverse for one price
(model in ``analytics/scenarios.py``)."""

from __future__ import annotations

import math
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway.analytics.cycles import CycleInputError
from tokenpulse_gateway.analytics.scenarios import MAX_TARGETS, CycleTarget, NoMarketCap, Scenarios, scenarios
from tokenpulse_gateway.analytics.series import MarketData
from tokenpulse_gateway.answers import answer, encode
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.deps import Authed, SymbolsDep
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.market_data import computed, market_data
from tokenpulse_gateway.routes.cycles import cycle_data, default_answer
from tokenpulse_gateway.state import GatewayState, state_of

router = APIRouter(route_class=JsonBodyRoute, tags=["analytics"])
MAX_PRICE = 1e12
"""no token price or target beyond this is asked for in earnest; bounding it keeps every product finite"""


class ScenarioQuery(BaseModel):
    targets: str | None = Field(
        None, max_length=400, description="price targets in USD, comma-separated (default: 0.5, 2, 5, 10 x today)"
    )
    price: float | None = Field(None, gt=0, le=MAX_PRICE, description="the reverse: what this price requires")


def price_targets(raw: str | None) -> list[float] | None:
    """The comma-separated targets as positive finite numbers (at most ``MAX_TARGETS``), or a 400."""
    if raw is None:
        return None
    try:
        values = [float(v) for v in raw.split(",") if v.strip()]
    except ValueError as exc:
        message = "targets must be comma-separated prices in USD, e.g. 5000,10000"
        raise ApiError(400, "invalid_targets", message) from exc
    if not 1 <= len(values) <= MAX_TARGETS or not all(0 < v <= MAX_PRICE and math.isfinite(v) for v in values):
        raise ApiError(400, "invalid_targets", f"give 1 to {MAX_TARGETS} prices, each above 0 and at most 1e12")
    return values


def cycle_targets(cycles: dict[str, Any] | None) -> list[CycleTarget]:
    projection = (cycles or {}).get("projection") or {}
    return [
        CycleTarget(s["name"], date.fromisoformat(s["end_date"]), s["total_market_cap_target"])
        for s in projection.get("scenarios", [])
        if s.get("total_market_cap_target")
    ]


async def projection_of(state: GatewayState) -> dict[str, Any] | None:
    """The halving-cycle answer for the default parameters, or None without BTC history."""
    history = await cycle_data(state.queries.analytics, state.caches.cycles)
    if not history.btc:
        return None
    try:
        return await default_answer(history, state.caches.cycles, state.halvings)
    except CycleInputError:
        return None


def scenario_body(
    data: MarketData, symbol: str, targets: list[float] | None, cycle: list[CycleTarget], price: float | None
) -> Scenarios:
    return scenarios(data, symbol, targets, cycle, price)


async def scenarios_of(state: GatewayState, symbol: str, q: ScenarioQuery) -> Scenarios:
    """The token's scenarios, or a 422 when it has no market-cap data."""
    targets = price_targets(q.targets)
    data = await market_data(state.queries.analytics, state.caches.market)
    cycle = cycle_targets(await projection_of(state))
    key = ("scenarios", symbol, q.targets, q.price)
    try:
        return await computed(state.caches.market, key, scenario_body, data, symbol, targets, cycle, q.price)
    except NoMarketCap as exc:
        raise ApiError(422, "no_market_cap", str(exc)) from exc


@ex.analysis(
    router,
    "/v1/scenarios/{symbol}",
    "scenarios",
    Scenarios,
    "Price ↔ market-cap scenarios, the cycle projection's targets for the token, and the reverse",
)
async def scenarios_endpoint(
    request: Request,
    _: Authed,
    symbol: str,
    q: Annotated[ScenarioQuery, Query()],
    known: SymbolsDep,
) -> Response:
    """Circulating supply = market cap / price of the latest market-cap snapshot (held constant). For each price
    target: market cap, share of today's total crypto market cap, multiple of today's price. For the halving
    cycle's bear/base/moon total-market-cap targets: the token's market cap and price at today's share. With
    `price`: the market cap it needs, the total market cap that needs at today's share, and the share of
    today's total. A token without market-cap data: 422 `no_market_cap`."""
    symbol = await known.resolve(symbol)
    body = await scenarios_of(state_of(request), symbol, q)
    return answer(request, encode(body.model_dump(mode="json")), 300)
