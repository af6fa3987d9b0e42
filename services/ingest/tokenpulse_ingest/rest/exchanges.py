"""Candle (kline) endpoints of the exchanges, paginated, as :class:`Bar` lists.

* Binance spot ``GET /api/v3/klines`` (``symbol=BTCUSDT``, ``interval``, ``startTime``,
  ``endTime``, ``limit`` ≤ 1000; weight 2). Rows ``[open_ms, o, h, l, c, v, close_ms, qv,
  trades, ...]``. Quote USDT.
* Coinbase Exchange ``GET /products/BTC-USD/candles`` (``granularity`` in seconds: 60, 300,
  900, 3600, 21600, 86400 — no 4 h, rolled up from 1 h here; ``start``/``end`` ISO; ≤ 300
  rows per answer, newest first; empty minutes omitted). Rows ``[time_s, low, high, open,
  close, volume]``. Quote USD.
* Kraken ``GET /0/public/OHLC`` (``pair=XBTUSD``, ``interval`` minutes, ``since`` seconds;
  only the 720 most recent candles exist; the last row is the open candle). Rows
  ``[time_s, o, h, l, c, vwap, volume, count]``. Errors come as HTTP 200 with an ``error``
  list (rate limits included). Quote USD.

Each fetch returns the bars whose open time is in ``[start_ms, end_ms)``, sorted, without
duplicates, whatever the pages overlap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from tokenpulse_shared.events import Interval
from tokenpulse_shared.settings import Settings

from tokenpulse_ingest.bundle import Bar, rollup
from tokenpulse_ingest.rest.client import RateLimited, RestClient, RestError, Sleep

PageHook = Callable[[int], None]  # called with the number of bars each page added


@dataclass
class FetchResult:
    bars: list[Bar]
    requests: int = 0


class Exchange:
    name: ClassVar[str]
    quote: ClassVar[str]
    native: ClassVar[dict[Interval, Any]]
    page_limit: ClassVar[int]

    def __init__(self, client: RestClient, pairs: dict[str, str] | None = None) -> None:
        self.client = client
        self.pairs = pairs or {}  # TOKENPULSE_FEED_PAIRS overrides (the live connectors' venue names)

    def pair(self, symbol: str) -> str:
        return self.pairs.get(symbol) or self.default_pair(symbol)

    def default_pair(self, symbol: str) -> str:
        raise NotImplementedError

    async def _fetch_native(
        self, symbol: str, interval: Interval, start_ms: int, end_ms: int, on_page: PageHook | None
    ) -> list[Bar]:
        raise NotImplementedError

    async def fetch(
        self, symbol: str, interval: Interval, start_ms: int, end_ms: int, on_page: PageHook | None = None
    ) -> list[Bar]:
        """Closed bars with open time in [start_ms, end_ms); intervals the exchange lacks are rolled up."""
        if end_ms <= start_ms:
            return []
        if interval in self.native:
            return _clean(await self._fetch_native(symbol, interval, start_ms, end_ms, on_page), start_ms, end_ms)
        finer = max((i for i in self.native if interval.millis % i.millis == 0), key=lambda i: i.millis)
        bars = _clean(await self._fetch_native(symbol, finer, start_ms, end_ms, on_page), start_ms, end_ms)
        return rollup(bars, interval)


def _clean(bars: list[Bar], start_ms: int, end_ms: int) -> list[Bar]:
    """In time order, one bar per open time, within [start_ms, end_ms) (pages may overlap or come newest first)."""
    by_ts = {b.ts_ms: b for b in bars if start_ms <= b.ts_ms < end_ms}
    return [by_ts[t] for t in sorted(by_ts)]


def _f(value: Any) -> float:
    return float(value)


class Binance(Exchange):
    name = "binance"
    quote = "USDT"
    native: ClassVar[dict[Interval, Any]] = {i: i.value for i in Interval}
    page_limit = 1000
    weight = 2  # GET /api/v3/klines, any limit

    def default_pair(self, symbol: str) -> str:
        return f"{symbol}USDT"

    async def _fetch_native(
        self, symbol: str, interval: Interval, start_ms: int, end_ms: int, on_page: PageHook | None
    ) -> list[Bar]:
        out: list[Bar] = []
        cursor = start_ms
        while cursor < end_ms:
            rows = await self.client.get(
                "/api/v3/klines",
                {
                    "symbol": self.pair(symbol),
                    "interval": self.native[interval],
                    "startTime": cursor,
                    "endTime": end_ms - 1,
                    "limit": self.page_limit,
                },
                weight=self.weight,
            )
            if not isinstance(rows, list):
                raise RestError(f"binance klines: unexpected answer {str(rows)[:200]}")
            page = [
                Bar(int(r[0]), _f(r[1]), _f(r[2]), _f(r[3]), _f(r[4]), _f(r[5]), self.name, int(r[8]))
                for r in rows
                if int(r[0]) < end_ms
            ]
            out.extend(page)
            if on_page:
                on_page(len(page))
            if len(rows) < self.page_limit or not page:
                break
            cursor = page[-1].ts_ms + interval.millis
        return out


class Coinbase(Exchange):
    name = "coinbase"
    quote = "USD"
    native: ClassVar[dict[Interval, Any]] = {
        Interval.M1: 60,
        Interval.M5: 300,
        Interval.M15: 900,
        Interval.H1: 3600,
        Interval.D1: 86400,
    }
    page_limit = 300

    def default_pair(self, symbol: str) -> str:
        return f"{symbol}-USD"

    async def _fetch_native(
        self, symbol: str, interval: Interval, start_ms: int, end_ms: int, on_page: PageHook | None
    ) -> list[Bar]:
        out: list[Bar] = []
        span = self.page_limit * interval.millis
        cursor = start_ms
        while cursor < end_ms:
            stop = min(cursor + span, end_ms)
            rows = await self.client.get(
                f"/products/{self.pair(symbol)}/candles",
                {
                    "granularity": self.native[interval],
                    "start": _iso(cursor),
                    "end": _iso(stop - interval.millis),  # Coinbase's end is inclusive
                },
            )
            if not isinstance(rows, list):
                raise RestError(f"coinbase candles: unexpected answer {str(rows)[:200]}")
            page = [
                Bar(int(r[0]) * 1000, _f(r[3]), _f(r[2]), _f(r[1]), _f(r[4]), _f(r[5]), self.name)
                for r in rows
                if cursor <= int(r[0]) * 1000 < stop
            ]
            out.extend(page)
            if on_page:
                on_page(len(page))
            cursor = stop
        return out


def _kraken_check(body: Any) -> None:
    errors = body.get("error") if isinstance(body, dict) else None
    if errors:
        text = "; ".join(str(e) for e in errors)
        if "Too many requests" in text or "Rate limit" in text:
            raise RateLimited(f"kraken: {text}")
        raise RestError(f"kraken: {text}")


class Kraken(Exchange):
    name = "kraken"
    quote = "USD"
    native: ClassVar[dict[Interval, Any]] = {
        Interval.M1: 1,
        Interval.M5: 5,
        Interval.M15: 15,
        Interval.H1: 60,
        Interval.H4: 240,
        Interval.D1: 1440,
    }
    page_limit = 720
    aliases: ClassVar[dict[str, str]] = {"BTC": "XBT", "DOGE": "XDG"}

    def default_pair(self, symbol: str) -> str:
        return f"{self.aliases.get(symbol, symbol)}USD"

    def pair(self, symbol: str) -> str:
        venue = self.pairs.get(symbol)  # the WebSocket name BASE/QUOTE -> the REST name, e.g. XBTUSD
        if venue and "/" in venue:
            base, quote = venue.split("/", 1)
            return f"{self.aliases.get(base, base)}{quote}"
        return venue or self.default_pair(symbol)

    async def _fetch_native(
        self, symbol: str, interval: Interval, start_ms: int, end_ms: int, on_page: PageHook | None
    ) -> list[Bar]:
        out: list[Bar] = []
        since_s = start_ms // 1000 - 1  # Kraken returns candles after `since`
        while True:
            body = await self.client.get(
                "/0/public/OHLC", {"pair": self.pair(symbol), "interval": self.native[interval], "since": since_s}
            )
            result = body.get("result") or {}
            rows: list[Any] = next((v for k, v in result.items() if k != "last"), [])
            last = int(result.get("last") or 0)
            closed = rows[:-1]  # the last row is the candle still open
            page = [
                Bar(int(r[0]) * 1000, _f(r[1]), _f(r[2]), _f(r[3]), _f(r[4]), _f(r[6]), self.name, int(r[7]))
                for r in closed
                if start_ms <= int(r[0]) * 1000 < end_ms
            ]
            out.extend(page)
            if on_page:
                on_page(len(page))
            if not closed or last <= since_s or last * 1000 >= end_ms - interval.millis:
                break  # reached the end, or nothing newer: older candles than Kraken keeps are unavailable
            since_s = last
        return out


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


EXCHANGES: dict[str, type[Exchange]] = {"binance": Binance, "coinbase": Coinbase, "kraken": Kraken}


def _overrides(name: str, settings: Settings) -> dict[str, str]:
    """Pairs named in TOKENPULSE_FEED_PAIRS for this exchange (the defaults are the same as the connectors')."""
    out = {}
    for item in settings.feed_pairs:
        ex, _, rest = item.partition(":")
        symbol, _, venue = rest.partition("=")
        if ex.strip().lower() == name and venue.strip() not in ("", "-"):
            out[symbol.strip().upper()] = venue.strip().upper()
    return out


def make_exchange(name: str, settings: Settings, *, sleep: Sleep | None = None) -> Exchange:
    """An exchange's candle endpoint with the limits from settings."""
    if name == "binance":
        client = RestClient(
            "binance",
            settings.binance_rest_url,
            capacity=settings.binance_weight_per_minute,
            period=60.0,
            weight_header="X-MBX-USED-WEIGHT-1M",
            weight_limit=settings.binance_weight_per_minute,
            max_wait_s=settings.rest_max_wait_s,
            sleep=sleep,
        )
        return Binance(client, _overrides(name, settings))
    if name == "coinbase":
        rate = settings.coinbase_requests_per_s
        client = RestClient(
            "coinbase", settings.coinbase_rest_url, capacity=max(1.0, rate), period=max(1.0, rate) / rate,
            max_wait_s=settings.rest_max_wait_s, sleep=sleep,
        )  # fmt: skip
        return Coinbase(client, _overrides(name, settings))
    if name == "kraken":
        rate = settings.kraken_requests_per_s
        client = RestClient(
            "kraken", settings.kraken_rest_url, capacity=max(1.0, rate), period=max(1.0, rate) / rate,
            max_wait_s=settings.rest_max_wait_s, sleep=sleep, check=_kraken_check,
        )  # fmt: skip
        return Kraken(client, _overrides(name, settings))
    raise ValueError(f"unknown exchange {name!r}; choose one of {', '.join(EXCHANGES)}")
