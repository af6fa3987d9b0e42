"""``/v1/tokens`` and ``/v1/tokens/{symbol}``: every tracked token, and one in detail, answered from memory."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway.analytics.levels import key_levels
from tokenpulse_gateway.answers import Page, answer, encode
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.deps import Authed
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.queries.market import WINDOWS, MarketQueries, tolerance
from tokenpulse_gateway.state import GatewayState, state_of
from tokenpulse_gateway.token_list import MAX_Q, TokenQuery

router = APIRouter(route_class=JsonBodyRoute, tags=["tokens"])

LEVELS_SHOWN = ("support", "resistance", "key_support", "breakout_level")
"""what a token's page shows of its key levels (``/v1/levels/{symbol}`` has them all)"""


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A row without its internal fields (those whose names start with ``_``)."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


@router.get("/v1/tokens", response_model=Page, responses=ex.responses("tokens", 200, 400, 401, 422, 429))
async def list_tokens(
    request: Request,
    _: Authed,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
    sort: Annotated[
        str,
        Query(
            max_length=20,
            description="symbol (default), market_cap, volume_24h, change_24h, trader_grade or investor_grade; "
            "a leading - for descending (e.g. -market_cap). Tokens without the value come last.",
        ),
    ] = "symbol",
    q: Annotated[
        str | None, Query(max_length=MAX_Q, description="Only tokens whose symbol or name contains this (any case).")
    ] = None,
    min_trader_grade: Annotated[
        float | None, Query(ge=0, le=100, allow_inf_nan=False, description="Only tokens graded at least this.")
    ] = None,
    signal: Annotated[
        Literal["bullish", "bearish"] | None, Query(description="Only tokens whose daily signal is this.")
    ] = None,
) -> Response:
    """Every tracked token (the universe): latest price, 24 h change and volume, market cap, grades and signal,
    answered from memory (kept current from the event bus); sorted, filtered and paged (``next_cursor``)."""
    query = TokenQuery.parse(sort, q, min_trader_grade, signal)
    state = state_of(request)
    await state.live.ensure()
    return answer(request, state.board.page(query, limit, cursor), 1)


@router.get("/v1/tokens/{symbol}", responses=ex.responses("token", 200, 400, 401, 404, 429))
async def token_detail(request: Request, _: Authed, symbol: str) -> Response:
    """One token: the live row plus ROI over 24h/7d/30d/1y, key levels and the latest predictions.
    Reference prices and levels are refreshed from the store about once a minute."""
    state = state_of(request)
    symbol = await state.symbols.resolve(symbol)
    live = state.live
    await live.ensure()
    cached = state.caches.details.get(symbol, live.version)
    if cached is not None:
        return answer(request, cached, 1)
    version, made = live.version, time.monotonic()
    row = live.row_of(symbol)
    if row is None:
        raise ApiError(404, "unknown_symbol", f"{symbol} is not tracked")

    async def slow() -> dict[str, Any]:
        return await slow_parts(state.queries.market, symbol, row["_at_ms"])

    parts = await live.slow_parts(symbol, slow)
    predictions = await predictions_of(state, symbol)
    enc = encode(
        {**public(row), "roi": roi(row["price"], parts["refs"]), "levels": parts["levels"], "predictions": predictions}
    )
    state.caches.details.put(symbol, version, made, enc)
    return answer(request, enc, 1)


async def slow_parts(market: MarketQueries, symbol: str, at_ms: int | None) -> dict[str, Any]:
    """What a token's page takes from the store: the reference prices of its ROI windows and its key levels."""
    refs: dict[str, float | None] = {}
    for label, window in WINDOWS.items():
        refs[label] = None
        if at_ms is not None:
            refs[label] = await market.price_at(symbol, at_ms - window, tolerance(window))
    levels = key_levels(await market.daily_bars(symbol))
    return {"refs": refs, "levels": {k: levels[k] for k in LEVELS_SHOWN}}


def roi(price: float | None, refs: dict[str, float | None]) -> dict[str, float | None]:
    """Return in percent over each window, from its reference price (None where either is unknown)."""
    return {
        label: round((price / ref - 1) * 100, 4) if ref and price is not None else None for label, ref in refs.items()
    }


async def predictions_of(state: GatewayState, symbol: str) -> list[dict[str, Any]]:
    """The forecasts from memory (the predictions topic); the store's after a restart, until the next arrives."""
    live = state.live.predictions_of(symbol)
    if live:
        return live
    stored = state.caches.predictions.get(symbol)
    if stored is None:
        read_at = time.monotonic()
        stored = await state.queries.predictions.current(symbol)
        state.caches.predictions.put(symbol, read_at, stored)
    return stored
