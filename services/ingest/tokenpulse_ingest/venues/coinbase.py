"""Coinbase Exchange: live trades, candle history and limits — the venue in one place (``VENUE`` at the end).

Live: ``ws-feed`` (wss://ws-feed.exchange.coinbase.com), ``matches`` and ``heartbeat`` channels.

One ``subscribe`` frame per product, so a product Coinbase does not list fails alone (its ``error``
frame is counted and logged) instead of failing the whole subscription. ``match`` (and the
``last_match`` sent on subscribing) are trades; their ``side`` is the *maker's* side, so the taker
side is the opposite. ``ticker`` frames (a trade's summary, taker side) are normalised too when
subscribed; they repeat a match's ``trade_id`` and are dropped as duplicates when both arrive.

Gaps: ``trade_id`` is consecutive per product, so a jump is a gap; the ``heartbeat`` channel sends
every second the product's ``last_trade_id``, which reveals missed trades even when no later
trade arrives. ``sequence`` is per product but counts every message of the product on every
channel (order-book changes included), so on the matches channel it jumps by design and cannot
mark a gap by itself; it orders messages: a frame whose sequence is not above the last one seen
is a replay or out of order (counted; its trade still goes through the dedupe).

History: ``GET /products/BTC-USD/candles`` (``granularity`` in seconds: 60, 300, 900, 3600, 21600,
86400 — no 4 h, rolled up from 1 h here; ``start``/``end`` ISO; ≤ 300 rows per answer, newest
first; empty minutes omitted). Rows ``[time_s, low, high, open, close, volume]``. Quote USD.
Limits: requests per second (public limit 10/s per IP).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec
from prometheus_client import Counter
from tokenpulse_shared.events import Interval, Side

from tokenpulse_ingest.bundle import Bar
from tokenpulse_ingest.rest.client import RestClient
from tokenpulse_ingest.venues.connector import BadMessage, Connector, decode_frame, micros
from tokenpulse_ingest.venues.history import CandleApi, PageHook, answer_rows, fields, integer, number
from tokenpulse_ingest.venues.spec import Listings, PairNaming, Venue, by_base, strict_rows

OUT_OF_ORDER = Counter(
    "tokenpulse_feed_out_of_order_total", "Frames whose exchange sequence number went backwards", ["exchange"]
)


class _Msg(msgspec.Struct, gc=False):  # gc=False: decoded JSON holds no cycles
    """Every type's fields in one struct, so optional here; a trade's required ones are checked in ``_trade``."""

    type: str = ""
    product_id: str = ""
    trade_id: int | None = None
    sequence: int | None = None
    price: float | None = None  # quoted decimals, read as floats by msgspec (strict=False)
    size: float | None = None
    last_size: float | None = None
    side: str = ""
    time: datetime | None = None  # RFC 3339, decoded by msgspec
    last_trade_id: int | None = None
    message: str | None = None
    reason: str | None = None


_DECODE = msgspec.json.Decoder(_Msg, strict=False).decode
_MAKER_TO_TAKER = {"sell": Side.BUY, "buy": Side.SELL}
_TAKER = {"buy": Side.BUY, "sell": Side.SELL}


class CoinbaseConnector(Connector):
    name = "coinbase"
    channels = ("matches", "heartbeat")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sequence: dict[str, int] = {}
        self._out_of_order = OUT_OF_ORDER.labels(self.name)

    def subscriptions(self) -> list[str]:
        return [
            msgspec.json.encode(
                {"type": "subscribe", "product_ids": [p.venue], "channels": list(self.channels)}
            ).decode()
            for p in self.pairs
        ]

    def parse(self, raw: str | bytes) -> None:
        m = decode_frame(_DECODE, raw)
        kind = m.type
        if kind in ("match", "last_match", "ticker"):
            self._trade(m, kind)
            return
        if kind == "heartbeat":
            pair = self.by_venue.get(m.product_id)
            if pair is not None and m.last_trade_id is not None and m.time:
                self._order(m)
                self.announced(pair.symbol, m.last_trade_id, micros(m.time))
            return
        if kind == "subscriptions":
            return
        if kind == "error":
            raise BadMessage("error", f"{m.message} {m.reason or ''}")
        raise BadMessage(f"unknown_type:{kind[:32]}")

    def _order(self, m: _Msg) -> None:
        if m.sequence is None:
            return
        last = self._sequence.get(m.product_id)
        if last is not None and m.sequence <= last:
            self._out_of_order.inc()
        else:
            self._sequence[m.product_id] = m.sequence

    def _trade(self, m: _Msg, kind: str) -> None:
        maker = self.maker_for(m.product_id)
        size = m.last_size if kind == "ticker" else m.size
        side = (_TAKER if kind == "ticker" else _MAKER_TO_TAKER).get(m.side)
        if m.trade_id is None or m.price is None or m.time is None or size is None or not m.side:
            raise BadMessage("missing_field", f"{kind} without {_missing(m, size)}")
        if side is None:
            raise BadMessage("bad_side", m.side[:16])
        ts_us = micros(m.time)
        maker.add(ts_us, m.price, size, side, str(m.trade_id))
        self._order(m)
        self.trade_seen(maker.symbol, m.trade_id, ts_us)


def _missing(m: _Msg, size: float | None) -> str:
    parts = {"trade_id": m.trade_id, "price": m.price, "time": m.time, "size": size, "side": m.side or None}
    return ", ".join(name for name, value in parts.items() if value is None)


class CoinbaseCandles(CandleApi):
    name = "coinbase"
    quote = "USD"
    native: ClassVar[dict[Interval, Any]] = {
        i: i.seconds for i in (Interval.M1, Interval.M5, Interval.M15, Interval.H1, Interval.D1)
    }
    page_limit = 300

    async def _fetch_native(
        self, symbol: str, interval: Interval, start_ms: int, end_ms: int, on_page: PageHook | None
    ) -> list[Bar]:
        async def window(start: int, stop: int) -> list[Bar]:
            query = {"granularity": self.native[interval], "start": _iso(start)}
            query["end"] = _iso(stop - interval.millis)  # Coinbase's end is inclusive
            rows = await self.client.get(f"/products/{self.pair(symbol)}/candles", query)
            return self.bars(answer_rows(rows, rows, "coinbase candles"), self._bar)

        return await self.page_windows(interval, start_ms, end_ms, on_page, window)

    def _bar(self, row: Any) -> Bar:
        r = fields(row, 6)  # [time_s, low, high, open, close, volume]
        open_, high, low, close = number(r[3]), number(r[2]), number(r[1]), number(r[4])
        return Bar(integer(r[0]) * 1000, open_, high, low, close, number(r[5]), self.name)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


LISTING_QUOTES = ("USD", "USDT", "USDC")


class _Product(msgspec.Struct, gc=False):
    id: str
    base_currency: str
    quote_currency: str
    status: str
    trading_disabled: bool = False


async def listings(client: RestClient) -> Listings:
    """``GET /products``: the products ``online`` and not ``trading_disabled``."""
    body = await client.get("/products")
    rows = strict_rows(body, _Product, "coinbase products")
    online = (r for r in rows if r.status == "online" and not r.trading_disabled)
    return by_base(((r.base_currency, r.quote_currency, r.id) for r in online), LISTING_QUOTES)


VENUE = Venue(
    "coinbase", connector=CoinbaseConnector, candles=CoinbaseCandles, listings=listings,
    section=lambda s: s.coinbase,
    pairs=PairNaming("{symbol}-USD", r"^[A-Z0-9]+-([A-Z0-9]+)$", not_listed=frozenset({"BNB"})),
)  # fmt: skip
