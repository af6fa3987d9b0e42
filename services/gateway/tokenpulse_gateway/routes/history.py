"""History pages: candles, indicators, grades and signals of a token, oldest first, paged by time.

Every page is made by :func:`history_page`: the time window and cursor checked, the rows read (candles and
indicators from the page cache when it has them), and answered with an ETag.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from tokenpulse_shared.events import INDICATOR_FIELDS, Interval

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway.answers import Page, answer, encode
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.cursors import STORE_MAX_MS, STORE_MIN_MS, TimeCursor, decode
from tokenpulse_gateway.cursors import encode as encode_cursor
from tokenpulse_gateway.deps import Authed, tier_for
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.state import state_of

router = APIRouter(route_class=JsonBodyRoute)
Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[Response]])


@dataclass(frozen=True)
class Kind:
    """One kind of history: its table and columns, how long a client may keep a page, and whether pages are
    cached here (the bus says when a candle or indicator series changes; grades and signals are read anew)."""

    table: str
    columns: tuple[str, ...]
    max_age_s: int
    cached: bool = False
    json_columns: tuple[str, ...] = ()


CANDLES = Kind("candles", ("open", "high", "low", "close", "volume"), 10, cached=True)
INDICATORS = Kind("indicators", INDICATOR_FIELDS, 10, cached=True)
GRADES = Kind("grades", ("trader_grade", "investor_grade", "components", "method"), 60, json_columns=("components",))
SIGNALS = Kind("signals", ("symbol", "interval", "direction", "strength", "reasons"), 30)

Limit = Annotated[int, Field(ge=1, le=1000)]


class Window(BaseModel):
    """The rows of a page: from ``start`` (ISO-8601, inclusive) to ``end`` (exclusive), after ``cursor``."""

    start: str | None = None
    end: str | None = None
    limit: Limit = 100
    cursor: str | None = None


class SeriesWindow(BaseModel):
    interval: Interval = Interval.D1
    start: str | None = None
    end: str | None = None
    limit: Limit = 100
    cursor: str | None = None


class SignalsWindow(BaseModel):
    symbol: str | None = None
    interval: Interval | None = None
    start: str | None = None
    end: str | None = None
    limit: Limit = 100
    cursor: str | None = None


def parse_time(value: str | None, name: str) -> int | None:
    """An ISO-8601 time as Unix milliseconds, within what the store holds (1900 to 2299), else a 400."""
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(400, "invalid_time", f"{name} must be an ISO-8601 time, e.g. 2024-01-31T00:00:00Z") from exc
    ms = int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)
    if not STORE_MIN_MS <= ms <= STORE_MAX_MS:
        raise ApiError(400, "invalid_time", f"{name} must be between 1900-01-01 and 2299-12-31")
    return ms


def rows_window(w: Window | SeriesWindow | SignalsWindow) -> tuple[int | None, int | None, int | None]:
    """(start, end, after) in Unix milliseconds, each None when not given; a 400 for what cannot be."""
    start_ms, end_ms = parse_time(w.start, "start"), parse_time(w.end, "end")
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise ApiError(400, "invalid_range", "start must be before end")
    return start_ms, end_ms, decode(TimeCursor, w.cursor).ts if w.cursor else None


def page(rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A list answer from ``limit + 1`` fetched rows: the extra row only says there is a next page."""
    nxt = encode_cursor(TimeCursor(ts=int(rows[limit - 1]["_ms"]))) if len(rows) > limit else None
    return {"data": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows[:limit]], "next_cursor": nxt}


async def history_page(
    request: Request, kind: Kind, symbol: str | None, interval: str | None, w: Window | SeriesWindow | SignalsWindow
) -> Response:
    state = state_of(request)
    window = rows_window(w)
    key = (kind.table, symbol, interval, *window, w.limit)
    enc = state.caches.history.get(key) if kind.cached else None
    if enc is None:
        made = time.monotonic()
        rows = await state.queries.market.history(kind.table, kind.columns, symbol, interval, window, w.limit + 1)
        for r in rows:
            for column in kind.json_columns:
                r[column] = json.loads(r[column] or "{}")
        enc = encode(page(rows, w.limit))
        if kind.cached:
            state.caches.history.put(key, enc, made)
    return answer(request, enc, kind.max_age_s)


def history_route(path: str, tag: str, example: str, *errors: int) -> Callable[[Endpoint], Endpoint]:
    """``router.get`` for a history page: a :class:`Page`, with its example and the errors it can answer."""
    return router.get(path, response_model=Page, tags=[tag], responses=ex.responses(example, 200, 304, *errors))


@history_route("/v1/candles/{symbol}", "market data", "candles", 400, 401, 404, 422, 429)
async def candles(request: Request, _: Authed, symbol: str, w: Annotated[SeriesWindow, Query()]) -> Response:
    symbol = await state_of(request).symbols.resolve(symbol)
    return await history_page(request, CANDLES, symbol, w.interval.value, w)


@history_route("/v1/indicators/{symbol}", "market data", "indicators", 400, 401, 404, 422, 429)
async def indicators(request: Request, _: Authed, symbol: str, w: Annotated[SeriesWindow, Query()]) -> Response:
    """RSI(14), MACD(12,26,9), EMA20/50, SMA200, Bollinger(20,2), ATR(14) at each closed candle
    (TA-Lib conventions, see the contract); null while warming up. Oldest first."""
    symbol = await state_of(request).symbols.resolve(symbol)
    return await history_page(request, INDICATORS, symbol, w.interval.value, w)


@history_route("/v1/grades/{symbol}", "analytics", "grades", 400, 401, 404, 422, 429)
async def grades(request: Request, _: Authed, symbol: str, w: Annotated[Window, Query()]) -> Response:
    """Trader and Investor Grade history (daily), with the components each was computed from."""
    symbol = await state_of(request).symbols.resolve(symbol)
    return await history_page(request, GRADES, symbol, None, w)


@history_route("/v1/signals", "analytics", "signals", 400, 401, 403, 404, 422, 429)
async def signals(request: Request, key: Authed, w: Annotated[SignalsWindow, Query()]) -> Response:
    """Bullish/bearish signals (emitted when the hysteresis state changes), oldest first.
    Intraday signals are for tiers with `intraday` (pro and up); the free tier sees daily ones."""
    symbol = await state_of(request).symbols.resolve(w.symbol) if w.symbol else None
    intraday = tier_for(request, key).intraday
    if w.interval is not None and w.interval != Interval.D1 and not intraday:
        raise ApiError(403, "tier_required", "intraday signals need the pro tier or higher; see GET /v1/usage")
    wanted = w.interval.value if w.interval else (None if intraday else Interval.D1.value)
    return await history_page(request, SIGNALS, symbol, wanted, w)
