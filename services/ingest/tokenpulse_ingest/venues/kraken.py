"""Kraken spot: live trades, candle history and limits — the venue in one place (``VENUE`` at the end).

Live: the WebSocket ``trade`` channel, v2 (current, default) and v1 (what the recorded samples show).

v2 (``wss://ws.kraken.com/v2``, the current public API): subscribe with
``{"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"]}}``; trades arrive as
``{"channel": "trade", "type": "update", "data": [{"symbol", "side", "price", "qty", "ord_type",
"trade_id", "timestamp"}]}`` with numbers as JSON numbers, RFC 3339 times, ``BTC`` as BTC, and a
``trade_id`` consecutive per book (so a jump is a gap). Kraken sends ``{"channel": "heartbeat"}``
about once a second on a subscribed connection and a ``status`` frame on connect.

v1 (``wss://ws.kraken.com``, maintained for existing clients, chosen when the URL has no ``/v2``):
``{"event": "subscribe", "pair": ["XBT/USD"], "subscription": {"name": "trade"}}``; trades are
arrays ``[channelID, [[price, volume, time, side, orderType, misc], ...], "trade", "XBT/USD"]`` with
numbers as strings, epoch-second times, ``XBT``/``XDG`` for BTC/DOGE, and no trade id: the tick's
trade id is then ``time-price-volume`` (dedupe works, id-gap detection does not; reconnects
still report their gap).

History: ``GET /0/public/OHLC`` (``pair=XBTUSD``: the v1 names without the slash; ``interval``
minutes, ``since`` seconds; only the 720 most recent candles exist; the last row is the open
candle). Rows ``[time_s, o, h, l, c, vwap, volume, count]``. Errors come as HTTP 200 with an
``error`` list (rate limits included). Quote USD. Limits: requests per second (about 1/s).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

import msgspec
from tokenpulse_shared.events import Interval, Side

from tokenpulse_ingest.bundle import Bar
from tokenpulse_ingest.rest.client import RateLimited, RestClient, RestError
from tokenpulse_ingest.venues.connector import (
    BadMessage,
    Connector,
    Pair,
    decode_frame,
    epoch_micros,
    micros,
    shape_error,
    side_of,
)
from tokenpulse_ingest.venues.history import CandleApi, PageHook, fields, integer, kept, number
from tokenpulse_ingest.venues.spec import MAX_LISTED, Listings, PairNaming, Venue, by_base, strict

V1_ALIASES = {"BTC": "XBT", "DOGE": "XDG"}  # the v1 stream's and the REST API's names
_SIDES = {"buy": Side.BUY, "sell": Side.SELL, "b": Side.BUY, "s": Side.SELL}


class _Trade(msgspec.Struct, gc=False):  # gc=False: decoded JSON holds no cycles
    """A v2 trade, every field required: a trade missing one is refused (``missing_field``), never defaulted."""

    symbol: str
    side: str
    price: float
    qty: float
    trade_id: int
    timestamp: datetime  # RFC 3339, decoded by msgspec


class _V2(msgspec.Struct, gc=False):
    channel: str = ""
    type: str = ""
    data: msgspec.Raw = msgspec.Raw()  # decoded as trades only on the trade channel (status frames carry other objects)
    method: str | None = None
    success: bool | None = None
    error: str | None = None


class _V1Event(msgspec.Struct, gc=False):
    """A v1 control frame (heartbeat, systemStatus, subscriptionStatus, pong): only what is read."""

    event: str | None = None
    status: str | None = None
    errorMessage: str | None = None


_DECODE_V2 = msgspec.json.Decoder(_V2).decode
_DECODE_TRADES = msgspec.json.Decoder(list[_Trade]).decode
_DECODE_V1_EVENT = msgspec.json.Decoder(_V1Event).decode
_DECODE_ANY = msgspec.json.Decoder().decode
# heartbeats are most of a quiet connection's frames (about one a second per connection), always these bytes
_HEARTBEATS = ('{"event":"heartbeat"}', '{"channel":"heartbeat"}', b'{"event":"heartbeat"}', b'{"channel":"heartbeat"}')


def v1_name(venue: str) -> str:
    base, _, quote = venue.partition("/")
    return f"{V1_ALIASES.get(base, base)}/{V1_ALIASES.get(quote, quote)}"


class KrakenConnector(Connector):
    name = "kraken"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.v2 = self.url.rstrip("/").endswith("/v2")
        self.by_v1: dict[str, Pair] = {v1_name(p.venue): p for p in self.pairs}
        self.makers_v1 = {v1_name(p.venue): self.makers[p.venue] for p in self.pairs}

    def subscriptions(self) -> list[str]:
        if self.v2:
            params = {"channel": "trade", "symbol": [p.venue for p in self.pairs], "snapshot": False}
            return [msgspec.json.encode({"method": "subscribe", "params": params}).decode()]
        body = {"event": "subscribe", "pair": list(self.by_v1), "subscription": {"name": "trade"}}
        return [msgspec.json.encode(body).decode()]

    def parse(self, raw: str | bytes) -> None:
        if raw in _HEARTBEATS:  # compares lengths first: next to free for every other frame
            return
        head = raw[:1]
        if head in ("[", b"[") or (head.isspace() and raw.lstrip()[:1] in ("[", b"[")):
            self._v1_trades(raw)
        elif not self.v2 and ('"event"' in raw if isinstance(raw, str) else b'"event"' in raw):
            self._v1_event(raw)  # v1 control frames: heartbeat, systemStatus, subscriptionStatus
        else:
            self._v2(raw)

    def _v2(self, raw: str | bytes) -> None:
        m = decode_frame(_DECODE_V2, raw)
        if m.channel == "trade":
            self._v2_trades(m)
        elif m.channel in ("heartbeat", "status"):
            return
        elif m.method is None:
            self._v1_event(raw)
        elif m.success is False:  # a subscribe or ping answer saying no
            raise BadMessage("error", m.error or "")

    def _v2_trades(self, m: _V2) -> None:
        makers = self.makers
        try:
            trades = _DECODE_TRADES(m.data) if m.data else []
        except msgspec.ValidationError as exc:
            raise shape_error(str(exc)) from None
        for t in trades:
            maker = makers.get(t.symbol)
            if maker is None:
                raise BadMessage("unknown_symbol", t.symbol[:32])
            ts_us = micros(t.timestamp)
            maker.add(ts_us, t.price, t.qty, side_of(_SIDES, t.side, "bad_side"), str(t.trade_id))
            self.trade_seen(maker.symbol, t.trade_id, ts_us)

    def _v1_event(self, raw: str | bytes) -> None:
        try:
            m = _DECODE_V1_EVENT(raw)
        except msgspec.ValidationError:
            raise BadMessage("unknown_event:None") from None  # JSON, but not an object with a text `event`
        except msgspec.DecodeError as exc:
            raise BadMessage("not_json", str(exc)) from None
        event = m.event
        if event in ("heartbeat", "systemStatus", "pong"):
            return
        if event == "subscriptionStatus":
            if m.status == "error":
                raise BadMessage("error", str(m.errorMessage))
            return
        raise BadMessage(f"unknown_event:{str(event)[:32]}")

    def _v1_trades(self, raw: str | bytes) -> None:
        try:
            m = _DECODE_ANY(raw)
        except msgspec.DecodeError as exc:
            raise BadMessage("not_json", str(exc)) from None
        if not (isinstance(m, list) and len(m) >= 4 and isinstance(m[1], list)):
            raise BadMessage("unexpected_shape", str(raw)[:80])
        if m[-2] != "trade":
            raise BadMessage(f"unknown_channel:{str(m[-2])[:32]}")
        maker = self.makers_v1.get(m[-1])
        if maker is None:
            raise BadMessage("unknown_symbol", str(m[-1])[:32])
        add = maker.add
        for row in m[1]:
            price, volume, ts_us, side, ident = _v1_row(row)
            add(ts_us, price, volume, side, str(ident) if ident is not None else f"{row[2]}-{row[0]}-{row[1]}")
            if ident is not None:
                self.trade_seen(maker.symbol, ident, ts_us)


def _v1_row(row: Any) -> tuple[float, float, int, Side, int | None]:
    """(price, volume, epoch microseconds, side, trade id or None) of a v1 trade row ``[price, volume, time, side,
    ...]``; a row missing one of the four or holding an unreadable one is a bad message, never defaulted."""
    if not isinstance(row, list) or len(row) < 4:
        raise BadMessage("missing_field", f"v1 trade row {str(row)[:60]}")
    try:
        price, volume = float(row[0]), float(row[1])
    except (TypeError, ValueError):
        raise BadMessage("unexpected_shape", f"v1 price or volume {str(row[:2])[:60]}") from None
    side = _SIDES.get(row[3]) if isinstance(row[3], str) else None
    if side is None:
        raise BadMessage("bad_side", str(row[3])[:16])
    ident = row[6] if len(row) > 6 and isinstance(row[6], int) else None
    return price, volume, epoch_micros(row[2]), side, ident


def _check(body: Any) -> None:
    errors = body.get("error") if isinstance(body, dict) else None
    if errors:
        text = "; ".join(str(e) for e in errors)
        if "Too many requests" in text or "Rate limit" in text:
            raise RateLimited(f"kraken: {text}")
        raise RestError(f"kraken: {text}")


class KrakenCandles(CandleApi):
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

    def pair(self, symbol: str) -> str:
        """The stream's name BASE/QUOTE as REST names it, e.g. BTC/USD -> XBTUSD."""
        return v1_name(self.pair_of(symbol)).replace("/", "")

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
            page = [bar for bar in self.bars(closed, self._bar) if start_ms <= bar.ts_ms < end_ms]
            kept(page, out, on_page)
            if not closed or last <= since_s or last * 1000 >= end_ms - interval.millis:
                break  # reached the end, or nothing newer: older candles than Kraken keeps are unavailable
            since_s = last
        return out

    def _bar(self, row: Any) -> Bar:
        r = fields(row, 8)  # [time_s, o, h, l, c, vwap, volume, count]
        prices = number(r[1]), number(r[2]), number(r[3]), number(r[4])
        return Bar(integer(r[0]) * 1000, *prices, number(r[6]), self.name, integer(r[7]))


