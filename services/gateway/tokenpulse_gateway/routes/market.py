"""``GET /v1/market``: the market state (bullish / neutral / bearish) of the latest day, its components and
track record, and with ``history=true`` every day's (model in ``analytics/market_state.py``)."""

from __future__ import annotations

import datetime as dt
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway.analytics import market_state as ms
from tokenpulse_gateway.analytics.series import MarketData
from tokenpulse_gateway.answers import answer, encode
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.deps import Authed, MarketDep
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.market_data import MarketAnalytics

router = APIRouter(route_class=JsonBodyRoute, tags=["analytics"])

METHOD = {
    "bullish_at": ms.BULLISH_AT,
    "bearish_at": ms.BEARISH_AT,
    "momentum_days": ms.MOMENTUM_DAYS,
    "momentum_scale": ms.MOMENTUM_SCALE,
    "min_components": ms.MIN_COMPONENTS,
    "forward_days": ms.FORWARD_DAYS,
}


class MarketQuery(BaseModel):
    history: bool = Field(False, description="also every day's state, oldest first")
    start: date | None = Field(None, description="first day of the history (inclusive)")
    end: date | None = Field(None, description="last day of the history (inclusive)")


class MarketHistoryRow(BaseModel):
    date: dt.date
    state: ms.State | None
    score: float | None
    breadth: float | None
    total_market_cap: float | None
    btc_dominance: float | None


class MarketState(BaseModel):
    state: ms.State | None = Field(description="bullish (score >= 60), bearish (<= 40), neutral; null: too little data")
    score: float | None = Field(description="mean of the defined components, 0..100")
    as_of: dt.date = Field(description="the latest day with a close")
    breadth: float | None = Field(description="share of the tracked market cap whose daily signal is bullish")
    components: dict[str, float | None]
    tracked_market_cap: float | None
    tokens: list[str]
    total_market_cap: float | None
    total_market_cap_date: dt.date | None
    btc_dominance: float | None
    track_record: list[ms.StateRecord]
    method: dict[str, float]
    history: list[MarketHistoryRow] | None = Field(None, description="with history=true: every day, oldest first")


def market_record(data: MarketData) -> dict[str, Any]:
    """Every day's state (as JSON) and the track record: computed once per data version."""
    days = ms.market_history(data)
    return {
        "days": [d.model_dump(mode="json") for d in days],
        "track_record": [r.model_dump(mode="json") for r in ms.track_record(data, days)],
    }


async def current_record(market: MarketAnalytics) -> dict[str, Any]:
    record: dict[str, Any] = await market.computed(("market",), market_record, await market.data())
    if not record["days"]:
        raise ApiError(503, "no_history", "no market-cap history loaded yet; retry after the backfill")
    return record


def history_rows(days: list[dict[str, Any]], start: date | None, end: date | None) -> list[dict[str, Any]]:
    lo, hi = (start.isoformat() if start else ""), (end.isoformat() if end else "9999")
    keep = ("date", "state", "score", "breadth", "total_market_cap", "btc_dominance")
    return [{k: d[k] for k in keep} for d in days if lo <= d["date"] <= hi]


@router.get(
    "/v1/market",
    response_model=MarketState,
    summary="Market state: bullish, neutral or bearish, with its components and track record",
    responses=ex.responses("market", 200, 304, 400, 401, 422, 429, 503),
)
async def market(request: Request, _: Authed, q: Annotated[MarketQuery, Query()], market: MarketDep) -> Response:
    """The latest day's state of the tracked market: `score` = mean of `components` (breadth, market-cap-weighted
    Trader Grade, 30-day momentum; 0..100), bullish at 60+, bearish at 40 or less. `breadth` = share of the
    tracked market cap whose daily signal is bullish. `track_record`: the total market cap's next-30-day return
    by state. `history=true` adds every day's state (`start`, `end` narrow it)."""
    if q.start and q.end and q.start > q.end:
        raise ApiError(400, "invalid_range", "start must not be after end")
    record = await current_record(market)
    latest = record["days"][-1]
    body = {**{k: v for k, v in latest.items() if k != "date"}, "as_of": latest["date"]}
    body |= {"track_record": record["track_record"], "method": METHOD}
    if q.history:
        body["history"] = history_rows(record["days"], q.start, q.end)
    return answer(request, encode(body), 300)
