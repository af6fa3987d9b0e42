"""Coinbase Advanced Trade: live trades, candle history and limits — the venue in one place (``VENUE`` at the end).

Live: ``wss://advanced-trade-ws.coinbase.com`` (public market data needs no key), one
``{"type": "subscribe", "product_ids": [...], "channel": "market_trades"}`` and one for the
``heartbeats`` channel, which keeps a quiet connection open (Coinbase closes one that sends
nothing for a minute) and feeds the stall detection. Every message is ``{"channel", "client_id",
"timestamp", "sequence_num", "events": [...]}``; a ``market_trades`` event is ``{"type": "snapshot"
| "update", "trades": [{"trade_id", "product_id", "price", "size", "side", "time"}]}`` (the
snapshot: the latest trades, newest first). ``side`` (``BUY``/``SELL``) is read as the taker's, as
ccxt reads it; the documentation does not say whose. Docs:
https://docs.cdp.coinbase.com/advanced-trade/docs/ws-channels#market-trades-channel

Gaps: ``trade_id`` is consecutive per product (the Exchange's trade ids), so a jump is a gap;
``sequence_num`` counts every message of the connection, all channels, so a jump means Coinbase
dropped messages (it does for slow readers): every pair is reported from its last trade to now
and re-baselined, so the trade-id jump that follows is not reported a second time.

History: ``GET /market/products/BTC-USD/candles`` (public; ``start``/``end`` epoch seconds,
``granularity`` ONE_MINUTE .. ONE_DAY, no 4 h: rolled up from 1 h; ≤ 350 candles per answer,
newest first) answering ``{"candles": [{"start", "low", "high", "open", "close", "volume"}]}``.
Quote USD. Limits: requests per second (public limit 10/s per IP).
Docs: https://docs.cdp.coinbase.com/advanced-trade/reference/retailbrokerageapi_getpublicproductcandles
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

import msgspec
from tokenpulse_shared.events import Interval, Side

from tokenpulse_ingest.bundle import Bar
from tokenpulse_ingest.rest.client import RestClient
from tokenpulse_ingest.venues.connector import BadMessage, Connector, decode_frame, micros, side_of
from tokenpulse_ingest.venues.history import BadRow, CandleApi, PageHook, answer_rows, integer, number
from tokenpulse_ingest.venues.spec import (
    MAX_LISTED,
    ListingError,
    Listings,
    PairNaming,
    Venue,
    Volumes,
    by_base,
    strict,
    volume,
)


class _Trade(msgspec.Struct, gc=False):  # gc=False: decoded JSON holds no cycles
    """A trade's fields, all required: a trade without one is refused (``missing_field``)."""

    trade_id: str
    product_id: str
    price: float  # quoted decimals, read as floats by msgspec (strict=False)
    size: float
    side: str
    time: datetime  # RFC 3339, decoded by msgspec


class _Event(msgspec.Struct, gc=False):
    type: str = ""
    trades: list[_Trade] | None = None


class _Frame(msgspec.Struct, gc=False):
    channel: str = ""
    sequence_num: int | None = None
    events: list[_Event] | None = None
    type: str | None = None
    message: str | None = None


_DECODE = msgspec.json.Decoder(_Frame, strict=False).decode
_SIDES = {"BUY": Side.BUY, "SELL": Side.SELL}


class CoinbaseAdvancedConnector(Connector):
    name = "coinbase_advanced"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sequence: int | None = None  # the connection's last sequence_num

    def subscriptions(self) -> list[str]:
        trades = {"type": "subscribe", "product_ids": [p.venue for p in self.pairs], "channel": "market_trades"}
        beats = {"type": "subscribe", "channel": "heartbeats"}
        return [msgspec.json.encode(trades).decode(), msgspec.json.encode(beats).decode()]

    def _on_connected(self) -> None:
        self._sequence = None  # numbering starts again on every connection
        super()._on_connected()

    def parse(self, raw: str | bytes) -> None:
        frame = decode_frame(_DECODE, raw)
        if frame.channel != "market_trades":
            self._control(frame)
            return
        if frame.sequence_num is None:
            raise BadMessage("no_sequence")
        self._follow(frame.sequence_num)
        seen = [self._trade(t) for e in frame.events or () for t in e.trades or ()]
        if len(seen) > 1:
            seen.sort()  # snapshots come newest first: the gap bookkeeping reads ids in order
        for ident, symbol, ts_us in seen:
            self.trade_seen(symbol, ident, ts_us)

    def _control(self, frame: _Frame) -> None:
        """A frame of another channel: an error, or heartbeats and subscriptions, numbered as trades are."""
        if frame.type == "error":
            raise BadMessage("error", str(frame.message)[:200])
        if frame.channel not in ("heartbeats", "subscriptions"):
            raise BadMessage(f"unknown_channel:{frame.channel[:32]}")
        if frame.sequence_num is None:
            raise BadMessage("no_sequence")
        self._follow(frame.sequence_num)

    def _follow(self, sequence: int) -> None:
        """A jump in the connection's numbering: messages were dropped; every pair may miss trades."""
        last, self._sequence = self._sequence, sequence
        if last is None or sequence <= last + 1:
            return
        now = self._now()
        for pair in self.pairs:
            since = self.last_trade_at(pair.symbol)
            if since is not None:
                self._gap(pair.symbol, since, now, "sequence")
                self._resync.add(pair.symbol)

    def _trade(self, t: _Trade) -> tuple[int, str, int]:
        """One trade as a row; (trade id, symbol, time in epoch µs) for the gap bookkeeping."""
        maker = self.maker_for(t.product_id)
        if not t.trade_id.isdigit():  # consecutive integers, read as such by the gap bookkeeping
            raise BadMessage("bad_trade_id", t.trade_id[:40])
        ts_us = micros(t.time)
        maker.add(ts_us, t.price, t.size, side_of(_SIDES, t.side), t.trade_id)
        return int(t.trade_id), maker.symbol, ts_us


