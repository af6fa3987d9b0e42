"""A fake CoinGecko API v3 on loopback, serving the real bundled CoinGecko snapshots (data/marketcap):
``/coins/markets``, ``/global`` and ``/coins/{id}/market_chart`` as of a settable day.

Every request is recorded (path, params, headers); ``require_key`` makes it answer 401
without the ``x-cg-demo-api-key`` header, like the real API with a wrong key.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenpulse_ingest.bundle import MARKETCAP_FILES, read_marketcaps
from tokenpulse_shared.settings import DEFAULT_BUNDLE
from tokenpulse_shared.timeutil import DAY_MS

IDS = {"bitcoin": "BTC", "ethereum": "ETH", "solana": "SOL"}


def load_caps(bundle_dir: Path = DEFAULT_BUNDLE) -> dict[str | None, dict[int, tuple[float, float | None]]]:
    """{symbol or None (total): {day_ms: (market_cap, volume)}} from the bundled CoinGecko files."""
    return {
        spec.symbol: {p.ts_ms: (p.market_cap, p.volume) for p in read_marketcaps(bundle_dir, spec)}
        for spec in MARKETCAP_FILES
    }


@dataclass
class Seen:
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    at: float


@dataclass
class FakeCoinGecko:
    caps: dict[str | None, dict[int, tuple[float, float | None]]]
    as_of: date
    require_key: str | None = None
    hits: list[Seen] = field(default_factory=list)
    ranking: list[dict[str, object]] | None = None
    """rows ``/coins/markets`` answers without ``ids`` (ordered by market cap, paged); None: the bundled coins"""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def day_ms(self) -> int:
        return int(datetime(self.as_of.year, self.as_of.month, self.as_of.day, tzinfo=UTC).timestamp() * 1000)

    def _record(self, request: Request) -> Response | None:
        with self._lock:
            self.hits.append(
                Seen(request.url.path, dict(request.query_params), dict(request.headers), time.monotonic())
            )
        if self.require_key and request.headers.get("x-cg-demo-api-key") != self.require_key:
            return JSONResponse({"status": {"error_code": 10002, "error_message": "API key missing or wrong"}}, 401)
        return None

    def paths(self, prefix: str = "/") -> list[str]:
        return [h.path for h in self.hits if h.path.startswith(prefix)]

    async def markets(self, request: Request) -> Response:
        refused = self._record(request)
        if refused:
            return refused
        ids = [i for i in request.query_params.get("ids", "").split(",") if i]
        if not ids:
            return self._ranked(request)
        rows = []
        for coin in ids:
            symbol = IDS.get(coin)
            if symbol is None or self.day_ms not in self.caps[symbol]:
                continue
            cap, volume = self.caps[symbol][self.day_ms]
            rows.append(
                {
                    "id": coin,
                    "symbol": symbol.lower(),
                    "market_cap": cap,
                    "total_volume": volume,
                    "last_updated": datetime.fromtimestamp(self.day_ms / 1000, UTC).isoformat(),
                }
            )
        return JSONResponse(rows)

    def _ranked(self, request: Request) -> Response:
        """The largest coins first, ``per_page`` a page (the form a top-N by market cap reads)."""
        rows = self.ranking
        if rows is None:
            rows = [{"id": coin, "symbol": s.lower(), "market_cap": self.caps[s][self.day_ms][0]}
                    for coin, s in IDS.items() if self.day_ms in self.caps[s]]  # fmt: skip
        if all(isinstance(r, dict) and isinstance(r.get("market_cap"), int | float | None) for r in rows):
            rows = sorted(rows, key=lambda r: -float(r.get("market_cap") or 0))  # type: ignore[arg-type]
        per_page, page = int(request.query_params.get("per_page", 100)), int(request.query_params.get("page", 1))
        return JSONResponse(rows[(page - 1) * per_page : page * per_page])

    async def global_(self, request: Request) -> Response:
        refused = self._record(request)
        if refused:
            return refused
        total, volume = self.caps[None][self.day_ms]
        btc = self.caps["BTC"][self.day_ms][0]
        return JSONResponse(
            {
                "data": {
                    "total_market_cap": {"usd": total},
                    "total_volume": {"usd": volume},
                    "market_cap_percentage": {"btc": 100 * btc / total},
                    "updated_at": self.day_ms // 1000,
                }
            }
        )

    async def chart(self, request: Request) -> Response:
        refused = self._record(request)
        if refused:
            return refused
        symbol = IDS.get(request.path_params["coin"])
        if symbol is None:
            return JSONResponse({"error": "coin not found"}, 404)
        days = int(request.query_params.get("days", 1))
        first = self.day_ms - days * DAY_MS
        points = [(t, v) for t, v in sorted(self.caps[symbol].items()) if first <= t <= self.day_ms]
        return JSONResponse(
            {
                "prices": [],
                "market_caps": [[t, cap] for t, (cap, _) in points],
                "total_volumes": [[t, vol or 0] for t, (_, vol) in points],
            }
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v3/coins/markets", self.markets),
                Route("/api/v3/global", self.global_),
                Route("/api/v3/coins/{coin}/market_chart", self.chart),
            ]
        )
