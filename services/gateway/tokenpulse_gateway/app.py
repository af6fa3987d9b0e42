"""The gateway's REST API (FastAPI): health, metrics, keys, tokens and candles.

Contract: ``/v1`` JSON, ISO-8601 UTC timestamps, upper-case symbols, errors as
``{"error": {"code", "message"}}`` with a 4xx for client mistakes, list
endpoints ``{"data": [...], "next_cursor": ...}`` with ``limit``/``cursor``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, EmailStr, Field
from tokenpulse_shared.events import SYMBOL_PATTERN, Interval
from tokenpulse_shared.service import Context

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway import product_api
from tokenpulse_gateway.alerts_api import make_router as alerts_router
from tokenpulse_gateway.answers import Encoded, PageCache, answer, encode
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.cursors import STORE_MAX_MS, STORE_MIN_MS, SymbolCursor, TimeCursor
from tokenpulse_gateway.cursors import decode as decode_cursor
from tokenpulse_gateway.cursors import encode as encode_cursor
from tokenpulse_gateway.cycles_api import make_router
from tokenpulse_gateway.deps import LIMITER_DOWN, Authed, client_address, tier_for
from tokenpulse_gateway.errors import ApiError, RequestBoundary, install
from tokenpulse_gateway.keys import KeyStore
from tokenpulse_gateway.limits import KeyLimiter, LimiterUnavailable
from tokenpulse_gateway.live import LiveState, StreamHub
from tokenpulse_gateway.metrics import HttpMetrics, metrics_endpoint
from tokenpulse_gateway.middleware import GatewayMiddleware
from tokenpulse_gateway.predictions_api import current_predictions
from tokenpulse_gateway.predictions_api import make_router as make_predictions_router
from tokenpulse_gateway.queries import WINDOWS, Queries, tolerance

SYMBOL_RE = re.compile(SYMBOL_PATTERN)


class KeyRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["my trading bot"])
    email: EmailStr | None = Field(None, examples=["me@example.com"])


class Page(BaseModel):
    data: list[dict[str, Any]]
    next_cursor: str | None


def after_ms(cursor: str | None) -> int | None:
    """The row time a history cursor points after (None: the first page)."""
    return decode_cursor(TimeCursor, cursor).ts if cursor else None


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


def time_window(start: str | None, end: str | None) -> tuple[int | None, int | None]:
    start_ms, end_ms = parse_time(start, "start"), parse_time(end, "end")
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise ApiError(400, "invalid_range", "start must be before end")
    return start_ms, end_ms


def page(rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A list answer from ``limit + 1`` fetched rows: the extra row only says there is a next page."""
    nxt = encode_cursor(TimeCursor(ts=int(rows[limit - 1]["_ms"]))) if len(rows) > limit else None
    return {"data": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows[:limit]], "next_cursor": nxt}


def etag_json(request: Request, body: Any, max_age: int) -> Response:
    """A JSON answer with a strong ETag and Cache-Control; 304 when the client already has it."""
    return answer(request, encode(body), max_age)


DESCRIPTION = """Open crypto market intelligence.

**Keys**: `POST /v1/keys` gives a free key (shown once); send it as `X-API-Key` (or `Authorization: Bearer`).
Paid tiers are issued by an admin. **Limits**: every `/v1` answer carries `X-RateLimit-Limit`,
`X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds) for your per-minute limit; over it you get 429 with
`Retry-After`. `GET /v1/usage` shows your minute and month. **Caching**: history answers carry an `ETag`;
send it back as `If-None-Match` to get a 304. **Errors**: `{"error": {"code", "message"}}`.
"""