class CoinbaseAdvancedCandles(CandleApi):
    name = "coinbase_advanced"
    quote = "USD"
    native: ClassVar[dict[Interval, Any]] = {
        Interval.M1: "ONE_MINUTE",
        Interval.M5: "FIVE_MINUTE",
        Interval.M15: "FIFTEEN_MINUTE",
        Interval.H1: "ONE_HOUR",
        Interval.D1: "ONE_DAY",
    }
    page_limit = 350

    async def _fetch_native(
        self, symbol: str, interval: Interval, start_ms: int, end_ms: int, on_page: PageHook | None
    ) -> list[Bar]:
        async def window(start: int, stop: int) -> list[Bar]:
            query = {"start": start // 1000, "end": (stop - interval.millis) // 1000}  # end is inclusive
            query |= {"granularity": self.native[interval], "limit": self.page_limit}
            body = await self.client.get(f"/market/products/{self.pair(symbol)}/candles", query)
            rows = body.get("candles") if isinstance(body, dict) else None
            return self.bars(answer_rows(rows, body, "coinbase_advanced candles"), self._bar)

        return await self.page_windows(interval, start_ms, end_ms, on_page, window)

    def _bar(self, row: Any) -> Bar:
        if not isinstance(row, dict) or not {"start", "open", "high", "low", "close", "volume"} <= row.keys():
            raise BadRow(f"expected start, open, high, low, close, volume: {row!r}"[:80])
        prices = number(row["open"]), number(row["high"]), number(row["low"]), number(row["close"])
        return Bar(integer(row["start"]) * 1000, *prices, number(row["volume"]), self.name)


LISTING_QUOTES = ("USD", "USDT", "USDC")


class _Product(msgspec.Struct, gc=False):
    product_id: str
    base_currency_id: str
    quote_currency_id: str
    status: str
    product_type: str
    trading_disabled: bool = False
    is_disabled: bool = False
    approximate_quote_24h_volume: str = ""  # a decimal string, empty where Coinbase has no figure


class _Products(msgspec.Struct, gc=False):
    products: Annotated[list[_Product], msgspec.Meta(max_length=MAX_LISTED)]


async def _products(client: RestClient) -> list[_Product]:
    body = await client.get("/market/products", {"product_type": "SPOT"})
    rows = strict(body, _Products, "coinbase_advanced products").products
    return [r for r in rows if r.product_type == "SPOT" and r.status == "online" and not r.trading_disabled
            and not r.is_disabled]  # fmt: skip


async def listings(client: RestClient) -> Listings:
    """Public ``GET /api/v3/brokerage/market/products?product_type=SPOT``: the spot products ``online`` and
    neither ``trading_disabled`` nor ``is_disabled``.
    Docs: https://docs.cdp.coinbase.com/advanced-trade/reference/retailbrokerageapi_getpublicproducts"""
    rows = await _products(client)
    return by_base(((r.base_currency_id, r.quote_currency_id, r.product_id) for r in rows), LISTING_QUOTES)


async def volumes(client: RestClient) -> Volumes:
    """The same answer's ``approximate_quote_24h_volume`` (Coinbase has no separate ticker list)."""
    out: Volumes = {}
    for r in await _products(client):
        try:
            quoted = float(r.approximate_quote_24h_volume or 0)
        except ValueError:
            raise ListingError(f"coinbase_advanced products: volume {r.approximate_quote_24h_volume!r}") from None
        out[r.product_id] = volume(quoted, "coinbase_advanced products")
    return out


VENUE = Venue(
    "coinbase_advanced", connector=CoinbaseAdvancedConnector, candles=CoinbaseAdvancedCandles,
    listings=listings, volumes=volumes, section=lambda s: s.coinbase_advanced,
    pairs=PairNaming("{symbol}-USD", r"^[A-Z0-9]+-([A-Z0-9]+)$", not_listed=frozenset({"BNB"})),
)  # fmt: skip
