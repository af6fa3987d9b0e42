"""Coinbase Advanced Trade WebSocket, ``market_trades`` and ``heartbeats`` channels, crafted from the
documented format (no recording).

Docs: https://docs.cdp.coinbase.com/advanced-trade/docs/ws-channels — every message is
``{"channel": "market_trades", "client_id": "", "timestamp": "2023-02-09T20:19:35.39625135Z",
"sequence_num": 0, "events": [{"type": "snapshot", "trades": [{"trade_id": "000000000",
"product_id": "ETH-USD", "price": "1260.01", "size": "0.3", "side": "BUY", "time":
"2019-08-14T20:42:27.265Z"}]}]}``; heartbeats ``{"channel": "heartbeats", ..., "events":
[{"current_time": "...", "heartbeat_counter": "3049"}]}``; the subscribe answer on the
``subscriptions`` channel. ``sequence_num`` counts the connection's messages (stamped per
connection by the fake exchange).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from testkit.venues import Dialect, Trade

_SEQUENCE = '"sequence_num": -1'  # the placeholder :meth:`stamp` numbers


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _message(channel: str, ts: datetime, events: list[Any]) -> str:
    return json.dumps(
        {"channel": channel, "client_id": "", "timestamp": _iso(ts), "sequence_num": -1, "events": events}
    )


class CoinbaseAdvanced(Dialect):
    kind = "coinbase_advanced"
    samples = ((1260.01, 0.3, "buy"), (1260.0, 0.05, "sell"), (1260.4, 1.2, "buy"), (1259.7, 0.6, "sell"))
    broken = ('"price": "', '"price": "-')

    def __init__(self) -> None:
        self.beats = 0

    def subscribed(self, msg: Any) -> tuple[list[str], list[str]] | None:
        if not isinstance(msg, dict) or msg.get("type") != "subscribe":
            return None
        venues = list(msg.get("product_ids") or []) if msg.get("channel") == "market_trades" else []
        events = [{"subscriptions": {msg.get("channel"): venues}}]
        return venues, [_message("subscriptions", datetime.now().astimezone(), events)]

    def trades(self, trades: list[Trade]) -> str:
        rows = [
            {
                "trade_id": str(t.trade_id),
                "product_id": t.venue,
                "price": f"{t.price:.8f}",
                "size": f"{t.size}",
                "side": t.side.upper(),
                "time": _iso(t.ts),
            }
            for t in trades
        ]
        return _message("market_trades", trades[0].ts, [{"type": "update", "trades": rows}])

    def heartbeat(self, venue: str, last_trade_id: int, now: datetime) -> str | None:
        self.beats += 1
        return _message("heartbeats", now, [{"current_time": _iso(now), "heartbeat_counter": str(self.beats)}])

    def stamp(self, frame: str, sequence: int) -> str:
        return frame.replace(_SEQUENCE, f'"sequence_num": {sequence}', 1)
