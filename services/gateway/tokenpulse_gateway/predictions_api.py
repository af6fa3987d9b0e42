"""``GET /v1/predictions/{symbol}``: the latest forecast per horizon, and past forecasts with what happened.

The scoring service publishes forecasts on ``tokenpulse.predictions.v1``; the store writer
keeps them in the ``predictions`` table. Per horizon the newest ``made_at`` wins (and, for
the same ``made_at``, the newest ``produced_at``: a retrain may re-issue a day's forecast).
A token with too few daily candles gets an explicit ``insufficient_history`` answer, never a
number.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from tokenpulse_shared.predictions import HORIZONS, MIN_HISTORY_DAYS

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway.deps import Authed
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.queries import DAY, Queries, iso

COLS = (
    "horizon, toUnixTimestamp64Milli(made_at), toUnixTimestamp64Milli(target_ts), point, lower, upper, "
    "lower_95, upper_95, interval, model, kind, backtest"
)


def _row(r: tuple[Any, ...]) -> dict[str, Any]:
    horizon, made, target, point, lower, upper, lo95, hi95, interval, model, kind, backtest = r
    return {
        "horizon": horizon,
        "made_at": iso(made),
        "target_ts": iso(target),
        "point": point,
        "lower": lower,
        "upper": upper,
        "interval": interval,
        "lower_95": lo95,
        "upper_95": hi95,
        "model": model,
        "kind": kind,
        "backtest": json.loads(backtest or "{}"),
        "_target_ms": target,
    }


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


async def current_predictions(queries: Queries, symbol: str) -> list[dict[str, Any]]:
    """The newest forecast of each horizon (1d, 7d, 30d order); [] when there is none."""
    rows = await queries.store.query(
        f"SELECT {COLS} FROM predictions FINAL WHERE symbol = {{s:String}} AND kind = 'live' "
        "ORDER BY made_at DESC, produced_at DESC LIMIT 1 BY horizon",
        {"s": symbol},
    )
    order = list(HORIZONS)
    out = sorted((_row(r) for r in rows), key=lambda x: order.index(x["horizon"]) if x["horizon"] in order else 99)
    return [_public(r) for r in out]


async def past_predictions(queries: Queries, symbol: str, horizon: str | None, limit: int) -> list[dict[str, Any]]:
    """Past forecasts, newest first, each with the realised close at its target (null until known)."""
    where = "symbol = {s:String}" + (" AND horizon = {h:String}" if horizon else "")
    rows = await queries.store.query(
        f"SELECT {COLS} FROM predictions FINAL WHERE {where} "
        "ORDER BY made_at DESC, produced_at DESC LIMIT 1 BY horizon, made_at LIMIT {n:UInt32}",
        {"s": symbol, "h": horizon or "", "n": limit},
    )
    items = [_row(r) for r in rows]
    opens = sorted({r["_target_ms"] - DAY for r in items})
    closes: dict[int, float] = {}
    if opens:
        got = await queries.store.query(
            "SELECT toUnixTimestamp64Milli(ts), close FROM candles FINAL WHERE symbol = {s:String} "
            "AND interval = '1d' AND toUnixTimestamp64Milli(ts) IN {t:Array(Int64)}",
            {"s": symbol, "t": opens},
        )
        closes = {ts + DAY: c for ts, c in got}
    out = []
    for r in items:
        realised = closes.get(r["_target_ms"])
        item = _public(r)
        item.pop("backtest")
        item["realised"] = realised
        item["inside_80"] = None if realised is None else bool(r["lower"] <= realised <= r["upper"])
        item["inside_95"] = (
            None if realised is None or r["lower_95"] is None else bool(r["lower_95"] <= realised <= r["upper_95"])
        )
        out.append(item)
    return out


async def daily_candles(queries: Queries, symbol: str) -> int:
    rows = await queries.store.query(
        "SELECT count() FROM candles FINAL WHERE symbol = {s:String} AND interval = '1d'", {"s": symbol}
    )
    return int(rows[0][0]) if rows else 0


def make_router(queries: Queries, resolve_symbol: Callable[[str], Awaitable[str]]) -> APIRouter:
    router = APIRouter(tags=["analytics"])

    @router.get(
        "/v1/predictions/{symbol}",
        summary="Price forecasts at 1d, 7d and 30d with 80% and 95% intervals",
        responses=ex.responses("predictions", 200, 400, 401, 404, 422, 429),
    )
    async def predictions(
        _: Authed,
        symbol: str,
        history: Annotated[bool, Query(description="also return past forecasts with the realised close")] = False,
        horizon: Annotated[Literal["1d", "7d", "30d"] | None, Query(description="history of one horizon")] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="past forecasts returned (newest first)")] = 100,
    ) -> dict[str, Any]:
        """The newest forecast of each horizon: ``point``, the 80% interval (``lower``, ``upper``,
        ``interval`` = 0.8), the 95% interval (``lower_95``, ``upper_95``), the ``model`` (name@version)
        and its walk-forward ``backtest`` on this token and horizon (``mase`` against the naive
        forecast, ``coverage`` of the 80% and ``coverage_95`` of the 95% interval, ``n`` forecasts).
        With ``history=true``, past forecasts with the ``realised`` close at their target time: ``kind``
        ``live`` (made at ``made_at``) or ``walk-forward`` (the first model version's out-of-sample
        walk-forward forecasts of the year before it, made with data up to ``made_at`` only)."""
        symbol = await resolve_symbol(symbol)
        horizons = await current_predictions(queries, symbol)
        if not horizons:
            have = await daily_candles(queries, symbol)
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
        body: dict[str, Any] = {"symbol": symbol, "status": "ok", "horizons": horizons}
        if history:
            body["history"] = await past_predictions(queries, symbol, horizon, limit)
        return body

    return router
