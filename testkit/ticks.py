"""Synthetic trade feeds for the candle tests: random walks, with some trades sent again later."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from tokenpulse_ingest.venues.connector import BadMessage, Connector, tick_batch
from tokenpulse_shared.batches import TickBatch
from tokenpulse_shared.events import Side, TickEvent


def random_walk(
    rng: random.Random,
    prices: dict[str, float],
    n: int,
    *,
    start: datetime,
    step_s: float,
    move: float,
    sizes: tuple[float, float],
    source: str,
) -> list[TickEvent]:
    """``n`` trades per symbol, one every ``step_s`` (plus under a second), each price within ``move`` of the last."""
    prices = dict(prices)
    out: list[TickEvent] = []
    for i in range(n):
        for symbol in prices:
            prices[symbol] *= 1 + rng.uniform(-move, move)
            out.append(
                TickEvent(
                    symbol=symbol,
                    source=source,
                    ts=start + timedelta(seconds=step_s * i, milliseconds=rng.randrange(1000)),
                    price=prices[symbol],
                    size=rng.uniform(*sizes),
                    trade_id=f"{symbol}-{i}",
                )
            )
    return out


def with_resends(
    rng: random.Random, ticks: list[TickEvent], every: int, max_delay: int, event_id: Callable[[int], str]
) -> list[TickEvent]:
    """Every ``every``-th trade sent again up to ``max_delay`` ticks later: same trade id, a new event id (an
    exchange's re-send)."""
    for j in range(0, len(ticks), every):
        again = ticks[j].model_copy(update={"event_id": event_id(j)})
        ticks.insert(min(len(ticks), j + rng.randrange(2, max_delay)), again)
    return ticks


async def discard(ticks: TickBatch) -> None:
    """A connector's sink for tests that only call ``parse``."""


def parsed(connector: Connector, raw: str | bytes) -> list[TickEvent]:
    """The trades one frame parses into, read from the connector's rows as ``TickBatch.to_events()`` gives them
    (a refused frame raises its :class:`BadMessage` and leaves no row behind, as :meth:`Connector.handle` does)."""
    try:
        connector.parse(raw)
    except Exception:
        connector.rows.clear()
        raise
    rows = connector.take_rows()
    return tick_batch(rows).to_events() if rows else []


def trade_of(tick: TickEvent) -> tuple[str, str, str, float, float, Side]:
    """What a venue's trade normalises to: symbol, source, quote, price, size and taker side."""
    return tick.symbol, tick.source, tick.quote, tick.price, tick.size, tick.side


def ohlcv(trades: list[TickEvent]) -> tuple[float, float, float, float, float]:
    """Open, high, low, close and volume of trades already in time order: what their candle must hold."""
    return (
        trades[0].price,
        max(t.price for t in trades),
        min(t.price for t in trades),
        trades[-1].price,
        sum(t.size for t in trades),
    )


def refusal(connector: Connector, raw: str | bytes) -> str:
    """The kind of :class:`BadMessage` the connector refuses ``raw`` with; a frame it accepts fails the test."""
    try:
        parsed(connector, raw)
    except BadMessage as exc:
        return exc.kind
    raise AssertionError(f"accepted {raw!r}"[:200])
