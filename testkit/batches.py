"""Sample rows of each v2 batch kind, as the v1 events they convert from and to."""

from __future__ import annotations

from datetime import datetime, timedelta

from tokenpulse_shared.batches import CandleBatch, IndicatorBatch, PriceBatch, RowBatch, TickBatch
from tokenpulse_shared.events import CandleEvent, Event, IndicatorEvent, Interval, PriceEvent, Side, TickEvent


def sample_events(t0: datetime) -> dict[type[RowBatch], list[Event]]:
    """Two rows of each batch kind at ``t0`` (sub-millisecond digits kept): the first with every optional
    column set, the second with most left out; candles open on their interval's boundary."""
    ticks = [
        TickEvent(symbol="BTC", source="binance", ts=t0, price=97000.5, size=0.25, side=Side.BUY, trade_id="42"),
        TickEvent(symbol="ETH", source="coinbase", ts=t0 + timedelta(microseconds=1999), price=3000.25, quote="USDT"),
    ]
    prices = [
        PriceEvent(symbol="BTC", ts=t0, price=97000.5, sources=["binance", "kraken"], prev_price=96999.0),
        PriceEvent(symbol="SOL", ts=t0 + timedelta(microseconds=999), price=150.0, stale=True, volume_24h=1e9),
    ]
    minute, day = t0.replace(second=0, microsecond=0), t0.replace(hour=0, minute=0, second=0, microsecond=0)
    candles = [
        CandleEvent(
            event_id="candle-BTC-1m-x",
            symbol="BTC",
            interval=Interval.M1,
            ts=minute,
            open=1.0,
            high=3.0,
            low=0.5,
            close=2.0,
            volume=4.0,
            trades=3,
            source="ticks",
            version=3001,
        ),
        CandleEvent(
            event_id="candle-ETH-1d-y", symbol="ETH", interval=Interval.D1, ts=day, open=2, high=2, low=2, close=2
        ),
    ]
    indicators = [
        IndicatorEvent(event_id="ind-BTC-1m-1", symbol="BTC", interval=Interval.M1, ts=t0, rsi_14=55.5, macd=-1.0),
        IndicatorEvent(event_id="ind-ETH-1d-2", symbol="ETH", interval=Interval.D1, ts=t0, candle_version=7),
    ]
    return {TickBatch: ticks, PriceBatch: prices, CandleBatch: candles, IndicatorBatch: indicators}
