"""``GET /v1/quant/{symbol}`` and ``GET /v1/correlation``: risk and return of a token over a trailing window,
and the correlation of several tokens' daily returns (definitions in ``analytics/quant.py``)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway.analytics.quant import (
    MAX_CORRELATED,
    Correlation,
    InsufficientHistory,
    Quant,
    correlation,
    quant,
)
from tokenpulse_gateway.analytics.series import MarketData
from tokenpulse_gateway.answers import answer, encode
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.caches import KnownSymbols
from tokenpulse_gateway.deps import Authed, MarketDep, SymbolsDep
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.market_data import MarketAnalytics

router = APIRouter(route_class=JsonBodyRoute, tags=["analytics"])

Window = Annotated[
    Literal["30d", "90d", "365d"], Query(description="trailing window of daily closes, ending at the latest close")
]


def quant_body(data: MarketData, symbol: str, window: str) -> dict[str, Any]:
    closes = data.daily.get(symbol)
    if closes is None:
        raise InsufficientHistory(f"{symbol} has no daily closes; the metrics need daily history")
    return quant(symbol, window, closes, data.daily.get("BTC")).model_dump(mode="json")


async def analysed(
    request: Request, market: MarketAnalytics, key: Hashable, body_of: Callable[..., dict[str, Any]], *args: Any
) -> Response:
    """``body_of(data, *args)`` as an answer (kept per data version), or a 422 when the history is too short."""
    data = await market.data()
    try:
        body = await market.computed(key, body_of, data, *args)
    except InsufficientHistory as exc:
        raise ApiError(422, "insufficient_history", str(exc)) from exc
    return answer(request, encode(body), 300)


@ex.analysis(
    router,
    "/v1/quant/{symbol}",
    "quant",
    Quant,
    "Quant metrics: volatility, Sharpe, Sortino, max drawdown, CAGR, beta and correlation to BTC",
)
async def quant_endpoint(
    request: Request,
    _: Authed,
    symbol: str,
    symbols: SymbolsDep,
    market: MarketDep,
    window: Window = "90d",
) -> Response:
    """Daily closes from `as_of - window` to `as_of` (the latest close), simple returns between consecutive
    closes, annualised with √365, risk-free rate 0; beta and correlation to BTC on the dates both have a
    return. Fewer returns than half the window's days: 422 `insufficient_history`."""
    symbol = await symbols.resolve(symbol)
    return await analysed(request, market, ("quant", symbol, window), quant_body, symbol, window)


async def symbol_list(raw: str, known: KnownSymbols) -> list[str]:
    """The comma-separated symbols, each resolved (400 / 404), 2 to ``MAX_CORRELATED`` of them, no repeats."""
    names = [s.strip() for s in raw.split(",") if s.strip()]
    if not 2 <= len(names) <= MAX_CORRELATED:
        raise ApiError(400, "invalid_symbols", f"give 2 to {MAX_CORRELATED} comma-separated symbols, e.g. BTC,ETH")
    resolved = [await known.resolve(s) for s in names]
    repeated = sorted({s for s in resolved if resolved.count(s) > 1})
    if repeated:
        raise ApiError(400, "invalid_symbols", f"{', '.join(repeated)} given more than once")
    return resolved


def correlation_body(data: MarketData, symbols: list[str], window: str) -> dict[str, Any]:
    missing = [s for s in symbols if s not in data.daily]
    if missing:
        raise InsufficientHistory(f"no daily closes for {', '.join(missing)}")
    return correlation(symbols, window, data.daily).model_dump(mode="json")


@ex.analysis(router, "/v1/correlation", "correlation", Correlation, "Correlation matrix of daily returns")
async def correlation_endpoint(
    request: Request,
    _: Authed,
    symbols: Annotated[str, Query(max_length=400, description="2 to 20 comma-separated symbols, e.g. BTC,ETH,SOL")],
    known: SymbolsDep,
    market: MarketDep,
    window: Window = "90d",
) -> Response:
    """Pearson correlation of the tokens' simple daily returns on the dates every one of them has a return,
    over the window ending at the latest day all of them have a close (`as_of`); `n` = those dates."""
    names = await symbol_list(symbols, known)
    return await analysed(request, market, ("correlation", tuple(names), window), correlation_body, names, window)
