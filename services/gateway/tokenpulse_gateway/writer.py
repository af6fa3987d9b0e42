"""The store writer: the single role that persists topics to ClickHouse.

It runs inside the gateway target (``TOKENPULSE_PERSIST=true``) as consumer
group ``writer``: with several gateway replicas Kafka spreads the partitions
over them, so each event is written once; with chDB there is exactly one
process owning the engine, which is also the one answering queries. Every
table is a replacing engine keyed by the event's identity and every insert
carries a deduplication token from the event ids, so redelivery is harmless.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from tokenpulse_shared.bus.base import TransientError
from tokenpulse_shared.events import (
    AlertFiredEvent,
    CandleEvent,
    DeadLetterEvent,
    Event,
    GradeEvent,
    PredictionEvent,
    PriceEvent,
    SignalEvent,
    TickEvent,
)
from tokenpulse_shared.service import Context
from tokenpulse_shared.store import Store, StoreUnavailable
from tokenpulse_shared.store.client import dedup_token
from tokenpulse_shared.topics import (
    ALERTS,
    CANDLES,
    DEAD_LETTER,
    GRADES,
    PREDICTIONS,
    PRICES,
    SIGNALS,
    TICKS,
    Topic,
)


def ms(dt: Any) -> int:
    return int(dt.timestamp() * 1000)


Row = Callable[[Any], tuple[Any, ...]]

TABLES: dict[str, tuple[Topic, str, tuple[str, ...], Row]] = {
    "candles": (
        CANDLES,
        "candles",
        (
            "symbol",
            "interval",
            "ts",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "trades",
            "source",
            "version",
            "event_id",
            "produced_at",
        ),
        lambda e: (
            e.symbol,
            e.interval.value,
            ms(e.ts),
            e.open,
            e.high,
            e.low,
            e.close,
            e.volume,
            e.trades,
            e.source,
            e.version,
            e.event_id,
            ms(e.produced_at),
        ),
    ),
    "ticks": (
        TICKS,
        "ticks",
        ("symbol", "source", "ts", "price", "size", "side", "dedup_key", "event_id", "produced_at"),
        lambda e: (
            e.symbol,
            e.source,
            ms(e.ts),
            e.price,
            e.size,
            e.side.value,
            e.dedup_key(),
            e.event_id,
            ms(e.produced_at),
        ),
    ),
    "prices": (
        PRICES,
        "prices",
        ("symbol", "ts", "price", "volume_24h", "sources", "stale", "event_id", "produced_at"),
        lambda e: (e.symbol, ms(e.ts), e.price, e.volume_24h, e.sources, int(e.stale), e.event_id, ms(e.produced_at)),
    ),
    "grades": (
        GRADES,
        "grades",
        ("symbol", "ts", "trader_grade", "investor_grade", "components", "method", "event_id", "produced_at"),
        lambda e: (
            e.symbol,
            ms(e.ts),
            e.trader_grade,
            e.investor_grade,
            json.dumps(e.components),
            e.method,
            e.event_id,
            ms(e.produced_at),
        ),
    ),
    "signals": (
        SIGNALS,
        "signals",
        ("symbol", "interval", "ts", "direction", "strength", "reasons", "event_id", "produced_at"),
        lambda e: (
            e.symbol,
            e.interval.value,
            ms(e.ts),
            e.direction.value,
            e.strength,
            e.reasons,
            e.event_id,
            ms(e.produced_at),
        ),
    ),
    "predictions": (
        PREDICTIONS,
        "predictions",
        (
            "symbol",
            "horizon",
            "made_at",
            "target_ts",
            "point",
            "lower",
            "upper",
            "interval",
            "model",
            "backtest",
            "event_id",
            "produced_at",
        ),
        lambda e: (
            e.symbol,
            e.horizon,
            ms(e.made_at),
            ms(e.target_ts),
            e.point,
            e.lower,
            e.upper,
            e.interval,
            e.model,
            json.dumps(e.backtest),
            e.event_id,
            ms(e.produced_at),
        ),
    ),
    "alerts_fired": (
        ALERTS,
        "alerts_fired",
        ("rule_id", "owner", "symbol", "ts", "price", "message", "deliveries", "event_id", "produced_at"),
        lambda e: (
            e.rule_id,
            e.owner,
            e.symbol,
            ms(e.ts),
            e.price,
            e.message,
            json.dumps(e.deliveries),
            e.event_id,
            ms(e.produced_at),
        ),
    ),
    "dead_letters": (
        DEAD_LETTER,
        "dead_letters",
        ("topic", "consumer", "reason", "payload", "msg_key", "event_id", "produced_at"),
        lambda e: (e.topic, e.consumer, e.reason, e.payload, e.key, e.event_id, ms(e.produced_at)),
    ),
}

_ = (AlertFiredEvent, CandleEvent, DeadLetterEvent, GradeEvent, PredictionEvent, PriceEvent, SignalEvent, TickEvent)


class StoreWriter:
    name = "writer"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.written: dict[str, int] = {t: 0 for t in TABLES}

    def register(self, ctx: Context) -> None:
        for table in TABLES:
            ctx.bus.subscribe(TABLES[table][0], self.name, self._handler(table), max_batch=5000)

    def _handler(self, table: str) -> Callable[[list[Event]], Any]:
        _, name, columns, row = TABLES[table]

        async def write(events: list[Event]) -> None:
            await self.write(name, columns, row, events)
            self.written[table] += len(events)

        write.__name__ = f"write_{table}"
        return write

    async def write(self, table: str, columns: Sequence[str], row: Row, events: list[Event]) -> None:
        rows = [row(e) for e in events]
        cols = [list(c) for c in zip(*rows, strict=True)]
        try:
            await self.store.insert(table, cols, columns, dedup=dedup_token([e.event_id for e in events]))
        except StoreUnavailable as exc:
            raise TransientError(str(exc)) from exc

    async def start(self, ctx: Context) -> None:
        return None

    async def stop(self) -> None:
        return None
