"""Binance spot: the combined stream ``/stream?streams=btcusdt@aggTrade/...`` (subscriptions in the URL).

Frames are ``{"stream": "btcusdt@aggTrade", "data": {...}}``. ``aggTrade`` (default) carries the
aggregate trade id ``a``; ``trade`` carries the trade id ``t``; both are consecutive per symbol,
so a jump is a gap. ``m`` true means the buyer was the maker, i.e. the taker sold. Binance closes
every connection after 24 h and pings every 3 minutes (the websockets library answers pings);
both are handled by the reconnect loop. Docs: developers.binance.com, "WebSocket Streams".
"""

from __future__ import annotations

from typing import Any

import msgspec
from tokenpulse_shared.events import Side, TickEvent

from tokenpulse_ingest.exchanges.base import BadMessage, Connector, MillisToUtc


class _Data(msgspec.Struct, gc=False):  # gc=False: decoded JSON holds no cycles, so the GC need not track it
    e: str = ""
    s: str = ""
    a: int | None = None  # aggTrade id
    t: int | None = None  # trade id
    p: float = 0.0  # quoted decimals, read as floats by msgspec (strict=False)
    q: float = 0.0
    T: int = 0
    m: bool = False


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ms_to_utc = MillisToUtc().convert

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
        maker = self.makers.get(data.s)
        if maker is None:
            raise BadMessage("unknown_symbol", data.s[:32])
        if ident is None:
            raise BadMessage("no_trade_id")
        ts = self._ms_to_utc(data.T)
        tick = maker.make(ts, data.p, data.q, _SELL if data.m else _BUY, str(ident), self.produced_at())
        # trade-id bookkeeping; the common case (the next id of a pair in step) without the call
        symbol = maker.symbol
        last = self._last_id.get(symbol)
        if last is not None and ident == last + 1 and symbol not in self._resync:
            self._last_id[symbol] = ident
            if ts > self._last_ts[symbol]:
                self._last_ts[symbol] = ts
        else:
            self.trade_seen(symbol, ident, ts)
        return [tick]
