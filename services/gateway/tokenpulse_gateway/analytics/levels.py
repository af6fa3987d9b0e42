"""Key levels: support and resistance from swing pivots clustered over history.

A pure function (no I/O), used by the gateway on the stored daily candles:

1. **Pivots**: a swing high is a candle whose high is the highest of the ``window``
   candles on each side (a swing low likewise with lows). A pivot is only known
   ``window`` candles after it happened, so the newest candles never make pivots.
2. **Clusters**: pivot prices (highs and lows together: old resistance becomes support)
   sorted and grouped while each is within ``tolerance`` (relative) of the group's mean.
3. **Level**: the volume-weighted mean price of the group; ``touches`` = pivots in it;
   ``strength`` in 0..1 = touches weighted by recency (half-life ``half_life_days``)
   and by the pivots' volume relative to the period's mean, divided by the strongest level.
4. Levels below the last close are **support**, above it **resistance**, nearest first.
   The strongest support is the "key support"; the nearest resistance of strength at
   least 0.3 is the "breakout level to watch".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tokenpulse_shared.timeutil import DAY_MS


@dataclass(frozen=True)
class Bar:
    ts_ms: int
    high: float
    low: float
    close: float
    volume: float


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def key_levels(
    bars: list[Bar],
    *,
    window: int = 5,
    tolerance: float = 0.03,
    half_life_days: float = 180.0,
    lookback: int = 730,
    per_side: int = 5,
) -> dict[str, Any]:
    bars = bars[-lookback:]
    if len(bars) < 2 * window + 1:
        return {
            "price": bars[-1].close if bars else None,
            "support": [],
            "resistance": [],
            "key_support": None,
            "breakout_level": None,
        }
    now = bars[-1].ts_ms
    mean_volume = sum(b.volume for b in bars) / len(bars) or 1.0
    pivots: list[tuple[float, float, int]] = []  # (price, volume, ts)
    for i in range(window, len(bars) - window):
        around = bars[i - window : i + window + 1]
        if bars[i].high >= max(b.high for b in around):
            pivots.append((bars[i].high, bars[i].volume, bars[i].ts_ms))
        if bars[i].low <= min(b.low for b in around):
            pivots.append((bars[i].low, bars[i].volume, bars[i].ts_ms))
    pivots.sort()
    clusters: list[list[tuple[float, float, int]]] = []
    for p in pivots:
        if clusters:
            mean = sum(q[0] for q in clusters[-1]) / len(clusters[-1])
            if abs(p[0] - mean) / mean <= tolerance:
                clusters[-1].append(p)
                continue
        clusters.append([p])
    levels = []
    for c in clusters:
        weight = sum(max(v, 1e-12) for _, v, _ in c)
        price = sum(p * max(v, 1e-12) for p, v, _ in c) / weight
        recency = sum(0.5 ** ((now - t) / DAY_MS / half_life_days) for _, _, t in c)
        volume_factor = min(2.0, (sum(v for _, v, _ in c) / len(c)) / mean_volume)
        raw = recency * (0.5 + 0.25 * volume_factor)
        levels.append(
            {"price": round(price, 8), "raw": raw, "touches": len(c), "last_touch": _iso(max(t for *_, t in c))}
        )
    top = max((lv["raw"] for lv in levels), default=1.0) or 1.0
    for lv in levels:
        lv["strength"] = round(lv.pop("raw") / top, 4)
    close = bars[-1].close
    support = sorted((lv for lv in levels if lv["price"] < close), key=lambda lv: close - lv["price"])[:per_side]
    resistance = sorted((lv for lv in levels if lv["price"] > close), key=lambda lv: lv["price"] - close)[:per_side]
    key_support = max(support, key=lambda lv: lv["strength"], default=None)
    breakout = next((lv for lv in resistance if lv["strength"] >= 0.3), None)
    return {
        "price": close,
        "as_of": _iso(now),
        "support": support,
        "resistance": resistance,
        "key_support": key_support,
        "breakout_level": breakout,
        "method": {
            "window": window,
            "tolerance": tolerance,
            "half_life_days": half_life_days,
            "lookback_days": lookback,
        },
    }
