"""Every venue's trade parser refuses a frame missing a required field (time, price, size, side, trade id)
or holding a zero, negative or non-finite price or size: the frame is counted as a bad message and no
tick reaches the sink — never a tick dated 1970 or of size 0 (issue 22, item 6)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from tokenpulse_ingest.venues.binance import BinanceConnector
from tokenpulse_ingest.venues.bybit import BybitConnector
from tokenpulse_ingest.venues.coinbase import CoinbaseConnector
from tokenpulse_ingest.venues.coinbase_advanced import CoinbaseAdvancedConnector
from tokenpulse_ingest.venues.connector import Connector, Pair
from tokenpulse_ingest.venues.kraken import KrakenConnector
from tokenpulse_ingest.venues.okx import OkxConnector
from tokenpulse_shared.batches import TickBatch
from tokenpulse_shared.events import TickEvent

BAD_NUMBERS = ["0", "-1.5", "nan", "inf", "-inf", 0, -2]


def binance() -> tuple[Connector, list[TickEvent]]:
    return _connector(BinanceConnector, "ws://x", Pair("BTC", "BTCUSDT", "USDT"))


def coinbase() -> tuple[Connector, list[TickEvent]]:
    return _connector(CoinbaseConnector, "ws://x", Pair("BTC", "BTC-USD", "USD"))


def kraken_v2() -> tuple[Connector, list[TickEvent]]:
    return _connector(KrakenConnector, "wss://ws.kraken.com/v2", Pair("BTC", "BTC/USD", "USD"))


def kraken_v1() -> tuple[Connector, list[TickEvent]]:
    return _connector(KrakenConnector, "wss://ws.kraken.com", Pair("BTC", "BTC/USD", "USD"))


def _connector(cls: type[Connector], url: str, pair: Pair) -> tuple[Connector, list[TickEvent]]:
    got: list[TickEvent] = []

    async def sink(ticks: TickBatch) -> None:
        got.extend(ticks.to_events())

    return cls(url, [pair], sink), got


BINANCE_AGG = {"e": "aggTrade", "s": "BTCUSDT", "a": 5, "p": "97000.5", "q": "0.1", "T": 1_700_000_000_000, "m": True}
BINANCE_TRADE = {**{k: v for k, v in BINANCE_AGG.items() if k != "a"}, "e": "trade", "t": 7}
COINBASE_MATCH = {
    "type": "match", "trade_id": 11, "sequence": 50, "product_id": "BTC-USD", "size": "0.1",
    "price": "97000.5", "side": "sell", "time": "2026-11-22T08:00:00.123Z",
}  # fmt: skip
COINBASE_TICKER = {**COINBASE_MATCH, "type": "ticker", "last_size": "0.1"}
del COINBASE_TICKER["size"]
KRAKEN_V2 = {
    "symbol": "BTC/USD", "side": "buy", "price": 97001.2, "qty": 0.05, "ord_type": "market",
    "trade_id": 77, "timestamp": "2026-11-22T08:00:00.123456Z",
}  # fmt: skip
KRAKEN_V1_ROW = ["97001.2", "0.05", "1763798400.123456", "b", "m", ""]


def binance_frame(data: dict[str, Any]) -> str:
    return json.dumps({"stream": "btcusdt@aggTrade", "data": data})


def coinbase_frame(msg: dict[str, Any]) -> str:
    return json.dumps(msg)


def kraken_v2_frame(trade: dict[str, Any]) -> str:
    return json.dumps({"channel": "trade", "type": "update", "data": [trade]})


def kraken_v1_frame(row: list[Any]) -> str:
    return json.dumps([0, [row], "trade", "XBT/USD"])


Case = tuple[Callable[[], tuple[Connector, list[TickEvent]]], Callable[[Any], str], Any]
VENUES: dict[str, Case] = {
    "binance-aggTrade": (binance, binance_frame, BINANCE_AGG),
    "binance-trade": (binance, binance_frame, BINANCE_TRADE),
    "coinbase-match": (coinbase, coinbase_frame, COINBASE_MATCH),
    "coinbase-ticker": (coinbase, coinbase_frame, COINBASE_TICKER),
    "kraken-v2": (kraken_v2, kraken_v2_frame, KRAKEN_V2),
}
# the field that holds each required part of a trade, per frame kind
REQUIRED = {
    "binance-aggTrade": {"time": "T", "price": "p", "size": "q", "side": "m", "trade id": "a", "symbol": "s"},
    "binance-trade": {"time": "T", "price": "p", "size": "q", "side": "m", "trade id": "t", "symbol": "s"},
    "coinbase-match": {"time": "time", "price": "price", "size": "size", "side": "side", "trade id": "trade_id"},
    "coinbase-ticker": {"time": "time", "price": "price", "size": "last_size", "side": "side", "trade id": "trade_id"},
    "kraken-v2": {"time": "timestamp", "price": "price", "size": "qty", "side": "side", "trade id": "trade_id"},
}
MISSING = [(venue, part) for venue, parts in REQUIRED.items() for part in parts]
BAD_VALUES = [(venue, part, value) for venue in VENUES for part in ("price", "size") for value in BAD_NUMBERS] + [
    (venue, "time", value) for venue in ("binance-aggTrade", "binance-trade") for value in (0, -1)
]


async def assert_refused(connector: Connector, got: list[TickEvent], frame: str) -> None:
    """The frame is one bad message, and no tick at all reaches the sink."""
    before = connector.health.bad_messages
    assert await connector.handle(frame) == 0
    assert got == [] and connector.health.bad_messages == before + 1 and connector.health.ticks == 0


@pytest.mark.parametrize("venue", list(VENUES))
async def test_the_complete_frame_is_a_tick(venue: str) -> None:
    make, frame, good = VENUES[venue]
    connector, got = make()
    assert await connector.handle(frame(good)) == 1
    (tick,) = got
    assert tick.size > 0 and tick.ts.year >= 2023 and TickEvent.model_validate(tick.model_dump()) == tick


@pytest.mark.parametrize(("venue", "part"), MISSING, ids=[f"{v}-no-{p}" for v, p in MISSING])
async def test_a_frame_missing_a_required_field_is_a_bad_message(venue: str, part: str) -> None:
    make, frame, good = VENUES[venue]
    field = REQUIRED[venue][part]
    connector, got = make()
    await assert_refused(connector, got, frame({k: v for k, v in good.items() if k != field}))
    connector, got = make()
    await assert_refused(connector, got, frame({**good, field: None}))  # an explicit null is no value either


@pytest.mark.parametrize(("venue", "part", "value"), BAD_VALUES)
async def test_a_non_positive_or_non_finite_value_is_a_bad_message(venue: str, part: str, value: Any) -> None:
    make, frame, good = VENUES[venue]
    connector, got = make()
    await assert_refused(connector, got, frame({**good, REQUIRED[venue][part]: value}))


@pytest.mark.parametrize("venue", ["coinbase-match", "coinbase-ticker", "kraken-v2"])
async def test_an_unknown_side_is_a_bad_message(venue: str) -> None:
    make, frame, good = VENUES[venue]
    connector, got = make()
    await assert_refused(connector, got, frame({**good, REQUIRED[venue]["side"]: "sideways"}))


async def test_kraken_v1_complete_row_is_a_tick() -> None:
    connector, got = kraken_v1()
    assert await connector.handle(kraken_v1_frame(KRAKEN_V1_ROW)) == 1
    assert got[0].size == 0.05 and got[0].ts.year == 2025


V1_BAD = {
    "no-side": KRAKEN_V1_ROW[:3],
    "no-time": KRAKEN_V1_ROW[:2],
    "no-size": KRAKEN_V1_ROW[:1],
    "empty": [],
    "null-price": [None, *KRAKEN_V1_ROW[1:]],
    "null-size": [KRAKEN_V1_ROW[0], None, *KRAKEN_V1_ROW[2:]],
    "null-time": [*KRAKEN_V1_ROW[:2], None, *KRAKEN_V1_ROW[3:]],
    "null-side": [*KRAKEN_V1_ROW[:3], None, *KRAKEN_V1_ROW[4:]],
    "empty-price": ["", *KRAKEN_V1_ROW[1:]],
    "zero-time": [*KRAKEN_V1_ROW[:2], "0", *KRAKEN_V1_ROW[3:]],
    "negative-time": [*KRAKEN_V1_ROW[:2], "-5", *KRAKEN_V1_ROW[3:]],
    "nan-time": [*KRAKEN_V1_ROW[:2], "nan", *KRAKEN_V1_ROW[3:]],
    "unknown-side": [*KRAKEN_V1_ROW[:3], "x", *KRAKEN_V1_ROW[4:]],
    **{f"price-{v}": [str(v), *KRAKEN_V1_ROW[1:]] for v in BAD_NUMBERS},
    **{f"size-{v}": [KRAKEN_V1_ROW[0], str(v), *KRAKEN_V1_ROW[2:]] for v in BAD_NUMBERS},
}


@pytest.mark.parametrize("row", list(V1_BAD.values()), ids=list(V1_BAD))
async def test_kraken_v1_row_missing_or_bad_is_a_bad_message(row: list[Any]) -> None:
    connector, got = kraken_v1()
    await assert_refused(connector, got, kraken_v1_frame(row))


async def test_a_refused_frame_is_counted_by_kind() -> None:
    connector, got = binance()
    await connector.handle(binance_frame({k: v for k, v in BINANCE_AGG.items() if k != "T"}))
    assert "missing_field" in connector.health.errors_seen and got == []


def okx_push(*trades: dict[str, Any]) -> str:
    return json.dumps({"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": list(trades)})


def bybit_push(*trades: dict[str, Any]) -> str:
    return json.dumps({"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1, "data": list(trades)})


def advanced_message(*trades: dict[str, Any]) -> str:
    events = [{"type": "update", "trades": list(trades)}]
    return json.dumps({"channel": "market_trades", "sequence_num": 1, "events": events})


OKX_TRADE = {"instId": "BTC-USDT", "tradeId": "7", "px": "97000.5", "sz": "0.1", "side": "buy", "ts": "1700000000000"}
BYBIT_TRADE = {"T": 1_700_000_000_000, "s": "BTCUSDT", "S": "Buy", "v": "0.1", "p": "97000.5", "i": "a-7"}
ADVANCED_TRADE = {
    "trade_id": "7", "product_id": "BTC-USD", "price": "97000.5", "size": "0.1", "side": "BUY",
    "time": "2026-11-22T08:00:00.123Z",
}  # fmt: skip
MULTI: dict[str, tuple[type[Connector], str, Callable[..., str], dict[str, Any], str, str]] = {
    "okx": (OkxConnector, "BTC-USDT", okx_push, OKX_TRADE, "tradeId", "px"),
    "bybit": (BybitConnector, "BTCUSDT", bybit_push, BYBIT_TRADE, "i", "p"),
    "coinbase_advanced": (CoinbaseAdvancedConnector, "BTC-USD", advanced_message, ADVANCED_TRADE, "trade_id", "price"),
}


@pytest.mark.parametrize("venue", list(MULTI))
async def test_a_frame_refused_half_way_publishes_none_of_its_trades(venue: str) -> None:
    cls, pair, frame, good, ident, price = MULTI[venue]
    connector, got = _connector(cls, "ws://x", Pair("BTC", pair, "USD"))
    second = {**good, ident: "8", price: "-1"}  # the frame's second trade is bad: the first must not go out alone
    await assert_refused(connector, got, frame(good, second))
    assert connector.rows == []
    assert await connector.handle(frame(good, {**second, price: "97001"})) == 2  # the same trades, both good
    assert [t.trade_id for t in got] == [good[ident], "8"]
    assert await connector.handle(frame(good)) == 0 and connector.health.duplicates == 1  # seen: dropped
