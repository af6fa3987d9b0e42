"""Coinbase Advanced Trade ``market_trades`` frames (crafted from
https://docs.cdp.coinbase.com/advanced-trade/docs/ws-channels): normalisation, snapshots newest first,
control frames, and strict parsing of hostile frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from tokenpulse_ingest.venues.coinbase_advanced import CoinbaseAdvancedConnector
from tokenpulse_ingest.venues.connector import Pair
from tokenpulse_shared.events import Side, TickEvent

from testkit.ticks import discard, parsed, refusal, trade_of

DOC_TRADE = {
    "trade_id": "12345",
    "product_id": "ETH-USD",
    "price": "1260.01",
    "size": "0.3",
    "side": "BUY",
    "time": "2019-08-14T20:42:27.265Z",
}


def connector() -> CoinbaseAdvancedConnector:
    return CoinbaseAdvancedConnector("wss://x", [Pair("BTC", "BTC-USD", "USD"), Pair("ETH", "ETH-USD", "USD")], discard)


def message(*trades: dict[str, Any], kind: str = "update", sequence: int = 0) -> str:
    events = [{"type": kind, "trades": list(trades)}]
    return json.dumps(
        {"channel": "market_trades", "client_id": "", "timestamp": "2023-02-09T20:19:35.39625135Z",
         "sequence_num": sequence, "events": events}
    )  # fmt: skip


def test_the_documented_trade_normalises() -> None:
    (t,) = parsed(connector(), message(DOC_TRADE))
    assert trade_of(t) == ("ETH", "coinbase_advanced", "USD", 1260.01, 0.3, Side.BUY)
    assert t.trade_id == "12345" and t.ts == datetime(2019, 8, 14, 20, 42, 27, 265000, tzinfo=UTC)
    assert TickEvent.model_validate(t.model_dump()) == t


def test_a_snapshot_newest_first_is_no_gap_and_a_later_jump_is() -> None:
    c = connector()
    snapshot = [{**DOC_TRADE, "trade_id": str(i)} for i in (105, 104, 103)]
    assert len(parsed(c, message(*snapshot, kind="snapshot", sequence=1))) == 3
    parsed(c, message({**DOC_TRADE, "trade_id": "106"}, sequence=2))
    assert c.health.gaps == 0
    parsed(c, message({**DOC_TRADE, "trade_id": "109"}, sequence=3))
    assert c.health.gaps == 1


def test_subscriptions_control_frames_and_errors() -> None:
    c = connector()
    assert [json.loads(f) for f in c.subscriptions()] == [
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "market_trades"},
        {"type": "subscribe", "channel": "heartbeats"},
    ]
    events = [{"current_time": "2023-06-23 20:31:56", "heartbeat_counter": "3049"}]
    beat = {"channel": "heartbeats", "timestamp": "2023-06-23T20:31:26.122969572Z", "sequence_num": 0, "events": events}
    assert parsed(c, json.dumps(beat)) == []
    assert refusal(c, '{"type": "error", "message": "failure to subscribe"}') == "error"
    refusal(c, json.dumps({**beat, "channel": "level2"}))


@pytest.mark.parametrize("field", ["trade_id", "product_id", "price", "size", "side", "time"])
def test_a_trade_missing_a_required_field_is_a_bad_message(field: str) -> None:
    refusal(connector(), message({k: v for k, v in DOC_TRADE.items() if k != field}))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("time", "2019-08-14T20:42:27"),
        ("time", ""),
        ("size", "0"),
        ("price", "-1"),
        ("side", "UNKNOWN"),
        ("trade_id", ""),
    ],
)
def test_a_trade_with_an_unusable_field_is_a_bad_message_never_a_1970_tick_or_size_0(field: str, value: str) -> None:
    refusal(connector(), message({**DOC_TRADE, field: value}))


def test_a_message_without_its_sequence_number_is_a_bad_message() -> None:
    body = json.loads(message(DOC_TRADE))
    del body["sequence_num"]
    refusal(connector(), json.dumps(body))
