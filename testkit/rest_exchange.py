"""A fake exchange REST API on loopback: Binance klines, Coinbase candles, Kraken OHLC, OKX
history-candles (https://www.okx.com/docs-v5/en/#public-data-rest-api-get-candlesticks-history), Bybit
v5 kline (https://bybit-exchange.github.io/docs/v5/market/kline), Coinbase Advanced Trade public candles
(https://docs.cdp.coinbase.com/advanced-trade/reference/retailbrokerageapi_getpublicproductcandles) in each
exchange's own format, served from the real bundled BTC 1-minute history (Binance BTCUSDT,
Dec 2024, rolled up to the coarser intervals), with scripted faults.

Faults are consumed one per request, in order: ``("429", retry_after)``, ``("418",
retry_after)``, ``("500",)``, ``("slow", seconds)``, ``("kraken-rate",)`` (Kraken's HTTP
200 with ``EGeneral:Too many requests``). Binance answers carry ``X-MBX-USED-WEIGHT-1M``,
counted over a sliding minute; over ``weight_limit`` the server answers 429 itself.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenpulse_ingest.bundle import BUNDLE, Bar, read_bars, rollup
from tokenpulse_shared.events import Interval
from tokenpulse_shared.settings import DEFAULT_BUNDLE

LISTINGS = {
    name: Path(__file__).parent / "listings" / file
    for name, file in (
        ("binance", "binance_exchange_info.json"),
        ("coinbase", "coinbase_products.json"),
        ("kraken", "kraken_asset_pairs.json"),
        ("okx", "okx_instruments.json"),
        ("bybit", "bybit_instruments.json"),
        ("coinbase_advanced", "coinbase_advanced_products.json"),
        ("binance_tickers", "binance_ticker_24hr.json"),
        ("okx_tickers", "okx_tickers.json"),
        ("bybit_tickers", "bybit_tickers.json"),
    )
}
"""each venue's listing answer, and its 24-hour tickers under ``<venue>_tickers``"""


def read_listings() -> dict[str, Any]:
    return {name: json.loads(path.read_text()) for name, path in LISTINGS.items()}


ONE_MINUTE_FILE = next(s for s in BUNDLE if s.interval is Interval.M1)
BINANCE_INTERVALS = {i.value: i for i in Interval}
COINBASE_GRANULARITY = {60: Interval.M1, 300: Interval.M5, 900: Interval.M15, 3600: Interval.H1, 86400: Interval.D1}
OKX_BAR = {"1m": Interval.M1, "5m": Interval.M5, "15m": Interval.M15, "1H": Interval.H1, "4H": Interval.H4}
OKX_BAR["1Dutc"] = Interval.D1
BYBIT_INTERVAL = {"1": Interval.M1, "5": Interval.M5, "15": Interval.M15, "60": Interval.H1, "240": Interval.H4}
BYBIT_INTERVAL["D"] = Interval.D1
ADVANCED_GRANULARITY = {"ONE_MINUTE": Interval.M1, "FIVE_MINUTE": Interval.M5, "ONE_HOUR": Interval.H1}
ADVANCED_GRANULARITY |= {"FIFTEEN_MINUTE": Interval.M15, "ONE_DAY": Interval.D1}
KRAKEN_INTERVAL = {
    1: Interval.M1,
    5: Interval.M5,
    15: Interval.M15,
    60: Interval.H1,
    240: Interval.H4,
    1440: Interval.D1,
}


def load_series(bundle_dir: Path = DEFAULT_BUNDLE) -> dict[Interval, list[Bar]]:
    minutes = read_bars(bundle_dir, ONE_MINUTE_FILE)
    return {i: (minutes if i is Interval.M1 else rollup(minutes, i)) for i in Interval}


@dataclass
class Hit:
    path: str
    params: dict[str, str]
    at: float
    status: int


