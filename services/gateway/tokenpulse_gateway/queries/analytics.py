"""Inputs of the analytics models (cycles, track record) and the versions that say when to recompute them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from tokenpulse_shared.store import Store

from tokenpulse_gateway.analytics.series import MarketData, Series
from tokenpulse_gateway.analytics.track_record import SignalPoint
from tokenpulse_gateway.queries.common import iso


@dataclass(frozen=True)
class TrackRecordInputs:
    """What the track record is measured on: daily closes, the standing signals, each grade's history and
    the intraday closes of the (token, interval) pairs that have intraday signals."""

    closes: dict[str, list[tuple[int, float]]]
    signals: list[SignalPoint]
    trader: dict[str, dict[int, float]]
    investor: dict[str, dict[int, float]]
    intraday: dict[str, dict[str, list[tuple[int, float]]]]


class AnalyticsQueries:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def daily_closes(self) -> dict[str, list[tuple[date, float]]]:
        """Every token's daily closes (1d candles), oldest first."""
        rows = await self.store.query(
            "SELECT symbol, toDate(ts), close FROM candles FINAL WHERE interval = '1d' ORDER BY symbol, ts"
        )
        return _by_symbol(rows)

    async def total_market_caps(self) -> list[tuple[date, float]]:
        rows = await self.store.query(
            "SELECT toDate(ts), market_cap FROM market_caps FINAL WHERE symbol = '' ORDER BY ts"
        )
        return [(d, v) for d, v in rows]

    async def token_market_caps(self) -> dict[str, Series]:
        """Every token's market-cap snapshots (the total market's, symbol '', left out), oldest first."""
        rows = await self.store.query(
            "SELECT symbol, toDate(ts), market_cap FROM market_caps FINAL WHERE symbol != '' ORDER BY symbol, ts"
        )
        return _by_symbol(rows)

    async def daily_trader_grades(self) -> dict[str, Series]:
        rows = await self.store.query(
            "SELECT symbol, toDate(ts), trader_grade FROM grades FINAL "
            "WHERE trader_grade IS NOT NULL ORDER BY symbol, ts"
        )
        return _by_symbol(rows)

    async def daily_signals(self) -> dict[str, list[tuple[date, str]]]:
        """The standing daily signals' directions by day (withdrawn ones left out)."""
        rows = await self.store.query(
            "SELECT symbol, toDate(ts), direction FROM signals FINAL "
            "WHERE interval = '1d' AND retracted = 0 ORDER BY symbol, ts"
        )
        out: dict[str, list[tuple[date, str]]] = {}
        for symbol, day, direction in rows:
            out.setdefault(symbol, []).append((day, direction))
        return out

    async def market_data(self) -> MarketData:
        """What the market analytics read (quant, correlation, market state, indices, scenarios)."""
        return MarketData(
            closes=await self.daily_closes(),
            caps=await self.token_market_caps(),
            total_caps=await self.total_market_caps(),
            trader=await self.daily_trader_grades(),
            signals=await self.daily_signals(),
        )

    async def _latest(self, columns: str, table_and_filter: str, symbol: str) -> list[Any] | None:
        """The token's newest row of ``columns`` (after its time in ms), or None when it has none."""
        rows = await self.store.query(
            f"SELECT toUnixTimestamp64Milli(ts), {columns} FROM {table_and_filter} ORDER BY ts DESC LIMIT 1",
            {"s": symbol},
        )
        return list(rows[0]) if rows else None

    async def latest_grade(self, symbol: str) -> dict[str, Any] | None:
        row = await self._latest(
            "trader_grade, investor_grade, components", "grades FINAL WHERE symbol = {s:String}", symbol
        )
        if row is None:
            return None
        ts, trader, investor, components = row
        return {"ts": iso(ts), "trader_grade": trader, "investor_grade": investor, "components": json.loads(components)}

    async def latest_daily_signal(self, symbol: str) -> dict[str, Any] | None:
        where = "signals FINAL WHERE symbol = {s:String} AND interval = '1d' AND retracted = 0"
        row = await self._latest("direction, strength, reasons", where, symbol)
        if row is None:
            return None
        ts, direction, strength, reasons = row
        return {"ts": iso(ts), "direction": direction, "strength": strength, "reasons": list(reasons)}

    async def daily_version(self) -> tuple[Any, ...]:
        """Changes whenever a daily candle or a market cap is added: the cache key of derived analytics."""
        rows = await self.store.query(
            "SELECT (SELECT count() FROM candles WHERE interval = '1d'), "
            "(SELECT max(produced_at) FROM candles WHERE interval = '1d'), (SELECT count() FROM market_caps)"
        )
        return tuple(rows[0])

    async def track_record_version(self) -> tuple[Any, ...]:
        """Changes whenever a daily candle, a market cap, a grade or a signal is added."""
        return (
            await self.daily_version(),
            await self.store.query("SELECT count(), max(produced_at) FROM grades"),
            await self.store.query("SELECT count(), max(produced_at) FROM signals"),
        )

    async def track_record_inputs(self) -> TrackRecordInputs:
        closes = {
            s: [(int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000), c) for d, c in pts]
            for s, pts in (await self.daily_closes()).items()
        }
        trader, investor = await self._grade_histories()
        signals = await self._standing_signals()
        intraday: dict[str, dict[str, list[tuple[int, float]]]] = {}
        for symbol, interval in sorted({(s.symbol, s.interval) for s in signals if s.interval != "1d"}):
            intraday.setdefault(interval, {})[symbol] = await self._closes(symbol, interval)
        return TrackRecordInputs(closes, signals, trader, investor, intraday)

    async def _grade_histories(self) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
        """Each token's Trader and Investor Grades by time (ms)."""
        trader: dict[str, dict[int, float]] = {}
        investor: dict[str, dict[int, float]] = {}
        rows = await self.store.query(
            "SELECT symbol, toUnixTimestamp64Milli(ts), trader_grade, investor_grade FROM grades FINAL"
        )
        for symbol, ts, trader_grade, investor_grade in rows:
            if trader_grade is not None:
                trader.setdefault(symbol, {})[ts] = trader_grade
            if investor_grade is not None:
                investor.setdefault(symbol, {})[ts] = investor_grade
        return trader, investor

    async def _standing_signals(self) -> list[SignalPoint]:
        """The daily and intraday signals that were not withdrawn."""
        rows = await self.store.query(
            "SELECT symbol, toUnixTimestamp64Milli(ts), direction, interval FROM signals FINAL "
            "WHERE retracted = 0 AND interval IN ('1d', '1h', '4h')"
        )
        return [SignalPoint(symbol, ts, direction, interval) for symbol, ts, direction, interval in rows]

    async def _closes(self, symbol: str, interval: str) -> list[tuple[int, float]]:
        rows = await self.store.query(
            "SELECT toUnixTimestamp64Milli(ts), close FROM candles FINAL "
            "WHERE symbol = {s:String} AND interval = {i:String} ORDER BY ts",
            {"s": symbol, "i": interval},
        )
        return [(ts, close) for ts, close in rows]


def _by_symbol(rows: list[tuple[str, date, float]]) -> dict[str, Series]:
    out: dict[str, Series] = {}
    for symbol, day, value in rows:
        out.setdefault(symbol, []).append((day, value))
    return out
