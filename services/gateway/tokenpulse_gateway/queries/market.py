"""Market data: history pages (candles, indicators, grades, signals) and the latest state of each token."""

from __future__ import annotations

from typing import Any

from tokenpulse_shared.store import Store
from tokenpulse_shared.timeutil import DAY_MS as DAY
from tokenpulse_shared.timeutil import HOUR_MS as HOUR

from tokenpulse_gateway.analytics.levels import Bar
from tokenpulse_gateway.queries.common import iso, time_filters

CLOSE_MS = (
    "toUnixTimestamp64Milli(ts) + multiIf(interval = '1m', 60000, interval = '5m', 300000, "
    "interval = '15m', 900000, interval = '1h', 3600000, interval = '4h', 14400000, 86400000)"
)
WINDOWS = {"24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY, "1y": 365 * DAY}


def tolerance(window_ms: int) -> int:
    """How far from the wanted time a reference price may be: 5% of the window, at least 2 hours."""
    return max(2 * HOUR, window_ms // 20)


class MarketQueries:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def known_symbols(self) -> set[str]:
        rows = await self.store.query("SELECT DISTINCT symbol FROM candles")
        return {r[0] for r in rows}

    async def history(
        self,
        table: str,
        columns: tuple[str, ...],
        symbol: str | None,
        interval: str | None,
        window: tuple[int | None, int | None, int | None],
        limit: int,
    ) -> list[dict[str, Any]]:
        """Time-ordered rows of an event table, oldest first, keyset-paginated on ts. ``window`` is
        (start, end, after) in Unix milliseconds, each optional; ``_ms`` is each row's time."""
        where = ["1"]
        params: dict[str, Any] = {"n": limit}
        if symbol is not None:
            where.append("symbol = {s:String}")
            params["s"] = symbol
        if interval is not None:
            where.append("interval = {i:String}")
            params["i"] = interval
        if table == "signals":
            where.append("retracted = 0")  # a withdrawn signal is no longer served
        time_filters(where, params, *window)
        # one token's rows need no tie-break, and ts alone lets the engine read them in its sorting key's order
        order = "ts" if symbol is not None else "ts, symbol"
        rows = await self.store.query(
            f"SELECT toUnixTimestamp64Milli(ts), {', '.join(columns)} FROM {table} FINAL "
            f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT {{n:UInt32}}",
            params,
        )
        return [{"ts": iso(r[0]), **dict(zip(columns, r[1:], strict=True)), "_ms": r[0]} for r in rows]

    async def daily_bars(self, symbol: str, days: int = 800) -> list[Bar]:
        rows = await self.store.query(
            "SELECT toUnixTimestamp64Milli(ts), high, low, close, volume FROM candles FINAL "
            "WHERE symbol = {s:String} AND interval = '1d' ORDER BY ts DESC LIMIT {n:UInt32}",
            {"s": symbol, "n": days},
        )
        return [Bar(*r) for r in reversed(rows)]

    async def latest_prices(self, symbols: list[str]) -> dict[str, tuple[float, int]]:
        """Latest known price per symbol: the reference price stream, else the last candle close."""
        out: dict[str, tuple[float, int]] = {}
        rows = await self.store.query(
            "SELECT symbol, argMax(price, ts), toUnixTimestamp64Milli(max(ts)) FROM prices "
            "WHERE symbol IN {s:Array(String)} GROUP BY symbol",
            {"s": symbols},
        )
        for sym, price, ts in rows:
            out[sym] = (price, ts)
        rows = await self.store.query(
            f"SELECT symbol, argMax(close, close_ms), max(close_ms) FROM "
            f"(SELECT symbol, close, {CLOSE_MS} AS close_ms FROM candles WHERE symbol IN {{s:Array(String)}}) "
            "GROUP BY symbol",
            {"s": symbols},
        )
        for sym, price, ts in rows:
            if sym not in out or out[sym][1] < ts:
                out[sym] = (price, ts)
        return out

    async def price_at(self, symbol: str, t_ms: int, tol_ms: int) -> float | None:
        """The last price known at ``t_ms`` (no older than ``tol_ms``), from prices or candle closes."""
        rows = await self.store.query(
            "SELECT argMax(price, ts), count() FROM prices WHERE symbol = {s:String} "
            "AND ts <= fromUnixTimestamp64Milli({t:Int64}, 'UTC') "
            "AND ts >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC')",
            {"s": symbol, "t": t_ms, "lo": t_ms - tol_ms},
        )
        if rows and rows[0][1]:
            return float(rows[0][0])
        rows = await self.store.query(
            f"SELECT close, {CLOSE_MS} AS close_ms FROM candles FINAL WHERE symbol = {{s:String}} "
            "AND ts >= fromUnixTimestamp64Milli({lo2:Int64}, 'UTC') "
            "AND ts <= fromUnixTimestamp64Milli({t:Int64}, 'UTC') "
            "AND close_ms <= {t:Int64} AND close_ms >= {lo:Int64} ORDER BY close_ms DESC, "
            "toUnixTimestamp64Milli(ts) DESC LIMIT 1",
            {"s": symbol, "t": t_ms, "lo": t_ms - tol_ms, "lo2": t_ms - tol_ms - DAY},
        )
        return float(rows[0][0]) if rows else None

    async def volume_24h_usd(self, symbol: str, at_ms: int) -> float | None:
        """USD volume over the 24 hours before ``at_ms``: finest candles that cover it, else the last day."""
        for interval in ("1m", "1h"):
            rows = await self.store.query(
                "SELECT sum(volume * close), count() FROM candles FINAL WHERE symbol = {s:String} "
                "AND interval = {i:String} AND ts >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC') "
                "AND ts < fromUnixTimestamp64Milli({t:Int64}, 'UTC')",
                {"s": symbol, "i": interval, "lo": at_ms - DAY, "t": at_ms},
            )
            if rows and rows[0][1]:
                return float(rows[0][0])
        rows = await self.store.query(
            "SELECT volume * close FROM candles FINAL WHERE symbol = {s:String} AND interval = '1d' "
            "AND ts >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC') "
            "AND ts < fromUnixTimestamp64Milli({t:Int64}, 'UTC') ORDER BY ts DESC LIMIT 1",
            {"s": symbol, "lo": at_ms - 2 * DAY, "t": at_ms},
        )
        return float(rows[0][0]) if rows else None

    async def prices_at(self, at_ms: dict[str, int], tol_ms: int) -> dict[str, float]:
        """:meth:`price_at` of many tokens in two queries, each at its own time (``at_ms``: symbol → ms)."""
        if not at_ms:
            return {}
        syms, times = list(at_ms), list(at_ms.values())
        params = {"s": syms, "t": times, "tol": tol_ms, "day": DAY}
        at = "transform(symbol, {s:Array(String)}, {t:Array(Int64)}, toInt64(0))"
        rows = await self.store.query(
            f"SELECT symbol, argMax(price, ts) FROM prices WHERE symbol IN {{s:Array(String)}} "
            f"AND toUnixTimestamp64Milli(ts) <= {at} AND toUnixTimestamp64Milli(ts) >= {at} - {{tol:Int64}} "
            "GROUP BY symbol",
            params,
        )
        out = {sym: float(price) for sym, price in rows}
        missing = [s for s in syms if s not in out]
        if missing:
            rows = await self.store.query(
                f"SELECT symbol, argMax(close, (close_ms, ts)) FROM (SELECT symbol, ts, close, {CLOSE_MS} AS close_ms "
                f"FROM candles FINAL WHERE symbol IN {{m:Array(String)}} "
                f"AND toUnixTimestamp64Milli(ts) >= {at} - {{tol:Int64}} - {{day:Int64}} "
                f"AND toUnixTimestamp64Milli(ts) <= {at}) "
                f"WHERE close_ms <= {at} AND close_ms >= {at} - {{tol:Int64}} GROUP BY symbol",
                {**params, "m": missing},
            )
            out.update((sym, float(close)) for sym, close in rows)
        return out

    async def volumes_24h_usd(self, at_ms: dict[str, int]) -> dict[str, float]:
        """:meth:`volume_24h_usd` of many tokens in two queries, each over the day before its own time."""
        if not at_ms:
            return {}
        params = {"s": list(at_ms), "t": list(at_ms.values()), "day": DAY}
        at = "transform(symbol, {s:Array(String)}, {t:Array(Int64)}, toInt64(0))"
        rows = await self.store.query(
            "SELECT symbol, interval, sum(volume * close) FROM candles FINAL WHERE symbol IN {s:Array(String)} "
            f"AND interval IN ('1m', '1h', '1d') AND toUnixTimestamp64Milli(ts) < {at} "
            f"AND toUnixTimestamp64Milli(ts) >= {at} - if(interval = '1d', 2, 1) * {{day:Int64}} "
            "GROUP BY symbol, interval",
            params,
        )
        by: dict[str, dict[str, float]] = {}
        for sym, interval, total in rows:
            by.setdefault(sym, {})[interval] = float(total)
        last_day = await self.store.query(
            "SELECT symbol, argMax(volume * close, ts) FROM candles FINAL WHERE symbol IN {s:Array(String)} "
            f"AND interval = '1d' AND toUnixTimestamp64Milli(ts) < {at} "
            f"AND toUnixTimestamp64Milli(ts) >= {at} - 2 * {{day:Int64}} GROUP BY symbol",
            params,
        )
        days = {sym: float(v) for sym, v in last_day}
        out = {}
        for sym in at_ms:  # the finest interval that has candles in the window, else the last day
            found = by.get(sym, {})
            value = found.get("1m", found.get("1h", days.get(sym)))
            if value is not None:
                out[sym] = value
        return out

    async def latest_market_caps(self, symbols: list[str]) -> dict[str, tuple[float, int]]:
        """Each token's latest market cap and its time (Unix ms)."""
        rows = await self.store.query(
            "SELECT symbol, argMax(market_cap, ts), toUnixTimestamp64Milli(max(ts)) FROM market_caps "
            "WHERE symbol IN {s:Array(String)} GROUP BY symbol",
            {"s": symbols},
        )
        return {r[0]: (float(r[1]), int(r[2])) for r in rows}

    async def latest_grades(self, symbols: list[str]) -> dict[str, dict[str, Any]]:
        rows = await self.store.query(
            "SELECT symbol, argMax(trader_grade, ts), argMax(investor_grade, ts) FROM grades FINAL "
            "WHERE symbol IN {s:Array(String)} GROUP BY symbol",
            {"s": symbols},
        )
        return {r[0]: {"trader_grade": r[1], "investor_grade": r[2]} for r in rows}

    async def latest_signals(self, symbols: list[str]) -> dict[str, dict[str, Any]]:
        """Each token's latest daily signal (the one every tier sees), withdrawn ones left out."""
        rows = await self.store.query(
            "SELECT symbol, argMax(direction, ts), argMax(strength, ts), "
            "toUnixTimestamp64Milli(max(ts)) FROM signals FINAL "
            "WHERE symbol IN {s:Array(String)} AND interval = '1d' AND retracted = 0 GROUP BY symbol",
            {"s": symbols},
        )
        return {r[0]: {"direction": r[1], "strength": r[2], "ts": iso(r[3])} for r in rows}
