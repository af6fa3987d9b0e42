"""Reference price v0: the median of the latest price of every fresh source.

Issue #3 replaces this with full reconciliation (USD/USDT normalisation,
outlier rejection, volume and freshness weights); the event shape stays.
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime

from tokenpulse_shared.events import PriceEvent, TickEvent


class PriceReconciler:
    def __init__(self, stale_after_s: float = 30.0) -> None:
        self.stale_after_s = stale_after_s
        self._latest: dict[str, dict[str, tuple[float, float]]] = {}
        self._published: dict[str, float] = {}

    def update(self, ticks: list[TickEvent]) -> list[PriceEvent]:
        touched: dict[str, datetime] = {}
        for tick in ticks:
            by_source = self._latest.setdefault(tick.symbol, {})
            ts = tick.ts.timestamp()
            if ts >= by_source.get(tick.source, (0.0, 0.0))[0]:
                by_source[tick.source] = (ts, tick.price)
            if tick.symbol not in touched or tick.ts > touched[tick.symbol]:
                touched[tick.symbol] = tick.ts
        out = []
        for symbol, at in touched.items():
            newest = at.timestamp()
            fresh = {s: p for s, (t, p) in self._latest[symbol].items() if newest - t <= self.stale_after_s}
            price = statistics.median(fresh.values())
            out.append(
                PriceEvent(
                    symbol=symbol,
                    ts=at.astimezone(UTC),
                    price=price,
                    sources=sorted(fresh),
                    stale=False,
                    prev_price=self._published.get(symbol),
                )
            )
            self._published[symbol] = price
        return out
