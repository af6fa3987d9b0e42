"""The gateway's REST API (FastAPI): health, metrics, keys, tokens and candles.

Contract: ``/v1`` JSON, ISO-8601 UTC timestamps, upper-case symbols, errors as
``{"error": {"code", "message"}}`` with a 4xx for client mistakes, list
endpoints ``{"data": [...], "next_cursor": ...}`` with ``limit``/``cursor``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import BaseModel, EmailStr, Field
from tokenpulse_shared.events import SYMBOL_PATTERN, Interval
from tokenpulse_shared.service import Context
from tokenpulse_shared.tokens import token_name

from tokenpulse_gateway.cycles_api import make_router
from tokenpulse_gateway.deps import Authed
from tokenpulse_gateway.errors import ApiError, install
from tokenpulse_gateway.keys import KeyStore
from tokenpulse_gateway.limits import KeyLimiter
from tokenpulse_gateway.predictions_api import current_predictions
from tokenpulse_gateway.predictions_api import make_router as make_predictions_router
from tokenpulse_gateway.queries import WINDOWS, Queries, iso, tolerance

SYMBOL_RE = re.compile(SYMBOL_PATTERN)


class KeyRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    email: EmailStr | None = None


class Page(BaseModel):
    data: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(ts_ms: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"ts": ts_ms}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded))["ts"]
        if not isinstance(value, int):
            raise ValueError
        return value
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_cursor", "cursor is not one this API issued; start without it") from exc


def parse_time(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(400, "invalid_time", f"{name} must be an ISO-8601 time, e.g. 2024-01-31T00:00:00Z") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def time_window(start: str | None, end: str | None) -> tuple[int | None, int | None]:
    start_ms, end_ms = parse_time(start, "start"), parse_time(end, "end")
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise ApiError(400, "invalid_range", "start must be before end")
    return start_ms, end_ms


def page(rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A list answer from ``limit + 1`` fetched rows: the extra row only says there is a next page."""
    nxt = encode_cursor(rows[limit - 1]["_ms"]) if len(rows) > limit else None
    return {"data": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows[:limit]], "next_cursor": nxt}


