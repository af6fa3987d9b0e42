"""Forecasts: the newest per horizon, past ones, and the daily closes they are checked against.

Per horizon the newest ``made_at`` wins (and, for the same ``made_at``, the newest ``produced_at``:
a retrain may re-issue a day's forecast).
"""

from __future__ import annotations

import json
from typing import Any

from tokenpulse_shared.predictions import HORIZONS
from tokenpulse_shared.store import Store
from tokenpulse_shared.timeutil import DAY_MS as DAY

from tokenpulse_gateway.queries.common import iso

COLS = (
    "horizon, toUnixTimestamp64Milli(made_at), toUnixTimestamp64Milli(target_ts), point, lower, upper, "
    "lower_95, upper_95, interval, model, kind, backtest"
)


def _row(r: tuple[Any, ...]) -> dict[str, Any]:
    horizon, made, target, point, lower, upper, lo95, hi95, interval, model, kind, backtest = r
    return {
        "horizon": horizon,
        "made_at": iso(made),
        "target_ts": iso(target),
        "point": point,
        "lower": lower,
        "upper": upper,
        "interval": interval,
        "lower_95": lo95,
        "upper_95": hi95,
        "model": model,
        "kind": kind,
        "backtest": json.loads(backtest or "{}"),
        "_target_ms": target,
    }


class PredictionQueries:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def current(self, symbol: str) -> list[dict[str, Any]]:
        """The newest live forecast of each horizon (1d, 7d, 30d order); [] when there is none."""
        rows = await self.store.query(
            f"SELECT {COLS} FROM predictions FINAL WHERE symbol = {{s:String}} AND kind = 'live' "
            "ORDER BY made_at DESC, produced_at DESC LIMIT 1 BY horizon",
            {"s": symbol},
        )
        order = list(HORIZONS)
        out = sorted((_row(r) for r in rows), key=lambda x: order.index(x["horizon"]) if x["horizon"] in order else 99)
        return [{k: v for k, v in r.items() if not k.startswith("_")} for r in out]

    async def past(self, symbol: str, horizon: str | None, limit: int) -> list[dict[str, Any]]:
        """Past forecasts, newest first; ``_target_ms`` is each one's target time."""
        where = "symbol = {s:String}" + (" AND horizon = {h:String}" if horizon else "")
        rows = await self.store.query(
            f"SELECT {COLS} FROM predictions FINAL WHERE {where} "
            "ORDER BY made_at DESC, produced_at DESC LIMIT 1 BY horizon, made_at LIMIT {n:UInt32}",
            {"s": symbol, "h": horizon or "", "n": limit},
        )
        return [_row(r) for r in rows]

    async def closes_at(self, symbol: str, targets_ms: list[int]) -> dict[int, float]:
        """The daily close at each target time (the close of the day ending then), where known."""
        opens = sorted({t - DAY for t in targets_ms})
        if not opens:
            return {}
        rows = await self.store.query(
            "SELECT toUnixTimestamp64Milli(ts), close FROM candles FINAL WHERE symbol = {s:String} "
            "AND interval = '1d' AND toUnixTimestamp64Milli(ts) IN {t:Array(Int64)}",
            {"s": symbol, "t": opens},
        )
        return {ts + DAY: close for ts, close in rows}

    async def daily_candles(self, symbol: str) -> int:
        rows = await self.store.query(
            "SELECT count() FROM candles FINAL WHERE symbol = {s:String} AND interval = '1d'", {"s": symbol}
        )
        return int(rows[0][0]) if rows else 0