@dataclass
class FakeExchange:
    series: dict[Interval, list[Bar]]
    weight_limit: int = 6000
    weight_offset: int = 0  # weight "other clients on this IP" used, added to the reported header
    faults: deque[tuple[Any, ...]] = field(default_factory=deque)
    hits: list[Hit] = field(default_factory=list)
    trades: dict[str, list[list[Any]]] = field(default_factory=dict)  # Kraken /0/public/Trades rows per pair id
    trades_latest: bool = False
    kraken_extra: list[str] = field(default_factory=list)  # more assets listed against USD (a test's own symbols)
    _weights: deque[tuple[float, int]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _keys: dict[Interval, list[int]] = field(default_factory=dict)
    mangle: Callable[[str, list[Any]], list[Any]] | None = None  # (venue, answer rows) -> the rows sent instead
    listings: dict[str, Any] = field(default_factory=lambda: read_listings())
    """each venue's listing and ticker answers (their documented formats); a test edits them, None answers 503"""
    ccxt_pairs: bool = False  # AssetPairs answers the generated pairs ccxt loads, not the listing fixture

    @property
    def first_ms(self) -> int:
        return self.series[Interval.M1][0].ts_ms

    @property
    def end_ms(self) -> int:
        """The fake's "now": the end of its data (Kraken keeps the 720 candles before it)."""
        return self.series[Interval.M1][-1].ts_ms + 60_000

    def script(self, *faults: tuple[Any, ...]) -> None:
        with self._lock:
            self.faults.extend(faults)

    def requests(self, prefix: str = "") -> list[Hit]:
        return [h for h in self.hits if h.path.startswith(prefix)]

    def _slice(self, interval: Interval, start_ms: int, end_ms: int) -> list[Bar]:

        bars = self.series[interval]
        keys = self._keys[interval]
        lo = bisect.bisect_left(keys, start_ms)
        hi = bisect.bisect_left(keys, end_ms)
        return bars[lo:hi]

    def index(self) -> None:
        self._keys = {i: [b.ts_ms for b in bars] for i, bars in self.series.items()}

    async def _fault(self, request: Request) -> Response | None:
        with self._lock:
            fault = self.faults.popleft() if self.faults else None
        if fault is None:
            return None
        kind = fault[0]
        if kind in ("429", "418"):
            headers = {"Retry-After": str(fault[1])} if len(fault) > 1 and fault[1] is not None else {}
            return JSONResponse({"code": -1003, "msg": "Too many requests"}, status_code=int(kind), headers=headers)
        if kind == "500":
            return JSONResponse({"msg": "internal error"}, status_code=500)
        if kind == "slow":
            await asyncio.sleep(fault[1])
            return None
        if kind == "kraken-rate":
            return JSONResponse({"error": ["EGeneral:Too many requests"]})
        if kind == "bybit-rate":
            return JSONResponse({"retCode": 10006, "retMsg": "Too many visits!", "result": {}})
        if kind == "okx-rate":
            return JSONResponse({"code": "50011", "msg": "Too Many Requests", "data": []})
        raise ValueError(f"unknown fault {fault}")

    def _log(self, request: Request, status: int) -> None:
        self.hits.append(Hit(request.url.path, dict(request.query_params), time.monotonic(), status))

    def _faultable(self, answer: Callable[[Request], Response]) -> Callable[[Request], Awaitable[Response]]:
        """The endpoint ``answer`` serves, giving way to the next scripted fault; every request logged."""

        async def endpoint(request: Request) -> Response:
            response = await self._fault(request) or answer(request)
            self._log(request, response.status_code)
            return response

        return endpoint

    def _binance(self, request: Request) -> Response:
        q = request.query_params
        now = time.monotonic()
        with self._lock:
            while self._weights and self._weights[0][0] < now - 60:
                self._weights.popleft()
            used = sum(w for _, w in self._weights) + 2
            self._weights.append((now, 2))
        headers = {"X-MBX-USED-WEIGHT-1M": str(used + self.weight_offset)}
        if used > self.weight_limit:
            return JSONResponse({"code": -1003, "msg": "weight limit"}, 429, headers={**headers, "Retry-After": "1"})
        if q.get("symbol") != "BTCUSDT":
            return JSONResponse({"code": -1121, "msg": "Invalid symbol."}, 400, headers=headers)
        interval = BINANCE_INTERVALS.get(q.get("interval", ""))
        if interval is None:
            return JSONResponse({"code": -1120, "msg": "Invalid interval."}, 400, headers=headers)
        limit = min(int(q.get("limit", 500)), 1000)
        start = int(q.get("startTime", 0))
        end = int(q.get("endTime", 2**62)) + 1
        bars = self._slice(interval, start, end)[:limit]
        rows = [
            [b.ts_ms, f"{b.open}", f"{b.high}", f"{b.low}", f"{b.close}", f"{b.volume}", b.ts_ms + interval.millis - 1,
             "0", b.trades, "0", "0", "0"]
            for b in bars
        ]  # fmt: skip
        return JSONResponse(self._mangled("binance", rows), headers=headers)

    def _coinbase(self, request: Request) -> Response:
        if request.path_params["product"] != "BTC-USD":
            return JSONResponse({"message": "NotFound"}, 404)
        q = request.query_params
        interval = COINBASE_GRANULARITY.get(int(q.get("granularity", 0)))
        if interval is None:
            return JSONResponse({"message": "Unsupported granularity"}, 400)
        start = int(datetime.fromisoformat(q["start"].replace("Z", "+00:00")).timestamp() * 1000)
        end = int(datetime.fromisoformat(q["end"].replace("Z", "+00:00")).timestamp() * 1000)
        if (end - start) // interval.millis + 1 > 300:
            return JSONResponse({"message": "granularity too small for the requested time range"}, 400)
        bars = self._slice(interval, start, end + 1)  # Coinbase's end is inclusive
        rows = [[b.ts_ms // 1000, b.low, b.high, b.open, b.close, b.volume] for b in reversed(bars) if b.volume > 0]
        return JSONResponse(self._mangled("coinbase", rows))

    def _kraken(self, request: Request) -> Response:
        q = request.query_params
        if q.get("pair") not in ("XBTUSD", "XXBTZUSD"):  # the altname (ours) or the id (ccxt's)
            return JSONResponse({"error": ["EQuery:Unknown asset pair"]})
        interval = KRAKEN_INTERVAL.get(int(q.get("interval", 1)))
        if interval is None:
            return JSONResponse({"error": ["EGeneral:Invalid arguments"]})
        since_ms = int(q.get("since", 0)) * 1000
        end = self.end_ms
        keep_from = interval.bucket_ms(end - 1) - 719 * interval.millis  # the 720 most recent, the open one last
        bars = self._slice(interval, max(since_ms + 1, keep_from), end)
        rows = [
            [b.ts_ms // 1000, f"{b.open}", f"{b.high}", f"{b.low}", f"{b.close}", f"{b.close}", f"{b.volume}", b.trades]
            for b in bars
        ]
        last = rows[-2][0] if len(rows) >= 2 else since_ms // 1000
        return JSONResponse({"error": [], "result": {"XXBTZUSD": self._mangled("kraken", rows), "last": last}})

    def _mangled(self, venue: str, rows: list[Any]) -> list[Any]:
        return self.mangle(venue, rows) if self.mangle else rows

    def _okx(self, request: Request) -> Response:
        q = request.query_params
        if q.get("instId") != "BTC-USDT":
            return JSONResponse({"code": "51001", "msg": "Instrument ID does not exist", "data": []})
        interval = OKX_BAR.get(q.get("bar", "1m"))
        if interval is None:
            return JSONResponse({"code": "51000", "msg": "Parameter bar error", "data": []})
        older_than = int(q.get("after", 2**62))
        newer_than = int(q.get("before", -1))
        limit = min(int(q.get("limit", 100)), 100)
        bars = self._slice(interval, newer_than + 1, older_than)[-limit:]
        rows = [
            [str(b.ts_ms), f"{b.open}", f"{b.high}", f"{b.low}", f"{b.close}", f"{b.volume}", "0", "0", "1"]
            for b in reversed(bars)
        ]  # newest first
        return JSONResponse({"code": "0", "msg": "", "data": self._mangled("okx", rows)})

    def _bybit(self, request: Request) -> Response:
        q = request.query_params
        if q.get("category") != "spot" or q.get("symbol") != "BTCUSDT":
            return JSONResponse({"retCode": 10001, "retMsg": "Not supported symbols", "result": {}})
        interval = BYBIT_INTERVAL.get(q.get("interval", ""))
        if interval is None:
            return JSONResponse({"retCode": 10001, "retMsg": "Invalid period!", "result": {}})
        limit = min(int(q.get("limit", 200)), 1000)
        bars = self._slice(interval, int(q.get("start", 0)), int(q.get("end", 2**62)) + 1)[-limit:]
        rows = [[str(b.ts_ms), f"{b.open}", f"{b.high}", f"{b.low}", f"{b.close}", f"{b.volume}", "0"] for b in bars]
        result = {"symbol": "BTCUSDT", "category": "spot", "list": self._mangled("bybit", rows[::-1])}  # newest first
        return JSONResponse({"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": 0})

    def _coinbase_advanced(self, request: Request) -> Response:
        if request.path_params["product"] != "BTC-USD":
            return JSONResponse({"error": "NOT_FOUND", "message": "product not found"}, 404)
        q = request.query_params
        interval = ADVANCED_GRANULARITY.get(q.get("granularity", ""))
        if interval is None:
            return JSONResponse({"error": "INVALID_ARGUMENT", "message": "granularity"}, 400)
        start, end = int(q["start"]) * 1000, int(q["end"]) * 1000
        if (end - start) // interval.millis + 1 > 350:
            return JSONResponse({"error": "INVALID_ARGUMENT", "message": "number of candles requested > 350"}, 400)
        bars = self._slice(interval, start, end + 1)  # end is inclusive
        rows = [
            {"start": str(b.ts_ms // 1000), "low": f"{b.low}", "high": f"{b.high}", "open": f"{b.open}",
             "close": f"{b.close}", "volume": f"{b.volume}"}
            for b in reversed(bars)
        ]  # fmt: skip
        return JSONResponse({"candles": rows})

    async def kraken_assets(self, request: Request) -> Response:
        """Kraken's asset list, what ccxt loads first (https://docs.kraken.com/api/docs/rest-api/get-asset-info)."""
        self._log(request, 200)
        listed = [("XXBT", "XBT"), ("XETH", "ETH"), ("ZUSD", "USD"), *((a, a) for a in self.kraken_extra)]
        assets = {k: {"aclass": "currency", "altname": a, "decimals": 10, "display_decimals": 5, "status": "enabled"}
                  for k, a in listed}  # fmt: skip
        return JSONResponse({"error": [], "result": assets})

    async def kraken_asset_pairs(self, request: Request) -> Response:
        return await (self.kraken_pairs if self.ccxt_pairs else self.listing("kraken"))(request)

    async def kraken_pairs(self, request: Request) -> Response:
        """Kraken's tradable pairs (https://docs.kraken.com/api/docs/rest-api/get-tradable-asset-pairs)."""
        self._log(request, 200)
        result = {
            f"{base}ZUSD": {
                "altname": f"{alt}USD", "wsname": f"{alt}/USD", "aclass_base": "currency", "base": base,
                "aclass_quote": "currency", "quote": "ZUSD", "lot": "unit", "pair_decimals": 2, "lot_decimals": 8,
                "lot_multiplier": 1, "fees": [[0, 0.26]], "fees_maker": [[0, 0.16]], "fee_volume_currency": "ZUSD",
                "ordermin": "0.0001", "status": "online",
            }
            for base, alt in (("XXBT", "XBT"), ("XETH", "ETH"), *((a, a) for a in self.kraken_extra))
        }  # fmt: skip
        return JSONResponse({"error": [], "result": result})

    def _kraken_trades(self, request: Request) -> Response:
        """Kraken's recent trades (https://docs.kraken.com/api/docs/rest-api/get-recent-trades): the scripted
        ``trades`` rows ``[price, volume, time_s, side, type, misc, trade_id]`` from ``since`` (seconds or
        nanoseconds) on, oldest first; with ``trades_latest`` the newest ``count`` whatever ``since`` (as the
        exchanges without a ``since`` parameter answer)."""
        q = request.query_params
        since = int(q.get("since", 0))
        since_s = since / 1e9 if since > 10**12 else since
        rows = [r for r in self.trades.get(q.get("pair", ""), []) if float(r[2]) >= since_s]
        count = int(q.get("count", 1000))
        rows = rows[-count:] if self.trades_latest else rows[:count]
        last = str(int(float(rows[-1][2]) * 1e9)) if rows else q.get("since", "0")
        return JSONResponse({"error": [], "result": {q.get("pair", ""): rows, "last": last}})

    def listing(self, venue: str) -> Any:
        async def answer(request: Request) -> Response:
            body = self.listings.get(venue)
            self._log(request, 200 if body is not None else 503)
            return JSONResponse(body) if body is not None else Response(status_code=503)

        return answer

    def app(self) -> Starlette:
        self.index()
        return Starlette(
            routes=[
                Route("/api/v3/klines", self._faultable(self._binance)),
                Route("/products/{product}/candles", self._faultable(self._coinbase)),
                Route("/0/public/OHLC", self._faultable(self._kraken)),
                Route("/0/public/Assets", self.kraken_assets),
                Route("/0/public/AssetPairs", self.kraken_asset_pairs),
                Route("/0/public/Trades", self._faultable(self._kraken_trades)),
                Route("/api/v5/market/history-candles", self._faultable(self._okx)),
                Route("/v5/market/kline", self._faultable(self._bybit)),
                Route("/market/products/{product}/candles", self._faultable(self._coinbase_advanced)),
                Route("/api/v3/exchangeInfo", self.listing("binance")),
                Route("/products", self.listing("coinbase")),
                Route("/api/v5/public/instruments", self.listing("okx")),
                Route("/v5/market/instruments-info", self.listing("bybit")),
                Route("/market/products", self.listing("coinbase_advanced")),
                Route("/api/v3/ticker/24hr", self.listing("binance_tickers")),
                Route("/api/v5/market/tickers", self.listing("okx_tickers")),
                Route("/v5/market/tickers", self.listing("bybit_tickers")),
            ]
        )