def create_app(ctx: Context) -> FastAPI:
    assert ctx.store is not None, "the gateway needs the store"
    store = ctx.store
    queries = Queries(store)
    keys = KeyStore(store)
    settings = ctx.settings
    known: dict[str, Any] = {"at": 0.0, "symbols": set()}
    tokens_cache: dict[str, Any] = {"at": 0.0, "rows": []}

    app = FastAPI(
        title="Tokenpulse API",
        version="1.0",
        description="Open crypto market intelligence. Authenticate with `X-API-Key` (get one from `POST /v1/keys`).",
    )
    install(app)
    app.state.keys = keys
    app.state.limiter = KeyLimiter(settings.free_limit_per_minute, settings.free_limit_per_day)
    Instrumentator(excluded_handlers=["/metrics"]).instrument(app).expose(app, include_in_schema=False)
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="/metrics,/healthz")
    except Exception:  # pragma: no cover - instrumentation is optional at runtime
        pass

    async def symbol_known(symbol: str) -> str:
        symbol = symbol.upper()
        if not SYMBOL_RE.match(symbol):
            raise ApiError(400, "invalid_symbol", "symbols are upper-case base assets such as BTC")
        if time.monotonic() - known["at"] > 10:
            known["symbols"] = set(settings.symbols) | await queries.known_symbols()
            known["at"] = time.monotonic()
        if symbol not in known["symbols"]:
            raise ApiError(404, "unknown_symbol", f"{symbol} is not tracked; see GET /v1/tokens")
        return symbol

    dashboard_html = (Path(__file__).parent / "static" / "dashboard.html").read_text()

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        """The web dashboard: tokens and the halving-cycle panel (it asks for a free key itself)."""
        return HTMLResponse(dashboard_html)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> JSONResponse:
        checks = {"store": await store.ping(), "bus": await ctx.bus.ready()}
        ready = all(checks.values()) and ctx.status.get("backfill") != "running"
        body = {"ready": ready, "checks": checks, **{k: v for k, v in ctx.status.items()}}
        return JSONResponse(body, 200 if ready else 503)

    @app.post("/v1/keys", status_code=201, tags=["keys"])
    async def create_key(body: KeyRequest) -> dict[str, Any]:
        key, record = await keys.create(body.name, body.email)
        return {
            "key": key,
            "key_id": record.key_id,
            "tier": record.tier,
            "limits": {"per_minute": settings.free_limit_per_minute, "per_day": settings.free_limit_per_day},
            "note": "store this key now: it is shown only once",
        }

    async def token_rows() -> list[dict[str, Any]]:
        if time.monotonic() - tokens_cache["at"] < 1.0:
            return list(tokens_cache["rows"])
        symbols = sorted(set(settings.symbols) | await queries.known_symbols())
        prices = await queries.latest_prices(symbols)
        grades = await queries.latest_grades(symbols)
        signals = await queries.latest_signals(symbols)
        rows = []
        for sym in symbols:
            price, at_ms = prices.get(sym, (None, None))
            change = None
            volume = None
            if price is not None and at_ms is not None:
                ref = await queries.price_at(sym, at_ms - WINDOWS["24h"], tolerance(WINDOWS["24h"]))
                change = round((price / ref - 1) * 100, 4) if ref else None
                volume = await queries.volume_24h_usd(sym, at_ms)
            grade = grades.get(sym, {})
            rows.append(
                {
                    "symbol": sym,
                    "name": token_name(sym),
                    "price": price,
                    "change_24h": change,
                    "volume_24h": volume,
                    "trader_grade": grade.get("trader_grade"),
                    "investor_grade": grade.get("investor_grade"),
                    "signal": signals.get(sym),
                    "updated_at": iso(at_ms),
                    "_at_ms": at_ms,
                }
            )
        tokens_cache.update(at=time.monotonic(), rows=rows)
        return list(rows)

    def public(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if not k.startswith("_")}

    @app.get("/v1/tokens", response_model=Page, tags=["tokens"])
    async def list_tokens(
        _: Authed,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        rows = await token_rows()
        if cursor:
            try:
                after = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ApiError(400, "invalid_cursor", "cursor is not one this API issued") from exc
            rows = [r for r in rows if r["symbol"] > after]
        page = rows[:limit]
        nxt = None
        if len(rows) > limit:
            nxt = base64.urlsafe_b64encode(page[-1]["symbol"].encode()).decode().rstrip("=")
        return {"data": [public(r) for r in page], "next_cursor": nxt}

    @app.get("/v1/tokens/{symbol}", tags=["tokens"])
    async def token_detail(_: Authed, symbol: str) -> dict[str, Any]:
        symbol = await symbol_known(symbol)
        row = next((r for r in await token_rows() if r["symbol"] == symbol), None)
        if row is None:
            raise ApiError(404, "unknown_symbol", f"{symbol} is not tracked")
        roi: dict[str, float | None] = {}
        for label, window in WINDOWS.items():
            ref = None
            if row["price"] is not None and row["_at_ms"] is not None:
                ref = await queries.price_at(symbol, row["_at_ms"] - window, tolerance(window))
            roi[label] = round((row["price"] / ref - 1) * 100, 4) if ref else None
        lv = await levels_of(symbol)
        levels = {
            "support": lv["support"],
            "resistance": lv["resistance"],
            "key_support": lv["key_support"],
            "breakout_level": lv["breakout_level"],
        }
        predictions = await current_predictions(queries, symbol)
        return {**public(row), "roi": roi, "levels": levels, "predictions": predictions}

    @app.get("/v1/candles/{symbol}", response_model=Page, tags=["market data"])
    async def candles(
        _: Authed,
        symbol: str,
        interval: Interval = Interval.D1,
        start: str | None = None,
        end: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        symbol = await symbol_known(symbol)
        start_ms, end_ms = time_window(start, end)
        after = decode_cursor(cursor) if cursor else None
        rows = await queries.candles(symbol, interval, start_ms, end_ms, after, limit + 1)
        return page(rows, limit)

    @app.get("/v1/indicators/{symbol}", response_model=Page, tags=["market data"])
    async def indicators(
        _: Authed,
        symbol: str,
        interval: Interval = Interval.D1,
        start: str | None = None,
        end: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """RSI(14), MACD(12,26,9), EMA20/50, SMA200, Bollinger(20,2), ATR(14) at each closed candle
        (TA-Lib conventions, see the contract); null while warming up. Oldest first."""
        symbol = await symbol_known(symbol)
        start_ms, end_ms = time_window(start, end)
        after = decode_cursor(cursor) if cursor else None
        rows = await queries.indicators(symbol, interval, start_ms, end_ms, after, limit + 1)
        return page(rows, limit)

    @app.get("/v1/grades/{symbol}", response_model=Page, tags=["analytics"])
    async def grades(
        _: Authed,
        symbol: str,
        start: str | None = None,
        end: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Trader and Investor Grade history (daily), with the components each was computed from."""
        symbol = await symbol_known(symbol)
        start_ms, end_ms = time_window(start, end)
        rows = await queries.history(
            "grades",
            ("trader_grade", "investor_grade", "components", "method"),
            symbol,
            start_ms,
            end_ms,
            decode_cursor(cursor) if cursor else None,
            limit + 1,
        )
        for r in rows:
            r["components"] = json.loads(r["components"] or "{}")
        return page(rows, limit)

    @app.get("/v1/signals", response_model=Page, tags=["analytics"])
    async def signals(
        _: Authed,
        symbol: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Bullish/bearish signals (emitted when the hysteresis state changes), oldest first."""
        sym = await symbol_known(symbol) if symbol else None
        start_ms, end_ms = time_window(start, end)
        rows = await queries.history(
            "signals",
            ("symbol", "interval", "direction", "strength", "reasons"),
            sym,
            start_ms,
            end_ms,
            decode_cursor(cursor) if cursor else None,
            limit + 1,
        )
        return page(rows, limit)

    async def levels_of(symbol: str) -> dict[str, Any]:
        from tokenpulse_shared.levels import key_levels

        return key_levels(await queries.daily_bars(symbol))

    @app.get("/v1/levels/{symbol}", tags=["analytics"])
    async def levels(_: Authed, symbol: str) -> dict[str, Any]:
        """Support and resistance from daily swing pivots clustered over the last two years."""
        symbol = await symbol_known(symbol)
        return {"symbol": symbol, **await levels_of(symbol)}

    track_cache: dict[str, Any] = {"version": None, "body": None}

    @app.get("/v1/track-record", tags=["analytics"])
    async def track_record_endpoint(_: Authed) -> dict[str, Any]:
        """Measured track record of the published signals and grades on the stored daily history:
        signals followed long/flat vs buy-and-hold, and the grades' rank information coefficient."""
        from tokenpulse_shared.track_record import SignalPoint, track_record

        version = (await queries.daily_version(), await queries.store.query("SELECT count() FROM grades"))
        if track_cache["version"] != version:
            closes = {
                s: [(int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000), c) for d, c in pts]
                for s, pts in (await queries.daily_closes()).items()
            }
            rows = await queries.store.query(
                "SELECT symbol, toUnixTimestamp64Milli(ts), trader_grade, investor_grade FROM grades FINAL"
            )
            trader: dict[str, dict[int, float]] = {}
            investor: dict[str, dict[int, float]] = {}
            for sym, ts, tg, ig in rows:
                if tg is not None:
                    trader.setdefault(sym, {})[ts] = tg
                if ig is not None:
                    investor.setdefault(sym, {})[ts] = ig
            sigs = [
                SignalPoint(sym, ts, d)
                for sym, ts, d in await queries.store.query(
                    "SELECT symbol, toUnixTimestamp64Milli(ts), direction FROM signals FINAL WHERE interval = '1d'"
                )
            ]
            report = await asyncio.to_thread(track_record, closes, sigs, trader, investor)
            track_cache.update(version=version, body=report.model_dump(mode="json"))
        return dict(track_cache["body"])

    app.include_router(make_router(queries, settings.bundle_dir))
    app.include_router(make_predictions_router(queries, symbol_known))

    @app.exception_handler(404)
    async def _not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": {"code": "not_found", "message": f"no route {request.url.path}"}}, 404)

    return app
