"""Binance spot: the combined stream ``/stream?streams=btcusdt@aggTrade/...`` (subscriptions in the URL).

Frames are ``{"stream": "btcusdt@aggTrade", "data": {...}}``. ``aggTrade`` (default) carries the
aggregate trade id ``a``; ``trade`` carries the trade id ``t``; both are consecutive per symbol,
so a jump is a gap. ``m`` true means the buyer was the maker, i.e. the taker sold. Binance closes
every connection after 24 h and pings every 3 minutes (the websockets library answers pings);
both are handled by the reconnect loop. Docs: developers.binance.com, "WebSocket Streams".
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from tokenpulse_shared.events import Side, TickEvent

from tokenpulse_ingest.exchanges.base import BadMessage, Connector, make_tick


class _Data(msgspec.Struct):
    e: str = ""
    s: str = ""
    a: int | None = None  # aggTrade id
    t: int | None = None  # trade id
    p: float = 0.0  # quoted decimals, read as floats by msgspec (strict=False)
    q: float = 0.0
    T: int = 0
    m: bool = False


class _Frame(msgspec.Struct):
    stream: str = ""
    data: _Data | None = None
    result: object = None
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

    def parse(self, raw: str | bytes) -> list[TickEvent]:
        try:
            frame = _DECODE(raw)
        except msgspec.ValidationError as exc:
            raise BadMessage("unexpected_shape", str(exc)) from None
        except msgspec.DecodeError as exc:
            raise BadMessage("not_json", str(exc)) from None
        data = frame.data
        if data is None:
            if frame.code is not None or frame.msg is not None:
                raise BadMessage("error", f"{frame.code} {frame.msg}")
            if frame.id is not None:
                return []  # the answer to a SUBSCRIBE request
            raise BadMessage("unknown", str(raw)[:80])
        kind = data.e
        if kind == "aggTrade":
            ident = data.a
        elif kind == "trade":
            ident = data.t
        else:
            raise BadMessage(f"unknown_event:{kind[:32]}")
        pair = self.by_venue.get(data.s)
        if pair is None:
            raise BadMessage("unknown_symbol", data.s[:32])
        if ident is None:
            raise BadMessage("no_trade_id")
        ts = datetime.fromtimestamp(data.T / 1000.0, UTC)
        tick = make_tick(
            pair.symbol,
            self.name,
            ts,
            data.p,
            data.q,
            _SELL if data.m else _BUY,
            str(ident),
            pair.quote,
            datetime.now(UTC),
        )
        self.trade_seen(pair.symbol, ident, ts)
        return [tick]
