"""The market benchmark's load and bookkeeping (bench/market.py), without a broker: its trades are valid
ticks of the public schema with every field given, they follow the Zipf shape over
the universe's ranks, the swinging tokens cross their alert level both ways, and the candle figures count what
they claim."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from tokenpulse_shared.events import TickEvent
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.universe import configured_symbols

from bench import market


def test_trades_are_schema_valid_ticks_keyed_by_symbol_on_the_symbols_partition() -> None:
    m = market.Market(market.load_universe(1000), partitions=6)
    m.pace(2000)
    sent = m.trades(2000, 1_800_000_000.0)
    assert sum(len(v) for v in sent.values()) == 2000
    for partition, records in sent.items():
        for key, value in records:
            tick = TickEvent.model_validate_json(value)
            assert set(json.loads(value)) == set(TickEvent.model_fields)  # every field given, as documented
            assert key.decode() == tick.symbol and m.partition[tick.symbol] == partition
            assert tick.ts.timestamp() == 1_800_000_000.0
            assert tick.quote == {"binance": "USDT"}.get(tick.source, "USD")
    ids = [json.loads(v)["event_id"] for records in sent.values() for _, v in records]
    assert len(set(ids)) == len(ids)


def test_trade_counts_follow_zipf_over_the_ranks() -> None:
    tokens = market.load_universe(1000)
    m = market.Market(tokens, partitions=6)
    m.pace(20000)
    counts = Counter(json.loads(v)["symbol"] for rs in m.trades(200_000, 1.8e9).values() for _, v in rs)
    harmonic = sum(1 / r for r in range(1, 1001))
    assert abs(counts["BTC"] / 200_000 - 1 / harmonic) < 0.01
    assert counts["BTC"] > counts[tokens[9].symbol] > counts[tokens[99].symbol]
    assert 150 < len(counts) <= 1000  # the long tail trades too, rarely


def test_swinging_tokens_cross_their_level_both_ways_and_the_others_stay_near_their_start() -> None:
    m = market.Market(market.load_universe(200), partitions=6)
    m.pace(5000)
    swinging = next(iter(m.swing))
    quiet = next(t.symbol for t in m.tokens if t.symbol not in m.swing and t.symbol not in market.STABLE)
    above = set()
    for k in range(40):  # 20 s of market time, a quarter second apart
        m._price(quiet, m.t0 + k / 4)
        above.add(m._price(swinging, m.t0 + k / 4) > m.level[swinging])
    assert above == {True, False}
    assert abs(m.price[quiet] / m.level[quiet] - 1) < 0.01


def test_candle_figures_time_each_candle_to_its_indicators_and_count_candles_published_twice() -> None:
    arrived = {
        "candles": [
            ("BTC", "1m", 60.0, 1, 123.0),  # closes at 120 s + 2 s lateness: 1 s after its deadline
            ("ETH", "1m", 60.0, 1, 122.5),
            ("ETH", "1m", 60.0, 2, 124.0),  # a correction
            ("XRP", "1m", 60.0, 1, 122.1),
            ("XRP", "1m", 60.0, 1, 122.2),  # the same candle twice
        ],
        "indicators": {("BTC", "1m", 60.0): 123.05, ("ETH", "1m", 60.0): 122.6, ("XRP", "1m", 60.0): 200.0},
        "signals": [],
    }
    to_indicators, close, signals, (corrected, doubled) = market.candle_figures(arrived)
    assert to_indicators["1m"].n == 3 and round(to_indicators["1m"].p50) == 100
    assert [round(x) for x in (close["1m"].p50, close["1m"].p99)] == [500, 1000]
    assert signals == {} and (corrected, doubled) == (1, 1)


def test_the_services_track_the_bench_tokens_through_the_universe_file(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = [t.symbol for t in market.load_universe(25)]
    env = market.tracked_env(tokens)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert configured_symbols(Settings()) == tokens
