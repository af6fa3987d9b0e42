"""Exchange frame normalisation on the recorded real frames (data/exchange-samples), pair configuration,
bounded dedupe, and the provenance of the vendored samples."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from tokenpulse_ingest.venues.binance import BinanceConnector
from tokenpulse_ingest.venues.coinbase import CoinbaseConnector
from tokenpulse_ingest.venues.connector import BadMessage, Dedupe, Pair, Row, RowMaker, tick_batch
from tokenpulse_ingest.venues.kraken import KrakenConnector
from tokenpulse_ingest.venues.registry import pairs_for
from tokenpulse_shared.batches import MAX_TS_US, epoch_us
from tokenpulse_shared.events import Side, TickEvent
from tokenpulse_shared.settings import Settings

from testkit.fake_exchange import SAMPLES, received_frames
from testkit.ticks import discard as _sink
from testkit.ticks import parsed


def frames(name: str) -> list[str]:
    return received_frames(SAMPLES / name)


def recorded_pairs(kind: str, names: list[str]) -> list[Pair]:
    """Every recorded pair as a token of its own (SKL-USD → SKL), so the real frames parse as recorded."""
    out = []
    for venue in names:
        if kind == "binance":
            out.append(Pair(venue.removesuffix("USDT").removesuffix("BTC"), venue, "USDT"))
        elif kind == "coinbase":
            base, quote = venue.split("-")
            out.append(Pair(base, venue, quote))
        else:
            base, quote = venue.split("/")
            out.append(Pair({"XBT": "BTC"}.get(base, base), venue, quote))
    return out


def assert_valid(ticks: list[TickEvent]) -> None:
    for t in ticks:
        assert TickEvent.model_validate(t.model_dump()) == t  # the fast constructor makes valid events
        assert t.ts.tzinfo is UTC or t.ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_binance_recorded_agg_trades_normalise() -> None:
    lines = frames("BINANCE.ws.1.0.aggTrade") + frames("BINANCE_FUTURES.ws.1.0.aggTrade")
    venues = sorted({json.loads(f)["data"]["s"] for f in lines})
    c = BinanceConnector("ws://x", recorded_pairs("binance", venues), _sink)
    ticks = [t for f in lines for t in parsed(c, f)]
    assert len(ticks) == len(lines) == 93
    assert_valid(ticks)
    first = json.loads(lines[0])["data"]  # NKNUSDT 0.3528 x 58, buyer not maker → taker bought
    t = ticks[0]
    assert (t.symbol, t.price, t.size, t.side, t.trade_id) == ("NKN", 0.3528, 58.0, Side.BUY, str(first["a"]))
    assert t.ts == datetime.fromtimestamp(first["T"] / 1000, UTC) and t.source == "binance"
    assert {t.side for t in ticks} == {Side.BUY, Side.SELL}


def test_binance_trade_stream_and_error_frames() -> None:
    c = BinanceConnector("ws://x", [Pair("BTC", "BTCUSDT", "USDT")], _sink)
    trade = {"e": "trade", "E": 1, "s": "BTCUSDT", "t": 42, "p": "97000.5", "q": "0.1", "T": 1700000000000, "m": True}
    (t,) = parsed(c, json.dumps({"stream": "btcusdt@trade", "data": trade}))
    assert (t.trade_id, t.side, t.price, t.quote) == ("42", Side.SELL, 97000.5, "USDT")
    assert parsed(c, '{"result": null, "id": 1}') == []
    with pytest.raises(BadMessage) as e:
        parsed(c, '{"code": 2, "msg": "Invalid request"}')
    assert e.value.kind == "error"
    with pytest.raises(BadMessage) as e:
        parsed(c, json.dumps({"stream": "x", "data": {**trade, "e": "depthUpdate"}}))
    assert e.value.kind.startswith("unknown_event")
    with pytest.raises(BadMessage):
        parsed(c, json.dumps({"stream": "x", "data": {**trade, "p": "nan"}}))
    with pytest.raises(BadMessage):
        parsed(c, json.dumps({"stream": "x", "data": {**trade, "s": "DOGEUSDT"}}))


def test_coinbase_recorded_matches_tickers_and_last_matches_normalise() -> None:
    lines = frames("COINBASE.ws.28.0.trades")
    msgs = [json.loads(f) for f in lines]
    venues = sorted({m["product_id"] for m in msgs if "product_id" in m})
    c = CoinbaseConnector("ws://x", recorded_pairs("coinbase", venues), _sink)
    ticks = [t for f in lines for t in parsed(c, f)]
    trades = [m for m in msgs if m["type"] in ("match", "last_match", "ticker")]
    assert len(ticks) == len(trades) > 200
    assert_valid(ticks)
    # the same trade as a match (maker side) and as a ticker (taker side) normalises to the same taker side
    by_id: dict[tuple[str, str], set[Side]] = {}
    for t in ticks:
        by_id.setdefault((t.symbol, t.trade_id or ""), set()).add(t.side)
    both = [sides for sides in by_id.values() if len(sides) > 1]
    assert both == []
    match = next(m for m in msgs if m["type"] == "match")
    t = next(t for t in ticks if t.trade_id == str(match["trade_id"]) and t.symbol == match["product_id"].split("-")[0])
    assert t.side == (Side.BUY if match["side"] == "sell" else Side.SELL)
    assert t.quote == match["product_id"].split("-")[1]


def test_coinbase_control_and_error_frames() -> None:
    c = CoinbaseConnector("ws://x", [Pair("BTC", "BTC-USD", "USD")], _sink)
    assert parsed(c, '{"type": "subscriptions", "channels": []}') == []
    hb = {
        "type": "heartbeat",
        "sequence": 9,
        "last_trade_id": 5,
        "product_id": "BTC-USD",
        "time": "2026-01-01T00:00:00Z",
    }
    assert parsed(c, json.dumps(hb)) == []
    with pytest.raises(BadMessage) as e:
        parsed(c, '{"type": "error", "message": "Failed to subscribe", "reason": "BNB-USD is not a valid product"}')
    assert e.value.kind == "error"
    with pytest.raises(BadMessage) as e:
        parsed(c, '{"type": "l2update", "product_id": "BTC-USD"}')
    assert e.value.kind == "unknown_type:l2update"
    assert c.subscriptions() == ['{"type":"subscribe","product_ids":["BTC-USD"],"channels":["matches","heartbeat"]}']


def test_kraken_recorded_v1_trades_normalise() -> None:
    lines = frames("KRAKEN.ws.48.0")
    arrays = [json.loads(f) for f in lines if f.startswith("[")]
    venues = sorted({a[-1] for a in arrays})
    c = KrakenConnector("wss://ws.kraken.com", recorded_pairs("kraken", venues), _sink)
    assert not c.v2
    ticks = [t for f in lines for t in parsed(c, f)]  # heartbeats, status and acks parse to nothing
    rows = [(a[-1], r) for a in arrays for r in a[1]]
    assert len(ticks) == len(rows) == 10
    assert_valid(ticks)
    _venue, row = rows[0]  # XMR/USD 354.11 x 0.89594024, sell
    assert (ticks[0].symbol, ticks[0].price, ticks[0].size, ticks[0].side) == ("XMR", 354.11, 0.89594024, Side.SELL)
    assert ticks[0].ts == datetime.fromtimestamp(float(row[2]), UTC)
    assert len({t.trade_id for t in ticks}) == len(ticks)  # v1 has no trade id: time-price-volume stands in


def test_kraken_v2_trades_and_subscription() -> None:
    c = KrakenConnector(
        "wss://ws.kraken.com/v2", [Pair("BTC", "BTC/USD", "USD"), Pair("DOGE", "DOGE/USD", "USD")], _sink
    )
    assert c.v2
    assert json.loads(c.subscriptions()[0]) == {
        "method": "subscribe",
        "params": {"channel": "trade", "symbol": ["BTC/USD", "DOGE/USD"], "snapshot": False},
    }
    frame = {
        "channel": "trade",
        "type": "update",
        "data": [
            {
                "symbol": "BTC/USD",
                "side": "sell",
                "price": 97001.2,
                "qty": 0.05,
                "ord_type": "market",
                "trade_id": 77,
                "timestamp": "2026-11-22T08:00:00.123456Z",
            },
            {
                "symbol": "DOGE/USD",
                "side": "buy",
                "price": 0.41,
                "qty": 1000,
                "ord_type": "limit",
                "trade_id": 9,
                "timestamp": "2026-11-22T08:00:01Z",
            },
        ],
    }
    a, b = parsed(c, json.dumps(frame))
    assert (a.symbol, a.side, a.trade_id, a.price) == ("BTC", Side.SELL, "77", 97001.2)
    assert a.ts == datetime(2026, 11, 22, 8, 0, 0, 123456, tzinfo=UTC)
    assert (b.symbol, b.side, b.size) == ("DOGE", Side.BUY, 1000.0)
    assert parsed(c, '{"channel": "heartbeat"}') == []
    assert parsed(c, '{"method": "subscribe", "result": {"channel": "trade"}, "success": true}') == []
    with pytest.raises(BadMessage):
        parsed(c, '{"method": "subscribe", "success": false, "error": "Currency pair not supported"}')
    # v1 names: XBT and XDG stand for BTC and DOGE
    v1 = KrakenConnector("wss://ws.kraken.com", [Pair("BTC", "BTC/USD", "USD"), Pair("DOGE", "DOGE/USD", "USD")], _sink)
    assert json.loads(v1.subscriptions()[0])["pair"] == ["XBT/USD", "XDG/USD"]


def test_pairs_default_per_exchange_and_overrides() -> None:
    s = Settings(
        runtime={"symbols": ["BTC", "BNB"]},
        ingest={"feed_pairs": ["binance:BTC=BTCFDUSD", "kraken:BNB=BNB/EUR", "coinbase:BTC=-"]},
    )
    pairs = pairs_for(s)
    assert pairs["binance"] == [Pair("BNB", "BNBUSDT", "USDT"), Pair("BTC", "BTCFDUSD", "FDUSD")]
    assert "coinbase" not in pairs  # BNB is not listed there, BTC dropped by the override
    assert pairs["kraken"] == [Pair("BNB", "BNB/EUR", "EUR"), Pair("BTC", "BTC/USD", "USD")]
    for bad in (["binance:BTC"], ["bitmex:BTC=XBTUSD"], ["kraken:BTC=BTCUSD"], ["coinbase:btc-x=BTC-USD"]):
        with pytest.raises(ValueError):
            pairs_for(Settings(runtime={"symbols": ["BTC"]}, ingest={"feed_pairs": bad}))
    with pytest.raises(ValueError, match="supported exchanges"):
        pairs_for(Settings(ingest={"feed_exchanges": ["mtgox"]}))


def test_settings_read_exchanges_and_pairs_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENPULSE_FEED_EXCHANGES", "Binance, kraken")
    monkeypatch.setenv("TOKENPULSE_FEED_PAIRS", "binance:BTC=BTCUSDC, kraken:DOGE=-")
    s = Settings()
    assert s.ingest.feed_exchanges == ["binance", "kraken"]
    assert s.ingest.feed_pairs == ["binance:BTC=BTCUSDC", "kraken:DOGE=-"]


def test_dedupe_forgets_the_oldest_beyond_its_size() -> None:
    d = Dedupe(size=3)
    assert [d.seen(k) for k in "abca"] == [False, False, False, True]
    assert d.seen("d") is False and len(d) == 3  # a is forgotten
    assert d.seen("a") is False


def test_vendored_samples_match_their_manifest() -> None:
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    names = {f["path"] for f in manifest["files"]}
    assert {p.name for p in SAMPLES.iterdir()} == names | {"manifest.json", "README.md"}
    for f in manifest["files"]:
        data = (SAMPLES / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"], f["path"]
        assert f["source"]["repository"] == "bmoscon/cryptofeed" and len(f["source"]["commit"]) == 40


def test_row_maker_checks_what_the_model_checks() -> None:
    rows: list[Row] = []
    maker = RowMaker("binance", Pair("BTC", "BTCUSDT", "USDT"), rows)
    now_us = epoch_us(datetime.now(UTC))
    maker.add(now_us, 97_000.5, 0.25, Side.SELL, "123456")
    (tick,) = tick_batch(rows).to_events()
    assert TickEvent.model_validate(tick.model_dump()) == tick
    assert (tick.event_id, tick.symbol, tick.quote, tick.source) == ("binance-BTC-123456", "BTC", "USDT", "binance")
    moved = tick.model_copy(update={"price": 97_001.0})  # a tick read from rows behaves as a validated one
    assert moved.price == 97_001.0 and tick.price == 97_000.5 and moved.model_fields_set == tick.model_fields_set
    for price in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(BadMessage):
            maker.add(now_us, price, 1.0, Side.BUY, "1")
    for size in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(BadMessage):
            maker.add(now_us, 1.0, size, Side.BUY, "1")
    for ts_us in (0, -1, MAX_TS_US + 1):
        with pytest.raises(BadMessage):
            maker.add(ts_us, 1.0, 1.0, Side.BUY, "1")
    for trade_id in ("", "9" * 129):
        with pytest.raises(BadMessage):
            maker.add(now_us, 1.0, 1.0, Side.BUY, trade_id)
    assert len(rows) == 1  # a refused trade leaves no row
    with pytest.raises(ValueError):  # a bad constant part is refused when the connector is built
        RowMaker("binance", Pair("BTC", "BTCUSDT", "usdt!"), rows)
