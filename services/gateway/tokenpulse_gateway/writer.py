"""The store writer: the single role that persists topics to ClickHouse.

It runs inside the gateway target (``TOKENPULSE_PERSIST=true``) as consumer
group ``writer``: with several gateway replicas Kafka spreads the partitions
over them, so each event is written once; with chDB there is exactly one
process owning the engine, which is also the one answering queries. Every
table is a replacing engine keyed by the event's identity and every insert
carries a deduplication token from the event ids, so redelivery is harmless.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from tokenpulse_shared.batches import (
    CANDLE_VALUES,
    INDICATOR_NAMES,
    CandleBatch,
    IndicatorBatch,
    PriceBatch,
    RowBatch,
    TickBatch,
    epoch_us,
)
from tokenpulse_shared.bus.base import TransientError
from tokenpulse_shared.events import INDICATOR_FIELDS, Event
from tokenpulse_shared.service import Context
from tokenpulse_shared.store import Store, StoreUnavailable
from tokenpulse_shared.store.client import dedup_token
from tokenpulse_shared.topics import (
    ALERTS,
    CANDLES,
    DEAD_LETTER,
    GRADES,
    INDICATORS,
    MARKETCAPS,
    METRICS,
    PREDICTIONS,
    PRICES,
    SIGNALS,
    TICKS,
    V2_OF,
    Topic,
)


@dataclass(frozen=True)
class TableSpec:
    """How one topic's events become rows of one table.

    Columns named like an event attribute are read with one C-level
    ``attrgetter`` per event; ``computed`` columns are derived by a function.
    """

    topic: Topic
    table: str
    columns: tuple[str, ...]
    computed: dict[str, Callable[[Any], Any]] = field(default_factory=dict)

    def to_columns(self, events: Sequence[Event]) -> list[list[Any]]:
        plain = [c for c in self.columns if c not in self.computed]
        rows = list(map(attrgetter(*plain), events))
        by_name: dict[str, list[Any]] = {}
        if len(plain) == 1:
            by_name[plain[0]] = rows
        else:
            for name, column in zip(plain, zip(*rows, strict=True), strict=True):
                by_name[name] = list(column)
        for name, fn in self.computed.items():
            by_name[name] = [fn(e) for e in events]
        return [by_name[c] for c in self.columns]


def _json(attr: str) -> Callable[[Any], str]:
    return lambda e: json.dumps(getattr(e, attr))


EVENT_COLS = ("event_id", "produced_at")


def firing_version(event: Any) -> int:
    """A firing is published pending, then with its delivery outcome: the outcome replaces the pending row
    even when both carry the same millisecond."""
    return int(event.produced_at.timestamp() * 1_000_000) * 10 + (event.status != "pending")


Series = frozenset[tuple[str, str]]
"""the (symbol, interval) pairs of the rows stored (empty for a table without intervals)"""


SERIES_TABLES = ("candles", "indicators")
"""the tables whose stored rows the hooks are told the series of (cached history pages are per series)"""


def _events_series(table: str, events: Sequence[Any]) -> Series:
    return frozenset((e.symbol, e.interval.value) for e in events) if table in SERIES_TABLES else frozenset()


def _tick_rows(b: TickBatch) -> dict[str, list[Any]]:
    # DateTime64(3) takes integer milliseconds as they are: no datetime object per row
    return {
        "symbol": b.symbol,
        "source": b.source,
        "ts": [t // 1000 for t in b.ts_us],
        "price": b.price,
        "size": b.size,
        "side": b.side,
        "dedup_key": b.dedup_keys(),
        "event_id": b.row_ids(),
    }


def _price_rows(b: PriceBatch) -> dict[str, list[Any]]:
    return {
        "symbol": b.symbol,
        "ts": [t // 1000 for t in b.ts_us],
        "price": b.price,
        "volume_24h": b.volume_24h,
        "sources": b.sources,
        "stale": b.stale,
        "event_id": b.row_ids(),
    }


def _candle_rows(b: CandleBatch) -> dict[str, list[Any]]:
    names = ("symbol", "interval", *CANDLE_VALUES)
    return {"ts": b.ts_ms, "event_id": b.row_id, **{name: getattr(b, name) for name in names}}


def _indicator_rows(b: IndicatorBatch) -> dict[str, list[Any]]:
    names = ("symbol", "interval", *INDICATOR_NAMES, "candle_version")
    return {"ts": b.ts_ms, "event_id": b.row_id, **{name: getattr(b, name) for name in names}}


ROW_COLUMNS: dict[str, Callable[[Any], dict[str, list[Any]]]] = {
    "ticks": _tick_rows,
    "prices": _price_rows,
    "candles": _candle_rows,
    "indicators": _indicator_rows,
}
"""a batch topic's rows as the columns of its table, taken from the batch's own columns"""


def rows_columns(spec: TableSpec, batches: Sequence[RowBatch]) -> tuple[list[list[Any]], list[str]]:
    """The columns of ``spec``'s table (in ``spec.columns`` order) for the rows of v2 batches, and the rows'
    ids in order (the v1 events' ids, so the deduplication token is the one their v1 events give)."""
    by_name: dict[str, list[Any]] = {c: [] for c in spec.columns}
    for batch in batches:
        part = ROW_COLUMNS[spec.table](batch)
        part["produced_at"] = [epoch_us(batch.produced_at) // 1000] * len(batch)
        for name, column in part.items():
            by_name[name].extend(column)
    return [by_name[c] for c in spec.columns], by_name["event_id"]


TABLES: dict[str, TableSpec] = {
    spec.table: spec
    for spec in (
        TableSpec(CANDLES, "candles", ("symbol", "interval", "ts", *CANDLE_VALUES, *EVENT_COLS)),
        TableSpec(
            TICKS,
            "ticks",
            ("symbol", "source", "ts", "price", "size", "side", "dedup_key", *EVENT_COLS),
            {"dedup_key": lambda e: e.dedup_key()},
        ),
        TableSpec(PRICES, "prices", ("symbol", "ts", "price", "volume_24h", "sources", "stale", *EVENT_COLS)),
        TableSpec(
            INDICATORS,
            "indicators",
            ("symbol", "interval", "ts", *INDICATOR_FIELDS, "candle_version", *EVENT_COLS),
        ),
        TableSpec(
            METRICS, "metrics", ("symbol", "ts", "metrics", "source", *EVENT_COLS), {"metrics": _json("metrics")}
        ),
        TableSpec(
            MARKETCAPS,
            "market_caps",
            ("symbol", "ts", "market_cap", "volume_24h", "source", *EVENT_COLS),
            {"symbol": lambda e: e.symbol or ""},
        ),
        TableSpec(
            GRADES,
            "grades",
            ("symbol", "ts", "trader_grade", "investor_grade", "components", "method", *EVENT_COLS),
            {"components": _json("components")},
        ),
        TableSpec(
            SIGNALS,
            "signals",
            ("symbol", "interval", "ts", "direction", "strength", "reasons", "retracted", *EVENT_COLS),
        ),
        TableSpec(
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
                "lower_95",
                "upper_95",
                "interval",
                "model",
                "kind",
                "backtest",
                *EVENT_COLS,
            ),
            {"backtest": _json("backtest")},
        ),
        TableSpec(
            ALERTS,
            "alert_firings",
            (
                "firing_id",
                "rule_id",
                "owner",
                "symbol",
                "ts",
                "price",
                "message",
                "trigger_event_id",
                "status",
                "deliveries",
                "version",
                *EVENT_COLS,
            ),
            {"deliveries": _json("deliveries"), "version": firing_version},
        ),
        TableSpec(
            DEAD_LETTER,
            "dead_letters",
            ("topic", "consumer", "reason", "payload", "msg_key", *EVENT_COLS),
            {"msg_key": lambda e: e.key},
        ),
    )
}


INSERT_EVERY_S = 0.5
"""on a broker, a table gets at most one insert this often: a chDB insert costs milliseconds of CPU whatever its
size, and the consumer fetches what arrived meanwhile, so the next insert holds it all"""


class StoreWriter:
    name = "writer"

    def __init__(self, store: Store, *, insert_every_s: float = 0.0) -> None:
        self.store = store
        self.insert_every_s = insert_every_s
        self._inserted_at: dict[str, float] = {}
        self.written: dict[str, int] = dict.fromkeys(TABLES, 0)
        # called with (table, series) once a batch is in the store: the gateway's page cache drops the
        # pages of those series then (dropping them when the events arrive on the bus is not enough:
        # a page read between the event and its insert would keep the old rows for its whole TTL)
        self.on_stored: list[Callable[[str, Series], None]] = []

    def register(self, ctx: Context) -> None:
        if not ctx.embedded:  # the in-process bus hands over what queued already: pacing would only slow it
            self.insert_every_s = self.insert_every_s or INSERT_EVERY_S
        for spec in TABLES.values():
            # a batch redelivered after a rebalance comes with other boundaries, so another deduplication
            # token: finishing (and committing) it before giving up the partitions keeps it stored once
            ctx.bus.subscribe(
                spec.topic, self.name, self._handler(spec), max_batch=5000, finish_batch_on_rebalance=True
            )
            v2 = V2_OF.get(spec.topic.name)
            if v2 is not None:  # the rows, as the v1 events they are (identity included), into the same table
                handler = self._rows_handler(spec)
                ctx.bus.subscribe(v2, self.name, handler, max_batch=5000, finish_batch_on_rebalance=True)

    def _handler(self, spec: TableSpec) -> Callable[[list[Event]], Any]:
        async def write(events: list[Event]) -> None:
            await self.write(spec, events)

        write.__name__ = f"write_{spec.table}"
        return write

    def _rows_handler(self, spec: TableSpec) -> Callable[[list[RowBatch]], Any]:
        async def write_rows(batches: list[RowBatch]) -> None:
            await self.write_rows(spec, batches)

        write_rows.__name__ = f"write_{spec.table}_rows"
        return write_rows

    async def write(self, spec: TableSpec, events: Sequence[Event]) -> None:
        columns = spec.to_columns(events)
        await self._insert(spec, columns, [e.event_id for e in events], _events_series(spec.table, events))

    async def write_rows(self, spec: TableSpec, batches: Sequence[RowBatch]) -> None:
        """The rows of v2 batches, column by column as they came (no per-row event object): the same table
        rows, and the same deduplication token, as their v1 events give."""
        columns, ids = rows_columns(spec, batches)
        series: Series = frozenset()
        if spec.table in SERIES_TABLES:
            symbols, intervals = columns[spec.columns.index("symbol")], columns[spec.columns.index("interval")]
            series = frozenset(zip(symbols, (i.value for i in intervals), strict=True))
        await self._insert(spec, columns, ids, series)

    async def _insert(self, spec: TableSpec, columns: list[list[Any]], ids: list[str], series: Series) -> None:
        # the consumer's topics are handled one after the other: waiting here lets every topic's rows gather
        wait = self._inserted_at.get(spec.table, float("-inf")) + self.insert_every_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            await self.store.insert(spec.table, columns, spec.columns, dedup=dedup_token(ids))
        except StoreUnavailable as exc:
            raise TransientError(str(exc)) from exc
        self._inserted_at[spec.table] = time.monotonic()
        self.written[spec.table] += len(ids)
        for hook in self.on_stored:
            hook(spec.table, series)

    async def start(self, ctx: Context) -> None:
        return None

    async def stop(self) -> None:
        return None
