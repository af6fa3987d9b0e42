"""``GET /v1/predictions/{symbol}``: the latest forecast per horizon, and past forecasts with what happened.

The scoring service publishes forecasts on ``tokenpulse.predictions.v1``; the store writer keeps them in the
``predictions`` table. A token with too few daily candles gets an explicit ``insufficient_history``
answer, never a number.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from tokenpulse_shared.predictions import MIN_HISTORY_DAYS

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.deps import Authed, QueriesDep, SymbolsDep
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.queries.predictions import PredictionQueries

router = APIRouter(route_class=JsonBodyRoute, tags=["analytics"])


class PredictionsQuery(BaseModel):
    history: bool = Field(False, description="also return past forecasts with the realised close")
    horizon: Literal["1d", "7d", "30d"] | None = Field(None, description="history of one horizon")
    limit: int = Field(100, ge=1, le=1000, description="past forecasts returned (newest first)")


async def past_predictions(
    queries: PredictionQueries, symbol: str, horizon: str | None, limit: int
) -> list[dict[str, Any]]:
    """Past forecasts, newest first, each with the realised close at its target (null until known)."""
    items = await queries.past(symbol, horizon, limit)
    closes = await queries.closes_at(symbol, [r["_target_ms"] for r in items])
    out = []
    for r in items:
        realised = closes.get(r["_target_ms"])
        item = {k: v for k, v in r.items() if not k.startswith("_") and k != "backtest"}
        item["realised"] = realised
        item["inside_80"] = None if realised is None else bool(r["lower"] <= realised <= r["upper"])
        item["inside_95"] = (
            None if realised is None or r["lower_95"] is None else bool(r["lower_95"] <= realised <= r["upper_95"])
        )
        out.append(item)
    return out


async def no_forecast_yet(queries: PredictionQueries, symbol: str) -> dict[str, Any]:
    """The answer when there is no forecast: a 422 for too little history, else when to come back."""
    have = await queries.daily_candles(symbol)
    if have < MIN_HISTORY_DAYS:
        raise ApiError(
            422,
            "insufficient_history",
            f"{symbol} has {have} daily candles; forecasts need at least {MIN_HISTORY_DAYS}. "
            "There is no forecast until then.",
        )
    # not the client's mistake and not an outage: an empty answer that says when to come back
    return {
        "symbol": symbol,
        "status": "pending",
        "message": f"no forecast for {symbol} yet: the models train a few minutes after the history is "
        "loaded, and a forecast needs the last 90 days of daily candles nearly complete (at most 5 "
        "missing); retry later",
        "horizons": [],
    }


@router.get(
    "/v1/predictions/{symbol}",
    summary="Price forecasts at 1d, 7d and 30d with 80% and 95% intervals",
    responses=ex.responses("predictions", 200, 400, 401, 404, 422, 429),
)
async def predictions(
    _: Authed, symbol: str, q: Annotated[PredictionsQuery, Query()], queries: QueriesDep, symbols: SymbolsDep
) -> dict[str, Any]:
    """The newest forecast of each horizon: ``point``, the 80% interval (``lower``, ``upper``,
    ``interval`` = 0.8), the 95% interval (``lower_95``, ``upper_95``), the ``model`` (name@version)
    and its walk-forward ``backtest`` on this token and horizon (``mase`` against the naive
    forecast, ``coverage`` of the 80% and ``coverage_95`` of the 95% interval, ``n`` forecasts).
    With ``history=true``, past forecasts with the ``realised`` close at their target time: ``kind``
    ``live`` (made at ``made_at``) or ``walk-forward`` (the first model version's out-of-sample
    walk-forward forecasts of the year before it, made with data up to ``made_at`` only)."""
    symbol = await symbols.resolve(symbol)
    horizons = await queries.predictions.current(symbol)
    if not horizons:
        return await no_forecast_yet(queries.predictions, symbol)
    body: dict[str, Any] = {"symbol": symbol, "status": "ok", "horizons": horizons}
    if q.history:
        body["history"] = await past_predictions(queries.predictions, symbol, q.horizon, q.limit)
    return body
