"""OKX spot: live trades, candle history and limits — the venue in one place (``VENUE`` at the end).

Live: the v5 public WebSocket (``wss://ws.okx.com:8443/ws/v5/public``), ``trades`` channel; one
``{"op": "subscribe", "args": [{"channel": "trades", "instId": "BTC-USDT"}, ...]}`` for every pair.
Trades arrive as ``{"arg": {"channel": "trades", "instId": ...}, "data": [{"instId", "tradeId",
"px", "sz", "side", "ts", "count"}]}`` (numbers as strings, ``ts`` epoch ms, ``side`` the taker's).
OKX closes a connection that received nothing for 30 s unless the client sends the text ``ping``
(answered ``pong``): sent every 20 s here. Docs: https://www.okx.com/docs-v5/en/#public-data-websocket-trades-channel

Gaps: ``tradeId`` is consecutive per instrument; the ``trades`` channel may aggregate several
fills of one taker order into one push, ``tradeId`` being the last and ``count`` how many, so the
push covers ids ``tradeId - count + 1 .. tradeId``; a jump beyond that is a gap.

History: ``GET /api/v5/market/history-candles`` (``instId``, ``bar`` 1m/5m/15m/1H/4H/1Dutc,
``after`` = before this ms, ``before`` = after this ms, ``limit`` ≤ 100; newest first). Rows
``[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]`` (``confirm`` 0: the candle still open).
Errors come as ``{"code": "<non-zero>", "msg"}`` (``50011``: rate limit). Quote USDT. Limits:
20 requests per 2 s per IP. Docs: https://www.okx.com/docs-v5/en/#public-data-rest-api-get-candlesticks-history
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
from tokenpulse_shared.events import Interval, Side

from tokenpulse_ingest.bundle import Bar
from tokenpulse_ingest.rest.client import RateLimited, RestClient, RestError
from tokenpulse_ingest.venues.connector import BadMessage, Connector, decode_frame, side_of
from tokenpulse_ingest.venues.history import CandleApi, PageHook, answer_rows, fields, integer, number
from tokenpulse_ingest.venues.spec import MAX_LISTED, Listings, PairNaming, Venue, Volumes, by_base, strict, volume


class _Trade(msgspec.Struct, gc=False):  # gc=False: decoded JSON holds no cycles
    """A trade's fields, all required but ``count``: a trade without one is refused (``missing_field``)."""

    instId: str
    tradeId: str
    px: float  # quoted decimals, read as floats by msgspec (strict=False)
    sz: float
    side: str
    ts: int  # epoch ms, quoted
    count: int = 1


class _Arg(msgspec.Struct, gc=False):
    channel: str = ""
    instId: str = ""


class _Frame(msgspec.Struct, gc=False):
    arg: _Arg | None = None
    data: list[_Trade] | None = None
    event: str | None = None
    code: str | None = None
    msg: str | None = None


_DECODE = msgspec.json.Decoder(_Frame, strict=False).decode
_SIDES = {"buy": Side.BUY, "sell": Side.SELL}


class OkxConnector(Connector):
    name = "okx"
    keepalive = (20.0, "ping")

    def subscriptions(self) -> list[str]:
        args = [{"channel": "trades", "instId": p.venue} for p in self.pairs]
        return [msgspec.json.encode({"op": "subscribe", "args": args}).decode()]

    def parse(self, raw: str | bytes) -> None:
        if raw in ("pong", b"pong"):
            return
        frame = decode_frame(_DECODE, raw)
        if frame.event is not None:
            if frame.event == "error":
                raise BadMessage("error", f"{frame.code} {frame.msg}")
            if frame.event in ("subscribe", "unsubscribe", "notice"):
                return
            raise BadMessage(f"unknown_event:{frame.event[:32]}")
        if frame.arg is None or frame.arg.channel != "trades" or frame.data is None:
            raise BadMessage("unknown", str(raw)[:80])
        for t in frame.data:
            maker = self.maker_for(t.instId)
            ident = t.tradeId
            if not ident.isdigit():  # consecutive integers, read as such by the gap bookkeeping
                raise BadMessage("bad_trade_id", ident[:40])
            ts_us = t.ts * 1000
            maker.add(ts_us, t.px, t.sz, side_of(_SIDES, t.side), ident)
            self.trade_seen(maker.symbol, int(ident), ts_us, t.count if t.count > 1 else 1)


