"""The gateway's live state takes v2 price batches from their columns: each token's newest row counts, once,
in the token list and on the stream (a real :class:`LiveState` over the in-process bus, no store)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from tokenpulse_shared.batches import PriceBatch
from tokenpulse_shared.events import PriceEvent

from testkit.wiring import live_state


def test_each_tokens_newest_row_is_its_price_and_streamed_once() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [
        PriceEvent(symbol="BTC", ts=now, price=100.0, sources=["binance"]),
        PriceEvent(symbol="ETH", ts=now, price=10.0, sources=["kraken"]),
        PriceEvent(symbol="BTC", ts=now + timedelta(milliseconds=5), price=101.0, sources=["coinbase"]),
        PriceEvent(symbol="BTC", ts=now + timedelta(milliseconds=2), price=99.0, sources=["kraken"]),  # late copy
    ]
    later = [PriceEvent(symbol="ETH", ts=now + timedelta(seconds=1), price=11.0, stale=True)]

    async def run() -> None:
        live = live_state()
        stream = live.hub.subscribe()
        await live.on_price_rows([PriceBatch.from_events(rows), PriceBatch.from_events(later)])
        btc, eth = live.tokens["BTC"], live.tokens["ETH"]
        assert (btc["price"], btc["sources"], btc["stale"], btc["_at_ms"]) == (
            101.0,
            ["coinbase"],
            False,
            int(now.timestamp() * 1000) + 5,
        )
        assert (eth["price"], eth["stale"]) == (11.0, True)
        streamed = [stream.get_nowait() for _ in range(stream.qsize())]
        assert sorted((e.symbol, json.loads(e.data)["price"]) for e in streamed if e) == [("BTC", 101.0), ("ETH", 11.0)]

    asyncio.run(run())
