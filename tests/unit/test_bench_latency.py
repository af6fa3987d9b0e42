"""The latency benchmark's bookkeeping (bench/latency.py), at tiny size and without a broker: the tick it
blames for a candle close is the tick on which ingest's real CandleBuilder emits that candle, its
warm-up candles join the live ticks without a gap, and the shared plot module writes a PNG."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_ingest.venues.connector import make_tick
from tokenpulse_shared.events import Interval, Side

from bench import latency, plot

DAY_MS = latency.DAY_MS


def market(seed: int = 3) -> latency.Market:
    t0 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
    return latency.Market("LATX", 100.0, t0 - 30 * DAY_MS, random.Random(seed))


def test_warm_up_candles_are_consecutive_days_and_live_ticks_start_on_the_next() -> None:
    m = market()
    warm = m.warm_up(30)
    starts = [int(c.ts.timestamp() * 1000) for c in warm]
    assert starts == [starts[0] + i * DAY_MS for i in range(30)]
    assert all(c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high for c in warm)
    ts_ms, price, _ = m.step()
    assert ts_ms == starts[-1] + DAY_MS  # the first live tick opens the next day
    assert price == pytest.approx(warm[-1].close, rel=0.05)


def test_the_blamed_tick_is_the_one_on_which_ingest_closes_each_candle() -> None:
    m = market()
    m.warm_up(1)
    builder = CandleBuilder()
    sent = latency.Sent()
    closed_on: dict[tuple[Interval, int], int] = {}  # candle -> index of the tick whose batch emitted it
    n = latency.TICKS_PER_DAY * 3 + 5
    for i in range(n):
        ts_ms, price, size = m.step()
        sent.add(ts_ms, float(i), i)  # "send time" = the tick's index
        tick = make_tick(
            m.symbol,
            "bench",
            datetime.fromtimestamp(ts_ms / 1000, UTC),
            price,
            size,
            Side.BUY,
            str(i),
            "USD",
            datetime.now(UTC),
        )
        for candle in builder.add([tick]).candles:  # ticks keep coming: only the watermark closes candles
            closed_on.setdefault((candle.interval, int(candle.ts.timestamp() * 1000)), i)
    days = [(iv, start) for iv, start in closed_on if iv is Interval.D1]
    assert len(days) == 3
    for interval in (Interval.D1, Interval.H4, Interval.H1):
        for (iv, start), i in closed_on.items():
            if iv is interval:
                assert sent.closing(start + interval.millis) == float(i), (interval, start)
                assert sent.closing_seq(start + interval.millis) == i
    # a bucket whose closing tick has not been sent yet is not blamed on any tick
    last_day = max(start for _, start in days) + DAY_MS
    assert sent.closing(last_day + DAY_MS) is None


def test_plot_writes_a_png(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(plot, "OUT_DIR", tmp_path)
    out = plot.save(
        "tiny",
        "tiny",
        [
            plot.bars("bars", {"a": 1.0, "b": 10.0}, "x", log=True),
            plot.groups("groups", {"g": {"p50": 1.0, "p99": 2.0}}, "ms"),
            plot.cdf("cdf", {"s": [1.0, 2.0, 3.0], "empty": []}),
        ],
        footer=plot.footer("test"),
    )
    assert out == tmp_path / "tiny.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert plot.percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    assert plot.first_number("28,214 (runs 1, 2)") == 28214.0
