"""Bybit ``publicTrade`` frames (crafted from https://bybit-exchange.github.io/docs/v5/websocket/public/trade):
normalisation, control frames, subscription batching, and strict parsing of hostile frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from tokenpulse_ingest.venues.bybit import BybitConnector
from tokenpulse_ingest.venues.connector import Pair
from tokenpulse_shared.events import Side, TickEvent

from testkit.ticks import discard, parsed, refusal, trade_of

DOC_TRADE = {
    "T": 1672304486865,
    "s": "BTCUSDT",
    "S": "Buy",
    "v": "0.001",
    "p": "16578.50",
    "L": "PlusTick",
    "i": "20f43950-d8dd-5b31-9112-a178eb6023af",
    "BT": False,
    "seq": 1783284617,
}


def connector(*symbols: str) -> BybitConnector:
    pairs = [Pair(s, f"{s}USDT", "USDT") for s in symbols or ("BTC", "ETH")]
    return BybitConnector("wss://x", pairs, discard)


def push(*trades: dict[str, Any]) -> str:
    return json.dumps({"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1672304486868, "data": list(trades)})


def test_the_documented_trade_normalises() -> None:
    (t,) = parsed(connector(), push(DOC_TRADE))
    assert trade_of(t) == ("BTC", "bybit", "USDT", 16578.5, 0.001, Side.BUY)
    assert t.trade_id == DOC_TRADE["i"] and t.ts == datetime.fromtimestamp(1672304486.865, UTC)
    assert TickEvent.model_validate(t.model_dump()) == t


def test_control_frames_errors_and_subscriptions_of_at_most_ten_topics() -> None:
    c = connector()
    assert parsed(c, '{"success": true, "ret_msg": "subscribe", "conn_id": "x", "op": "subscribe"}') == []
    assert parsed(c, '{"success": true, "ret_msg": "pong", "conn_id": "x", "op": "ping"}') == []
    assert parsed(c, '{"op": "pong", "args": ["1675418560633"], "conn_id": "x"}') == []
    assert (
        refusal(c, '{"success": false, "ret_msg": "error:handler not found", "conn_id": "x", "op": "subscribe"}')
        == "error"
    )
    refusal(c, json.dumps({"topic": "orderbook.50.BTCUSDT", "data": {}}))
    many = connector(*[f"T{i}" for i in range(23)])
    frames = [json.loads(f) for f in many.subscriptions()]
    assert [len(f["args"]) for f in frames] == [10, 10, 3] and frames[0]["args"][0] == "publicTrade.T0USDT"


@pytest.mark.parametrize("field", ["T", "s", "S", "v", "p", "i"])
def test_a_trade_missing_a_required_field_is_a_bad_message(field: str) -> None:
    refusal(connector(), push({k: v for k, v in DOC_TRADE.items() if k != field}))


@pytest.mark.parametrize(
    ("field", "value"), [("T", 0), ("T", "x"), ("v", "0"), ("p", "0"), ("p", "inf"), ("S", "None"), ("i", "")]
)
def test_a_trade_with_an_unusable_field_is_a_bad_message_never_a_1970_tick_or_size_0(field: str, value: Any) -> None:
    refusal(connector(), push({**DOC_TRADE, field: value}))