def create_app(ctx: Context) -> FastAPI:
    assert ctx.store is not None, "the gateway needs the store"
    store = ctx.store
    queries = Queries(store)
    settings = ctx.settings
    keys = KeyStore(
        store,
        cache_ttl_s=settings.key_cache_ttl_s,
        cache_size=settings.key_cache_size,
        miss_ttl_s=settings.key_miss_ttl_s,
    )
    limiter = KeyLimiter(settings.redis_url, settings.key_issue_per_hour, settings.auth_failures_per_minute)
    hub = StreamHub(settings.stream_buffer)
    pages = PageCache(settings.history_cache_ttl_s)
    live = LiveState(ctx, queries, hub, pages=pages)
    known: dict[str, Any] = {"at": 0.0, "symbols": set(settings.symbols)}

    # FastAPI's own OpenTelemetry is off: the instrumentor below traces requests when an exporter is set
    # (one span per request, not one per dependency), and the stream's ?api_key= stays out of span attributes.
    telemetry: Any = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    # no trailing-slash redirects: Starlette builds their Location from the Host header, which the client chooses
    app = FastAPI(
        title="Tokenpulse API", version="1.0", description=DESCRIPTION, telemetry=telemetry, redirect_slashes=False
    )
    app.router.route_class = JsonBodyRoute  # bodies bounded in nesting before they are parsed
    install(app)
    app.state.keys = keys
    app.state.limiter = limiter
    app.state.settings = settings
    app.state.live = live
    app.state.hub = hub
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "X-API-Key",
                "Authorization",
                "Content-Type",
                "Last-Event-ID",
                "If-None-Match",
                "X-Request-ID",
            ],
            expose_headers=[
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
                "Retry-After",
                "ETag",
                "X-Request-ID",
            ],
            max_age=600,
        )
    app.add_middleware(
        GatewayMiddleware,
        max_body_bytes=settings.max_body_bytes,
        timeout_s=settings.request_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
    )
    app.add_middleware(HttpMetrics)
    app.add_middleware(RequestBoundary)  # outermost: a request id for all, and the last word on any error
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    if settings.otel_exporter != "none":  # no exporter, no spans: request tracing costs ~40% of a hot read
        try:
            from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

            # the stream may carry ?api_key= (EventSource): keep its URL out of traces
            FastAPIInstrumentor.instrument_app(app, excluded_urls="/metrics,/healthz,/v1/stream")
        except Exception:  # pragma: no cover - instrumentation is optional at runtime
            pass

    async def symbol_known(symbol: str) -> str:
        symbol = symbol.upper()
        if not SYMBOL_RE.fullmatch(symbol):  # match() would take a trailing newline ($)
            raise ApiError(400, "invalid_symbol", "symbols are upper-case base assets such as BTC")
        if symbol in live.tokens or symbol in known["symbols"]:  # tracked: no store query on the hot path
            return symbol
        if time.monotonic() - known["at"] > 10:  # an unknown one: look again at most every 10 s
            known["symbols"] = set(settings.symbols) | await queries.known_symbols()
            known["at"] = time.monotonic()
        if symbol not in known["symbols"]:
            raise ApiError(404, "unknown_symbol", f"{symbol} is not tracked; see GET /v1/tokens")
        return symbol

    static_dir = Path(__file__).parent / "static"
    dashboard_html = (static_dir / "dashboard.html").read_text()
    app.mount("/static", StaticFiles(directory=static_dir), name="static")

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
        ready = all(checks.values()) and ctx.status.get("backfill") not in ("pending", "running")
        body = {"ready": ready, "checks": checks, **{k: v for k, v in ctx.status.items()}}
        return JSONResponse(body, 200 if ready else 503)

    @app.post("/v1/keys", status_code=201, tags=["keys"], responses=ex.responses("create_key", 201, 422, 429))
    async def create_key(request: Request, body: KeyRequest) -> dict[str, Any]:
        """A free key, shown once (only its SHA-256 hash is stored). Limited per client IP and hour."""
        try:
            wait = await limiter.hit_issue(client_address(request))
        except LimiterUnavailable as exc:
            raise ApiError(503, "limiter_unavailable", LIMITER_DOWN, headers={"Retry-After": "5"}) from exc
        if wait:
            raise ApiError(
                429,
                "too_many_keys",
                f"this address created {settings.key_issue_per_hour} keys in the last hour; "
                f"retry in {wait} s or reuse a key you have",
                headers={"Retry-After": str(wait)},
            )
        key, record = await keys.create(body.name, body.email)
        return {
            "key": key,
            "key_id": record.key_id,
            "tier": record.tier,
            "limits": product_api.tier_body(record.tier, settings),
            "note": "store this key now: it is shown only once",
        }

    async def token_rows() -> list[dict[str, Any]]:
        await live.ensure()
        return live.rows()

    def public(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if not k.startswith("_")}

    @app.get("/v1/tokens", response_model=Page, tags=["tokens"], responses=ex.responses("tokens", 200, 400, 401, 429))
    async def list_tokens(
        request: Request,
        _: Authed,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
    ) -> Response:
        """Every tracked token: latest price, 24 h change and volume, grades and signal, answered from memory
        (kept current from the event bus)."""
        await live.ensure()
        if tokens_cache["version"] != live.version:
            tokens_cache.update(version=live.version, pages={})
        enc = tokens_cache["pages"].get((limit, cursor))
        if enc is None:
            enc = encode(tokens_page(limit, cursor))
            if len(tokens_cache["pages"]) < 64:  # the cursors a client can send are many; the useful pages few
                tokens_cache["pages"][(limit, cursor)] = enc
        return answer(request, enc, 1)

    # the serialised /v1/tokens pages of one live-state version, by (limit, cursor)
    tokens_cache: dict[str, Any] = {"version": None, "pages": {}}

    def tokens_page(limit: int, cursor: str | None) -> dict[str, Any]:
        rows = live.rows()
        if cursor:
            after = decode_cursor(SymbolCursor, cursor).symbol
            rows = [r for r in rows if r["symbol"] > after]
        page = rows[:limit]
        nxt = encode_cursor(SymbolCursor(symbol=page[-1]["symbol"])) if len(rows) > limit else None
        return {"data": [public(r) for r in page], "next_cursor": nxt}

    # the serialised token pages by symbol: (live-state version, monotonic time made, answer)
    detail_cache: dict[str, tuple[int, float, Encoded]] = {}
    # forecasts read from the store when none came over the bus yet (after a restart): (monotonic time, list)
    stored_predictions: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    @app.get("/v1/tokens/{symbol}", tags=["tokens"], responses=ex.responses("token", 200, 400, 401, 404, 429))
    async def token_detail(request: Request, _: Authed, symbol: str) -> Response:
        """One token: the live row plus ROI over 24h/7d/30d/1y, key levels and the latest predictions.
        Reference prices and levels are refreshed from the store about once a minute."""
        symbol = await symbol_known(symbol)
        await live.ensure()
        hit = detail_cache.get(symbol)
        if hit and hit[0] == live.version and time.monotonic() - hit[1] < live.sync_every_s:
            return answer(request, hit[2], 1)
        version, made = live.version, time.monotonic()
        row = next((r for r in await token_rows() if r["symbol"] == symbol), None)
        if row is None:
            raise ApiError(404, "unknown_symbol", f"{symbol} is not tracked")

        async def slow() -> dict[str, Any]:
            refs: dict[str, float | None] = {}
            for label, window in WINDOWS.items():
                refs[label] = None
                if row["_at_ms"] is not None:
                    refs[label] = await queries.price_at(symbol, row["_at_ms"] - window, tolerance(window))
            lv = await levels_of(symbol)
            keep = ("support", "resistance", "key_support", "breakout_level")
            return {"refs": refs, "levels": {k: lv[k] for k in keep}}

        parts = await live.slow_parts(symbol, slow)
        price = row["price"]
        roi = {
            label: round((price / ref - 1) * 100, 4) if ref and price is not None else None
            for label, ref in parts["refs"].items()
        }
        # forecasts from memory (the predictions topic); the store after a restart, until the next one arrives
        predictions = live.predictions_of(symbol) or await predictions_from_store(symbol)
        enc = encode({**public(row), "roi": roi, "levels": parts["levels"], "predictions": predictions})
        detail_cache[symbol] = (version, made, enc)
        return answer(request, enc, 1)

    async def predictions_from_store(symbol: str) -> list[dict[str, Any]]:
        """The stored forecasts, read at most once per ``sync_every_s`` per token."""
        got = stored_predictions.get(symbol)
        if got is None or time.monotonic() - got[0] >= live.sync_every_s:
            got = (time.monotonic(), await current_predictions(queries, symbol))
            stored_predictions[symbol] = got
        return got[1]

    @app.get(
        "/v1/candles/{symbol}",
        response_model=Page,
        tags=["market data"],
        responses=ex.responses("candles", 200, 304, 400, 401, 404, 422, 429),
    )
    async def candles(
        request: Request,
        _: Authed,
        symbol: str,
        interval: Interval = Interval.D1,
        start: str | None = None,
        end: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
    ) -> Response:
        symbol = await symbol_known(symbol)
        start_ms, end_ms = time_window(start, end)
        after = after_ms(cursor)
        key = ("candles", symbol, interval.value, start_ms, end_ms, after, limit)
        enc = pages.get(key)
        if enc is None:
            made = time.monotonic()
            enc = encode(page(await queries.candles(symbol, interval, start_ms, end_ms, after, limit + 1), limit))
            pages.put(key, enc, made)
        return answer(request, enc, 10)

    @app.get(
        "/v1/indicators/{symbol}",
        response_model=Page,
        tags=["market data"],
        responses=ex.responses("indicators", 200, 304, 400, 401, 404, 422, 429),
    )
    async def indicators(
        request: Request,
        _: Authed,
        symbol: str,
        interval: Interval = Interval.D1,
        start: str | None = None,
        end: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
    ) -> Response:
        """RSI(14), MACD(12,26,9), EMA20/50, SMA200, Bollinger(20,2), ATR(14) at each closed candle
        (TA-Lib conventions, see the contract); null while warming up. Oldest first."""
        symbol = await symbol_known(symbol)
        start_ms, end_ms = time_window(start, end)
        after = after_ms(cursor)
        key = ("indicators", symbol, interval.value, start_ms, end_ms, after, limit)
        enc = pages.get(key)
        if enc is None:
            made = time.monotonic()
            enc = encode(page(await queries.indicators(symbol, interval, start_ms, end_ms, after, limit + 1), limit))
            pages.put(key, enc, made)
        return answer(request, enc, 10)

    @app.get(
        "/v1/grades/{symbol}",
        response_model=Page,
        tags=["analytics"],
        responses=ex.responses("grades", 200, 304, 400, 401, 404, 422, 429),
    )
    async def grades(
        request: Request,
        _: Authed,
        symbol: str,
        start: str | None = None,
        end: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
    ) -> Response:
        """Trader and Investor Grade history (daily), with the components each was computed from."""
        symbol = await symbol_known(symbol)
        start_ms, end_ms = time_window(start, end)
        rows = await queries.history(
            "grades",
            ("trader_grade", "investor_grade", "components", "method"),
            symbol,
            start_ms,
            end_ms,
            after_ms(cursor),
            limit + 1,
        )
        for r in rows:
            r["components"] = json.loads(r["components"] or "{}")
        return etag_json(request, page(rows, limit), 60)

    @app.get(
        "/v1/signals",
        response_model=Page,
        tags=["analytics"],
        responses=ex.responses("signals", 200, 304, 400, 401, 403, 404, 422, 429),
    )
    async def signals(
        request: Request,
        key: Authed,
        symbol: str | None = None,
        interval: Interval | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
    ) -> Response:
        """Bullish/bearish signals (emitted when the hysteresis state changes), oldest first.
        Intraday signals are for tiers with `intraday` (pro and up); the free tier sees daily ones."""
        sym = await symbol_known(symbol) if symbol else None
        if interval is not None and interval != Interval.D1 and not tier_for(request, key).intraday:
            raise ApiError(403, "tier_required", "intraday signals need the pro tier or higher; see GET /v1/usage")
        wanted = interval.value if interval else (None if tier_for(request, key).intraday else Interval.D1.value)
        start_ms, end_ms = time_window(start, end)
        rows = await queries.history(
            "signals",
            ("symbol", "interval", "direction", "strength", "reasons"),
            sym,
            start_ms,
            end_ms,
            after_ms(cursor),
            limit + 1,
            interval=wanted,
        )
        return etag_json(request, page(rows, limit), 30)

    async def levels_of(symbol: str) -> dict[str, Any]:
        from tokenpulse_gateway.analytics.levels import key_levels

        return key_levels(await queries.daily_bars(symbol))

    @app.get("/v1/levels/{symbol}", tags=["analytics"], responses=ex.responses("levels", 200, 304, 400, 401, 404, 429))
    async def levels(request: Request, _: Authed, symbol: str) -> Response:
        """Support and resistance from daily swing pivots clustered over the last two years."""
        symbol = await symbol_known(symbol)
        return etag_json(request, {"symbol": symbol, **await levels_of(symbol)}, 300)

    track_cache: dict[str, Any] = {"version": None, "body": None}

    @app.get("/v1/track-record", tags=["analytics"], responses=ex.responses("track_record", 200, 304, 401, 429))
    async def track_record_endpoint(request: Request, _: Authed) -> Response:
        """Measured track record of the published signals and grades on the stored history: daily signals
        followed long/flat vs buy-and-hold, the same for the intraday (1h, 4h) signals (`intraday`), and the
        grades' rank information coefficient. Withdrawn (retracted) signals are left out."""
        from tokenpulse_gateway.analytics.track_record import SignalPoint, track_record

        version = (
            await queries.daily_version(),
            await queries.store.query("SELECT count(), max(produced_at) FROM grades"),
            await queries.store.query("SELECT count(), max(produced_at) FROM signals"),
        )
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
                SignalPoint(sym, ts, d, iv)
                for sym, ts, d, iv in await queries.store.query(
                    "SELECT symbol, toUnixTimestamp64Milli(ts), direction, interval FROM signals FINAL "
                    "WHERE retracted = 0 AND interval IN ('1d', '1h', '4h')"
                )
            ]
            intraday: dict[str, dict[str, list[tuple[int, float]]]] = {}
            with_signals = {(s.symbol, s.interval) for s in sigs if s.interval != "1d"}
            for sym, iv in sorted(with_signals):
                intraday.setdefault(iv, {})[sym] = [
                    (ts, c)
                    for ts, c in await queries.store.query(
                        "SELECT toUnixTimestamp64Milli(ts), close FROM candles FINAL "
                        "WHERE symbol = {s:String} AND interval = {i:String} ORDER BY ts",
                        {"s": sym, "i": iv},
                    )
                ]
            report = await asyncio.to_thread(track_record, closes, sigs, trader, investor, 30, intraday)
            track_cache.update(version=version, body=report.model_dump(mode="json"))
        return etag_json(request, track_cache["body"], 300)

    app.include_router(make_router(queries, settings.bundle_dir))
    app.include_router(product_api.make_router(keys, limiter, hub, settings))
    app.include_router(alerts_router(ctx, symbol_known))
    app.include_router(make_predictions_router(queries, symbol_known))

    @app.exception_handler(404)
    async def _not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": {"code": "not_found", "message": f"no route {request.url.path}"}}, 404)

    return app
