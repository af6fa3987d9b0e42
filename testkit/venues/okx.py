"""OKX v5 public WebSocket, ``trades`` channel, crafted from the documented format (no recording).

Docs: https://www.okx.com/docs-v5/en/#public-data-websocket-trades-channel — the push
``{"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [{"instId": "BTC-USDT",
"tradeId": "130639474", "px": "42219.9", "sz": "0.12060306", "side": "buy", "ts": "1630048897897",
"count": "3", "source": "0", "seqId": 1234}]}``, the subscribe answer ``{"event": "subscribe",
"arg": {...}, "connId": "..."}``, and the text ``ping`` answered ``pong``
(https://www.okx.com/docs-v5/en/#overview-websocket-connect).
"""

from __future__ import annotations

import json
from typing import Any

from testkit.venues import Dialect, Trade


class Okx(Dialect):
    kind = "okx"
    path = "/ws/v5/public"
    samples = ((42219.9, 0.12060306, "buy"), (42219.8, 0.5, "sell"), (42220.1, 0.01, "buy"), (42218.0, 1.2, "sell"))
    broken = ('"px": "', '"px": "-')

    def subscribed(self, msg: Any) -> tuple[list[str], list[str]] | None:
        if not isinstance(msg, dict) or msg.get("op") != "subscribe":
            return None
        args = [a for a in msg["args"] if a.get("channel") == "trades"]
        acks = [json.dumps({"event": "subscribe", "arg": a, "connId": "a4d3ae55"}) for a in args]
        return [a["instId"] for a in args], acks

    def answer(self, text: str) -> str | None:
        return "pong" if text == "ping" else None

    def trades(self, trades: list[Trade]) -> str:
        (t,) = trades  # one push per trade (count 1), as a taker order filling at one price comes
        data = {
            "instId": t.venue,
            "tradeId": str(t.trade_id),
            "px": f"{t.price:.8f}",
            "sz": f"{t.size}",
            "side": t.side,
            "ts": str(int(t.ts.timestamp() * 1000)),
            "count": "1",
            "source": "0",
            "seqId": t.trade_id * 3,
        }
        return json.dumps({"arg": {"channel": "trades", "instId": t.venue}, "data": [data]})
