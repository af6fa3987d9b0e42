"""Bybit spot: live trades, candle history and limits — the venue in one place (``VENUE`` at the end).

Live: the v5 public WebSocket for spot (``wss://stream.bybit.com/v5/public/spot``), topic
``publicTrade.<SYMBOL>``; one ``{"op": "subscribe", "args": ["publicTrade.BTCUSDT", ...]}``
(spot takes at most 10 args per request, so larger lists are split). Trades arrive as
``{"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts", "data": [{"T", "s", "S", "v", "p",
"L", "i", "BT", "seq"}]}`` (``T`` epoch ms, ``S`` the taker's side ``Buy``/``Sell``, numbers as
strings). Bybit asks for ``{"op": "ping"}`` every 20 s (answered with ``"op": "pong"`` or
``"ret_msg": "pong"``). Docs: https://bybit-exchange.github.io/docs/v5/websocket/public/trade

Gaps: the trade id ``i`` is documented as an opaque string (a UUID on derivatives) and ``seq``
is a cross sequence shared by the trades of one match, neither consecutive per trade: a hole
is noticed only as a reconnect or a stall (both reported as gaps); ``i`` still dedupes.

History: ``GET /v5/market/kline`` (``category=spot``, ``symbol``, ``interval`` 1/5/15/60/240/D,
``start``/``end`` ms inclusive, ``limit`` ≤ 1000; newest first, the open candle included). Rows
``[start_ms, o, h, l, c, volume, turnover]``. Errors come as HTTP 200 with ``retCode`` non-zero
(``10006``: rate limit). Quote USDT. Limits: 600 requests per 5 s per IP.
Docs: https://bybit-exchange.github.io/docs/v5/market/kline
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Generic, TypeVar

import msgspec
from tokenpulse_shared.events import Interval, Side

from tokenpulse_ingest.bundle import Bar
from tokenpulse_ingest.rest.client import RateLimited, RestClient, RestError
from tokenpulse_ingest.venues.connector import BadMessage, Connector, decode_frame, side_of
from tokenpulse_ingest.venues.history import CandleApi, PageHook, answer_rows, fields, integer, number
from tokenpulse_ingest.venues.spec import MAX_LISTED, Listings, PairNaming, Venue, Volumes, by_base, strict, volume

ARGS_PER_SUBSCRIBE = 10  # the spot stream's limit of topics per subscribe request


class _Trade(msgspec.Struct, gc=False):  # gc=False: decoded JSON holds no cycles
    """A trade's fields, all required: a trade without one is refused (``missing_field``)."""

    T: int  # epoch ms
    s: str
    S: str
    v: float  # quoted decimals, read as floats by msgspec (strict=False)
    p: float
    i: str


class _Frame(msgspec.Struct, gc=False):
    topic: str | None = None
    data: list[_Trade] | None = None
    op: str | None = None
    success: bool | None = None
    ret_msg: str | None = None


_DECODE = msgspec.json.Decoder(_Frame, strict=False).decode
_SIDES = {"Buy": Side.BUY, "Sell": Side.SELL}


class BybitConnector(Connector):
    name = "bybit"
    keepalive = (20.0, '{"op":"ping"}')

    def subscriptions(self) -> list[str]:
        topics = [f"publicTrade.{p.venue}" for p in self.pairs]
        return [
            msgspec.json.encode({"op": "subscribe", "args": topics[i : i + ARGS_PER_SUBSCRIBE]}).decode()
            for i in range(0, len(topics), ARGS_PER_SUBSCRIBE)
        ]

    def parse(self, raw: str | bytes) -> None:
        frame = decode_frame(_DECODE, raw)
        if frame.topic is None:
            if frame.success is False:
                raise BadMessage("error", str(frame.ret_msg)[:200])
            if frame.op in ("subscribe", "ping", "pong"):
                return
            raise BadMessage("unknown", str(raw)[:80])
        if not frame.topic.startswith("publicTrade.") or frame.data is None:
            raise BadMessage(f"unknown_topic:{frame.topic[:32]}")
        for t in frame.data:
            maker = self.maker_for(t.s)
            ts_us = t.T * 1000
            maker.add(ts_us, t.p, t.v, side_of(_SIDES, t.S), t.i)
            self.time_seen(maker.symbol, ts_us)  # no consecutive ids: only where a reconnect's gap starts