def _check(body: Any) -> None:
    if not isinstance(body, dict) or "code" not in body:
        raise RestError(f"okx: unexpected answer {str(body)[:200]}")
    if body["code"] == "50011":
        raise RateLimited(f"okx: {body.get('msg')}")
    if body["code"] != "0":
        raise RestError(f"okx: {body['code']} {body.get('msg')}")


class OkxCandles(CandleApi):
    name = "okx"
    quote = "USDT"
    native: ClassVar[dict[Interval, Any]] = {
        Interval.M1: "1m",
        Interval.M5: "5m",
        Interval.M15: "15m",
        Interval.H1: "1H",
        Interval.H4: "4H",  # OKX's hours count from Hong Kong midnight, 16:00 UTC: a multiple of 4 h
        Interval.D1: "1Dutc",  # plain "1D" starts at Hong Kong midnight
    }
    page_limit = 100

    async def _fetch_native(
        self, symbol: str, interval: Interval, start_ms: int, end_ms: int, on_page: PageHook | None
    ) -> list[Bar]:
        async def older(before: int) -> tuple[int, list[Bar]]:
            query = {"instId": self.pair(symbol), "bar": self.native[interval], "after": before}
            query |= {"before": start_ms - 1, "limit": self.page_limit}
            body = await self.client.get("/api/v5/market/history-candles", query)
            rows = answer_rows(body.get("data"), body, "okx history-candles")
            return len(rows), self.bars([r for r in rows if not _still_open(r)], self._bar)

        return await self.page_back(start_ms, end_ms, on_page, older, "okx history-candles")

    def _bar(self, row: Any) -> Bar:
        r = fields(row, 9)  # [ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]
        return Bar(integer(r[0]), number(r[1]), number(r[2]), number(r[3]), number(r[4]), number(r[5]), self.name)


def _still_open(row: Any) -> bool:
    """OKX marks the candle still forming with ``confirm`` "0"; it is not history yet."""
    return isinstance(row, list) and len(row) > 8 and row[8] == "0"


LISTING_QUOTES = ("USDT", "USDC", "USD")


class _Instrument(msgspec.Struct, gc=False):
    instType: str
    instId: str
    baseCcy: str
    quoteCcy: str
    state: str


class _Instruments(msgspec.Struct, gc=False):
    data: Annotated[list[_Instrument], msgspec.Meta(max_length=MAX_LISTED)]


class _Ticker(msgspec.Struct, gc=False):
    instId: str
    volCcy24h: float  # spot: the quote currency's volume


class _Tickers(msgspec.Struct, gc=False):
    data: Annotated[list[_Ticker], msgspec.Meta(max_length=MAX_LISTED)]


async def listings(client: RestClient) -> Listings:
    """``GET /api/v5/public/instruments?instType=SPOT``: the spot instruments whose ``state`` is ``live``
    (not ``suspend``, ``preopen`` or ``test``). Docs: https://www.okx.com/docs-v5/en/#public-data-rest-api-get-instruments"""
    body = await client.get("/api/v5/public/instruments", {"instType": "SPOT"})
    rows = strict(body, _Instruments, "okx instruments").data
    live = (r for r in rows if r.instType == "SPOT" and r.state == "live")
    return by_base(((r.baseCcy, r.quoteCcy, r.instId) for r in live), LISTING_QUOTES)


async def volumes(client: RestClient) -> Volumes:
    """``GET /api/v5/market/tickers?instType=SPOT``: ``volCcy24h`` (quote currency) per instrument.
    Docs: https://www.okx.com/docs-v5/en/#order-book-trading-market-data-get-tickers"""
    body = await client.get("/api/v5/market/tickers", {"instType": "SPOT"})
    return {r.instId: volume(r.volCcy24h, "okx tickers") for r in strict(body, _Tickers, "okx tickers").data}


VENUE = Venue(
    "okx", rest_check=_check, connector=OkxConnector, candles=OkxCandles, listings=listings, volumes=volumes,
    section=lambda s: s.okx,
    pairs=PairNaming("{symbol}-USDT", r"^[A-Z0-9]+-(USDT|USDC|USD|EUR|BTC|ETH)$"),
)  # fmt: skip
