"""OKX ``trades`` frames (crafted from https://www.okx.com/docs-v5/en/#public-data-websocket-trades-channel):
normalisation, aggregated pushes in the id bookkeeping, and strict parsing of hostile frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from tokenpulse_ingest.venues.connector import Pair
from tokenpulse_ingest.venues.okx import OkxConnector
from tokenpulse_shared.events import Side, TickEvent

from testkit.ticks import discard, parsed, refusal, trade_of

DOC_TRADE = {
    "instId": "BTC-USDT",
    "tradeId": "130639474",
    "px": "42219.9",
    "sz": "0.12060306",
    "side": "buy",
    "ts": "1630048897897",
    "count": "3",
    "source": "0",
    "seqId": 1234,
}


def connector() -> OkxConnector:
    return OkxConnector("wss://x", [Pair("BTC", "BTC-USDT", "USDT"), Pair("ETH", "ETH-USDT", "USDT")], discard)


def push(*trades: dict[str, Any]) -> str:
    return json.dumps({"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": list(trades)})


def test_the_documented_trade_normalises() -> None:
    (t,) = parsed(connector(), push(DOC_TRADE))
    assert trade_of(t) == ("BTC", "okx", "USDT", 42219.9, 0.12060306, Side.BUY)
    assert t.trade_id == "130639474" and t.ts == datetime.fromtimestamp(1630048897.897, UTC)
    assert TickEvent.model_validate(t.model_dump()) == t


def test_subscription_control_frames_and_errors() -> None:
    c = connector()
    assert json.loads(c.subscriptions()[0]) == {
        "op": "subscribe",
        "args": [{"channel": "trades", "instId": "BTC-USDT"}, {"channel": "trades", "instId": "ETH-USDT"}],
    }
    assert parsed(c, "pong") == []
    assert parsed(c, '{"event": "subscribe", "arg": {"channel": "trades", "instId": "BTC-USDT"}, "connId": "1"}') == []
    assert refusal(c, '{"event": "error", "code": "60018", "msg": "Wrong URL or channel", "connId": "1"}') == "error"
    refusal(c, json.dumps({"arg": {"channel": "books", "instId": "BTC-USDT"}, "data": []}))


def test_an_aggregated_push_covers_its_ids_and_a_jump_beyond_is_a_gap() -> None:
    c = connector()
    parsed(c, push({**DOC_TRADE, "tradeId": "100", "count": "1"}))
    parsed(c, push({**DOC_TRADE, "tradeId": "103", "count": "3"}))  # ids 101..103 in one push: no gap
    assert c.health.gaps == 0
    parsed(c, push({**DOC_TRADE, "tradeId": "106", "count": "2"}))  # 105..106: 104 is missing
    assert c.health.gaps == 1 and c._pending_gaps[0][0] == "BTC"


@pytest.mark.parametrize("field", ["tradeId", "px", "sz", "side", "ts", "instId"])
def test_a_trade_missing_a_required_field_is_a_bad_message(field: str) -> None:
    trade = {k: v for k, v in DOC_TRADE.items() if k != field}
    refusal(connector(), push(trade))


@pytest.mark.parametrize(
    ("field", "value"),
    [("ts", "0"), ("ts", ""), ("sz", "0"), ("px", "0"), ("px", "nan"), ("side", ""), ("tradeId", ""), ("tradeId", "x")],
)
def test_a_trade_with_an_unusable_field_is_a_bad_message_never_a_1970_tick_or_size_0(field: str, value: str) -> None:
    refusal(connector(), push({**DOC_TRADE, field: value}))