def _check(body: Any) -> None:
    if not isinstance(body, dict) or "retCode" not in body:
        raise RestError(f"bybit: unexpected answer {str(body)[:200]}")
    if body["retCode"] == 10006:
        raise RateLimited(f"bybit: {body.get('retMsg')}")
    if body["retCode"] != 0:
        raise RestError(f"bybit: {body['retCode']} {body.get('retMsg')}")


class BybitCandles(CandleApi):
    name = "bybit"
    quote = "USDT"
    native: ClassVar[dict[Interval, Any]] = {
        Interval.M1: "1",
        Interval.M5: "5",
        Interval.M15: "15",
        Interval.H1: "60",
        Interval.H4: "240",
        Interval.D1: "D",
    }
    page_limit = 1000

    async def _fetch_native(
        self, symbol: str, interval: Interval, start_ms: int, end_ms: int, on_page: PageHook | None
    ) -> list[Bar]:
        async def older(before: int) -> tuple[int, list[Bar]]:
            query = {"category": "spot", "symbol": self.pair(symbol), "interval": self.native[interval]}
            query |= {"start": start_ms, "end": before - 1, "limit": self.page_limit}  # Bybit's end is inclusive
            body = await self.client.get("/v5/market/kline", query)
            rows = answer_rows((body.get("result") or {}).get("list"), body, "bybit kline")
            return len(rows), self.bars(rows, self._bar)

        return await self.page_back(start_ms, end_ms, on_page, older, "bybit kline")

    def _bar(self, row: Any) -> Bar:
        r = fields(row, 6)  # [startTime, open, high, low, close, volume, turnover]
        return Bar(integer(r[0]), number(r[1]), number(r[2]), number(r[3]), number(r[4]), number(r[5]), self.name)


LISTING_QUOTES = ("USDT", "USDC")
R = TypeVar("R")


class _Instrument(msgspec.Struct, gc=False):
    symbol: str
    baseCoin: str
    quoteCoin: str
    status: str


class _Ticker(msgspec.Struct, gc=False):
    symbol: str
    turnover24h: float  # the quote currency's volume


class _Page(msgspec.Struct, Generic[R], gc=False):
    rows: Annotated[list[R], msgspec.Meta(max_length=MAX_LISTED)] = msgspec.field(name="list")


class _Answer(msgspec.Struct, Generic[R], gc=False):
    result: _Page[R]


async def listings(client: RestClient) -> Listings:
    """``GET /v5/market/instruments-info?category=spot`` (spot answers in one page): the pairs whose ``status``
    is ``Trading``. Docs: https://bybit-exchange.github.io/docs/v5/market/instrument"""
    body = await client.get("/v5/market/instruments-info", {"category": "spot"})
    rows = strict(body, _Answer[_Instrument], "bybit instruments-info").result.rows
    trading = (r for r in rows if r.status == "Trading")
    return by_base(((r.baseCoin, r.quoteCoin, r.symbol) for r in trading), LISTING_QUOTES)


async def volumes(client: RestClient) -> Volumes:
    """``GET /v5/market/tickers?category=spot``: ``turnover24h`` (quote currency) per pair.
    Docs: https://bybit-exchange.github.io/docs/v5/market/tickers"""
    body = await client.get("/v5/market/tickers", {"category": "spot"})
    rows = strict(body, _Answer[_Ticker], "bybit tickers").result.rows
    return {r.symbol: volume(r.turnover24h, "bybit tickers") for r in rows}


VENUE = Venue(
    "bybit", rest_check=_check, connector=BybitConnector, candles=BybitCandles,
    section=lambda s: s.bybit, listings=listings, volumes=volumes,
    pairs=PairNaming("{symbol}USDT", r"^[A-Z0-9]+?(USDT|USDC|USDE|EUR|BTC|ETH)$"),
)  # fmt: skip
