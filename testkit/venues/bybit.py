"""Bybit v5 public spot WebSocket, ``publicTrade`` topic, crafted from the documented format (no recording).

Docs: https://bybit-exchange.github.io/docs/v5/websocket/public/trade — the push
``{"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1672304486868, "data": [{"T":
1672304486865, "s": "BTCUSDT", "S": "Buy", "v": "0.001", "p": "16578.50", "L": "PlusTick", "i":
"20f43950-d8dd-5b31-9112-a178eb6023af", "BT": false, "seq": 1783284617}]}``; the subscribe answer
and the ping answer (https://bybit-exchange.github.io/docs/v5/ws/connect): ``{"success": true,
"ret_msg": "subscribe", "conn_id": "...", "op": "subscribe"}``, ``{"success": true, "ret_msg":
"pong", "conn_id": "...", "op": "ping"}``. Spot trade ids are decimal strings; the fake numbers
them consecutively (the connector does not rely on it).
"""

from __future__ import annotations

import json
from typing import Any

from testkit.venues import Dialect, Trade


class Bybit(Dialect):
    kind = "bybit"
    path = "/v5/public/spot"
    samples = ((16578.50, 0.001, "buy"), (16578.0, 0.25, "sell"), (16579.1, 0.04, "buy"), (16577.2, 0.5, "sell"))
    broken = ('"p": "', '"p": "-')

    def subscribed(self, msg: Any) -> tuple[list[str], list[str]] | None:
        if not isinstance(msg, dict) or msg.get("op") != "subscribe":
            return None
        venues = [a.removeprefix("publicTrade.") for a in msg["args"] if a.startswith("publicTrade.")]
        ack = {"success": True, "ret_msg": "subscribe", "conn_id": "2324d924", "op": "subscribe"}
        return venues, [json.dumps(ack)]

    def answer(self, text: str) -> str | None:
        if json.loads(text).get("op") == "ping":
            return json.dumps({"success": True, "ret_msg": "pong", "conn_id": "2324d924", "op": "ping"})
        return None

    def trades(self, trades: list[Trade]) -> str:
        ms = int(trades[0].ts.timestamp() * 1000)
        data = [
            {
                "T": int(t.ts.timestamp() * 1000),
                "s": t.venue,
                "S": "Buy" if t.side == "buy" else "Sell",
                "v": f"{t.size}",
                "p": f"{t.price:.8f}",
                "L": "PlusTick",
                "i": str(t.trade_id),
                "BT": False,
                "seq": 1783284617 + t.trade_id,
            }
            for t in trades
        ]
        return json.dumps({"topic": f"publicTrade.{trades[0].venue}", "type": "snapshot", "ts": ms, "data": data})
