"""A fake exchange REST API on loopback: Binance klines, Coinbase candles and Kraken OHLC in each
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
import threading
import time
from collections import deque
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

ONE_MINUTE_FILE = next(s for s in BUNDLE if s.interval is Interval.M1)
BINANCE_INTERVALS = {i.value: i for i in Interval}
COINBASE_GRANULARITY = {60: Interval.M1, 300: Interval.M5, 900: Interval.M15, 3600: Interval.H1, 86400: Interval.D1}
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
    _weights: deque[tuple[float, int]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _keys: dict[Interval, list[int]] = field(default_factory=dict)

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
        raise ValueError(f"unknown fault {fault}")

    def _log(self, request: Request, status: int) -> None:
        self.hits.append(Hit(request.url.path, dict(request.query_params), time.monotonic(), status))

    async def binance(self, request: Request) -> Response:
        response = await self._fault(request) or self._binance(request)
        self._log(request, response.status_code)
        return response

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
        return JSONResponse(rows, headers=headers)

    async def coinbase(self, request: Request) -> Response:
        response = await self._fault(request) or self._coinbase(request)
        self._log(request, response.status_code)
        return response

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
        return JSONResponse(rows)

    async def kraken(self, request: Request) -> Response:
        response = await self._fault(request) or self._kraken(request)
        self._log(request, response.status_code)
        return response

    def _kraken(self, request: Request) -> Response:
        q = request.query_params
        if q.get("pair") != "XBTUSD":
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
        return JSONResponse({"error": [], "result": {"XXBTZUSD": rows, "last": last}})

    def app(self) -> Starlette:
        self.index()
        return Starlette(
            routes=[
                Route("/api/v3/klines", self.binance),
                Route("/products/{product}/candles", self.coinbase),
                Route("/0/public/OHLC", self.kraken),
            ]
        )