LISTING_QUOTES = ("USD", "USDT", "USDC")
_OURS = {v1: ours for ours, v1 in V1_ALIASES.items()}


class _AssetPair(msgspec.Struct, gc=False):
    wsname: str | None = None  # absent on pairs without a WebSocket feed (dark pools)
    status: str = "online"


class _AssetPairs(msgspec.Struct, gc=False):
    result: Annotated[dict[str, _AssetPair], msgspec.Meta(max_length=MAX_LISTED)]


async def listings(client: RestClient) -> Listings:
    """``GET /0/public/AssetPairs``: the pairs ``online`` (no status: online), by their WebSocket name, with
    Kraken's XBT/XDG read as BTC/DOGE (the v2 names the feed uses)."""
    body = strict(await client.get("/0/public/AssetPairs"), _AssetPairs, "kraken AssetPairs")
    rows = []
    for info in body.result.values():
        if info.wsname is None or "/" not in info.wsname or info.status != "online":
            continue
        base, quote = (_OURS.get(part, part) for part in info.wsname.split("/", 1))
        rows.append((base, quote, f"{base}/{quote}"))
    return by_base(rows, LISTING_QUOTES)


VENUE = Venue(
    "kraken", rest_check=_check, connector=KrakenConnector, candles=KrakenCandles, listings=listings,
    section=lambda s: s.kraken,
    pairs=PairNaming(
        "{symbol}/USD",
        r"^[A-Z0-9]+/([A-Z0-9]+)$",
        not_listed=frozenset({"BNB"}),
        aliases=tuple((v1, ours) for ours, v1 in V1_ALIASES.items()),
    ),
)  # fmt: skip
