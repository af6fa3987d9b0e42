"""Binance spot: live trades, candle history and limits — the venue in one place (``VENUE`` at the end).

Live: the combined stream ``/stream?streams=btcusdt@aggTrade/...`` (subscriptions in the URL).

Frames are ``{"stream": "btcusdt@aggTrade", "data": {...}}``. ``aggTrade`` (default) carries the
aggregate trade id ``a``; ``trade`` carries the trade id ``t``; both are consecutive per symbol,
so a jump is a gap. ``m`` true means the buyer was the maker, i.e. the taker sold. Binance closes
every connection after 24 h and pings every 3 minutes (the websockets library answers pings);
both are handled by the reconnect loop. Docs: developers.binance.com, "WebSocket Streams".

History: ``GET /api/v3/klines`` (``symbol=BTCUSDT``, ``interval``, ``startTime``, ``endTime``,
``limit`` ≤ 1000; weight 2). Rows ``[open_ms, o, h, l, c, v, close_ms, qv, trades, ...]``. Quote
USDT. Limits: a request weight budget per minute, and the ``X-MBX-USED-WEIGHT-1M`` answer header.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
from tokenpulse_shared.events import Interval, Side
from tokenpulse_shared.settings import BinanceSettings

from tokenpulse_ingest.bundle import Bar
from tokenpulse_ingest.rest.client import RestClient, Sleep
from tokenpulse_ingest.venues.connector import BadMessage, Connector, decode_frame
from tokenpulse_ingest.venues.history import CandleApi, PageHook, answer_rows, fields, integer, kept, number
from tokenpulse_ingest.venues.spec import (
    MAX_LISTED,
    Listings,
    PairNaming,
    Venue,
    Volumes,
    by_base,
    strict,
    strict_rows,
    volume,
)


class _Data(msgspec.Struct, gc=False):  # gc=False: decoded JSON holds no cycles, so the GC need not track it
    """A trade's fields, all required: a frame without one is refused by the decoder (``missing_field``),
    never completed with a default (a lost ``T`` once made a tick dated 1970-01-01)."""

    e: str
    s: str
    p: float  # quoted decimals, read as floats by msgspec (strict=False)
    q: float
    T: int  # trade time, epoch ms
    m: bool  # buyer is the maker: the taker sold
    a: int | None = None  # aggTrade id; which id is required depends on `e`, checked in parse
    t: int | None = None  # trade id


class _Frame(msgspec.Struct, gc=False):  # only what parse reads: msgspec skips the other keys
    data: _Data | None = None
    id: object = None
    code: object = None
    msg: str | None = None


_BUY, _SELL = Side.BUY, Side.SELL
_DECODE = msgspec.json.Decoder(_Frame, strict=False).decode


class BinanceConnector(Connector):
    name = "binance"
    channel = "aggTrade"  # or "trade"

    def endpoint(self) -> str:
        streams = "/".join(f"{p.venue.lower()}@{self.channel}" for p in self.pairs)
        return f"{self.url.rstrip('/')}/stream?streams={streams}"

    def subscriptions(self) -> list[str]:
        return []  # in the URL

    def parse(self, raw: str | bytes) -> None:
        frame = decode_frame(_DECODE, raw)
        data = frame.data
        if data is None:
            if frame.code is not None or frame.msg is not None:
                raise BadMessage("error", f"{frame.code} {frame.msg}")
            if frame.id is not None:
                return  # the answer to a SUBSCRIBE request
            raise BadMessage("unknown", str(raw)[:80])
        kind = data.e
        if kind == "aggTrade":
            ident = data.a
        elif kind == "trade":
            ident = data.t
        else:
            raise BadMessage(f"unknown_event:{kind[:32]}")
        maker = self.maker_for(data.s)
        if ident is None:
            raise BadMessage("missing_field", "trade id")
        ts_us = data.T * 1000
        maker.add(ts_us, data.p, data.q, _SELL if data.m else _BUY, str(ident))
        self.trade_seen(maker.symbol, ident, ts_us)


class BinanceCandles(CandleApi):
    name = "binance"
    quote = "USDT"
    native: ClassVar[dict[Interval, Any]] = {i: i.value for i in Interval}
    page_limit = 1000
    weight = 2  # GET /api/v3/klines, any limit

    async def _fetch_native(
        self, symbol: str, interval: Interval, start_ms: int, end_ms: int, on_page: PageHook | None
    ) -> list[Bar]:
        out: list[Bar] = []
        cursor = start_ms
        while cursor < end_ms:
            query = {"symbol": self.pair(symbol), "interval": self.native[interval], "startTime": cursor}
            query |= {"endTime": end_ms - 1, "limit": self.page_limit}
            body = await self.client.get("/api/v3/klines", query, weight=self.weight)
            rows = answer_rows(body, body, "binance klines")
            page = [bar for bar in self.bars(rows, self._bar) if bar.ts_ms < end_ms]
            kept(page, out, on_page)
            if len(rows) < self.page_limit or not page:  # a full page of refused rows ends the paging too
                break
            cursor = page[-1].ts_ms + interval.millis
        return out

    def _bar(self, row: Any) -> Bar:
        r = fields(row, 9)  # [open_ms, o, h, l, c, v, close_ms, quote_volume, trades, ...]
        prices = number(r[1]), number(r[2]), number(r[3]), number(r[4])
        return Bar(integer(r[0]), *prices, number(r[5]), self.name, integer(r[8]))


def rest_client(section: BinanceSettings, max_wait_s: float, sleep: Sleep | None) -> RestClient:
    """A weight budget per minute, checked against the weight Binance says the IP used."""
    budget = section.weight_per_minute
    return RestClient(
        "binance", section.rest_url, capacity=budget, period=60.0, weight_header="X-MBX-USED-WEIGHT-1M",
        weight_limit=budget, max_wait_s=max_wait_s, sleep=sleep,
    )  # fmt: skip


LISTING_QUOTES = ("USDT", "USDC", "FDUSD", "USD")


class _Symbol(msgspec.Struct, gc=False):
    symbol: str
    status: str
    baseAsset: str
    quoteAsset: str


class _ExchangeInfo(msgspec.Struct, gc=False):
    symbols: Annotated[list[_Symbol], msgspec.Meta(max_length=MAX_LISTED)]


class _Ticker(msgspec.Struct, gc=False):
    symbol: str
    quoteVolume: float


async def listings(client: RestClient) -> Listings:
    """``GET /api/v3/exchangeInfo`` (weight 20): the spot pairs whose ``status`` is ``TRADING`` now."""
    body = await client.get("/api/v3/exchangeInfo", {"showPermissionSets": "false"}, weight=20)
    info = strict(body, _ExchangeInfo, "binance exchangeInfo")
    trading = (r for r in info.symbols if r.status == "TRADING")
    return by_base(((r.baseAsset, r.quoteAsset, r.symbol) for r in trading), LISTING_QUOTES)


async def volumes(client: RestClient) -> Volumes:
    """``GET /api/v3/ticker/24hr?type=MINI`` (every pair, weight 80): ``quoteVolume`` per pair."""
    body = await client.get("/api/v3/ticker/24hr", {"type": "MINI"}, weight=80)
    rows = strict_rows(body, _Ticker, "binance ticker/24hr")
    return {r.symbol: volume(r.quoteVolume, "binance ticker/24hr") for r in rows}


VENUE = Venue(
    "binance", connector=BinanceConnector, candles=BinanceCandles, rest_client=rest_client,
    section=lambda s: s.binance, listings=listings, volumes=volumes,
    pairs=PairNaming("{symbol}USDT", r"^[A-Z0-9]+?(USDT|USDC|FDUSD|TUSD|BUSD|USD|EUR|BTC|ETH)$"),
)  # fmt: skip
