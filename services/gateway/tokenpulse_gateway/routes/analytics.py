"""Analytics over the stored history: a token's key levels, and the track record of signals and grades."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway.analytics.levels import key_levels
from tokenpulse_gateway.analytics.track_record import track_record
from tokenpulse_gateway.answers import answer, encode
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.caches import Caches
from tokenpulse_gateway.deps import Authed, CachesDep, QueriesDep, SymbolsDep
from tokenpulse_gateway.queries import Queries

router = APIRouter(route_class=JsonBodyRoute, tags=["analytics"])


@router.get("/v1/levels/{symbol}", responses=ex.responses("levels", 200, 304, 400, 401, 404, 429))
async def levels(request: Request, _: Authed, symbol: str, symbols: SymbolsDep, queries: QueriesDep) -> Response:
    """Support and resistance from daily swing pivots clustered over the last two years."""
    symbol = await symbols.resolve(symbol)
    return answer(request, encode({"symbol": symbol, **key_levels(await queries.market.daily_bars(symbol))}), 300)


@router.get("/v1/track-record", responses=ex.responses("track_record", 200, 304, 401, 429))
async def track_record_endpoint(request: Request, _: Authed, queries: QueriesDep, caches: CachesDep) -> Response:
    """Measured track record of the published signals and grades on the stored history: daily signals
    followed long/flat vs buy-and-hold, the same for the intraday (1h, 4h) signals (`intraday`), and the
    grades' rank information coefficient. Withdrawn (retracted) signals are left out."""
    return answer(request, encode(await track_record_body(queries, caches)), 300)


async def track_record_body(queries: Queries, caches: Caches) -> dict[str, Any]:
    """The track record of the stored history, computed again only when that history has changed."""
    version = await queries.analytics.track_record_version()
    body = caches.track_record.get(version)
    if body is None:
        i = await queries.analytics.track_record_inputs()
        report = await asyncio.to_thread(track_record, i.closes, i.signals, i.trader, i.investor, 30, i.intraday)
        body = report.model_dump(mode="json")
        caches.track_record.put(version, body)
    return body
