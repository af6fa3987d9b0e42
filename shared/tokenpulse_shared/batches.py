"""Columnar batch events of the busiest topics (docs/design/0001-batch-hot-path.md).

One message carries many rows of one partition, one list per column, times as integers with the unit in the
name (``ts_us`` for trades and prices, ``ts_ms`` for candles and indicators). Each batch is a strict pydantic
model like every event: its JSON Schema and AsyncAPI entry are generated from it and the bus reads it with
``model_validate_json`` as it reads every topic (no second decoder: the record measured too little gain for
one). A column's values have exactly the bounds of the matching field of the per-event (v1) model, which
``tests/unit/test_batches.py`` proves, so a v1 event converts into a row and back without loss.

A batch is valid or not as a whole: one bad row fails it, with pydantic's reason naming the row
(``price.1``), and the bus dead-letters the message.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Annotated, Any, ClassVar, Self, TypeVar

from pydantic import ConfigDict, Field, model_validator

from tokenpulse_shared.events import (
    Amount,
    CandleEvent,
    Event,
    Indicator,
    IndicatorEvent,
    Interval,
    Price,
    PriceEvent,
    Side,
    Symbol,
    TickEvent,
    UtcDatetime,
    content_digest,
    new_event_id,
    trusted,
    utcnow,
)

MAX_BATCH_ROWS = 10_000
_TS = attrgetter("ts")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# the instants an aware datetime holds (year 1 to 9999, UTC), so every v1 time converts to a row time
MIN_TS_US = -62_135_596_800_000_000
MAX_TS_US = 253_402_300_799_999_999
MIN_TS_MS = MIN_TS_US // 1000
MAX_TS_MS = MAX_TS_US // 1000

EpochMicros = Annotated[int, Field(ge=MIN_TS_US, le=MAX_TS_US, description="epoch microseconds, UTC")]
EpochMillis = Annotated[int, Field(ge=MIN_TS_MS, le=MAX_TS_MS, description="epoch milliseconds, UTC")]
Source = Annotated[str, Field(min_length=1, max_length=64)]
TradeId = Annotated[str, Field(max_length=128)]
Quote = Annotated[str, Field(pattern=r"^[A-Z0-9]{2,10}$")]
CandleSource = Annotated[str, Field(max_length=64)]
Count = Annotated[int, Field(ge=0)]
RowId = Annotated[str, Field(min_length=8, max_length=128)]


def rows() -> Any:
    """A column's bounds: 1 to :data:`MAX_BATCH_ROWS` rows."""
    return Field(min_length=1, max_length=MAX_BATCH_ROWS)


def epoch_us(ts: datetime) -> int:
    """Exact epoch microseconds of an aware datetime (``timestamp()`` is a float and can be off by one)."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_us(ts_us: int) -> datetime:
    """The aware UTC datetime of epoch microseconds, exactly."""
    return _EPOCH + timedelta(microseconds=ts_us)


def price_row_id(symbol: str, ts_us: int, price: float, sources: Sequence[str], stale: bool, prev: float | None) -> str:
    """A price's identity, derived from what it says: the same reconciled price published again (ticks
    redelivered after a restart) has the same id, as a v1 event or as a row."""
    return f"price-{symbol}-{ts_us}-{content_digest(price, tuple(sources), stale, prev)}"


class RowBatch(Event):
    """Rows of one partition, column by column (row ``i`` is the ``i``-th value of every column); subclasses
    name their columns in :attr:`COLUMNS` and the per-event model a row converts to in :attr:`ROW_MODEL`."""

    model_config = ConfigDict(strict=True)

    ROW_MODEL: ClassVar[type[Event]]
    COLUMNS: ClassVar[tuple[str, ...]]
    TIME: ClassVar[tuple[str, int]] = ("ts_us", 1)
    """the time column and how many microseconds its unit is (1: ``ts_us``, 1000: ``ts_ms``)"""

    # required here: rows may take their identity from it, so a copy of the message must decode the same
    event_id: str = Field(min_length=8, max_length=128)
    produced_at: UtcDatetime

    @model_validator(mode="after")
    def _rectangular(self) -> Self:
        lengths = {len(getattr(self, name)) for name in self.COLUMNS}
        if len(lengths) != 1:
            raise ValueError(f"every column needs the same number of rows, got lengths {sorted(lengths)}")
        return self

    def __len__(self) -> int:
        return len(getattr(self, self.COLUMNS[0]))

    def columns(self) -> list[list[Any]]:
        """The columns in :attr:`COLUMNS` order (the lists themselves, not copies)."""
        return [getattr(self, name) for name in self.COLUMNS]

    @classmethod
    def of_columns(
        cls, columns: Sequence[Sequence[Any]], *, event_id: str | None = None, produced_at: datetime | None = None
    ) -> Self:
        """A batch from columns in :attr:`COLUMNS` order whose values are valid by construction (validated
        events' values, or a service's own computation), without validating them again."""
        fields: dict[str, Any] = {
            "event_id": event_id or new_event_id(),
            "schema_version": 1,
            "produced_at": produced_at or utcnow(),
        }
        for name, column in zip(cls.COLUMNS, columns, strict=True):
            fields[name] = list(column)
        return trusted(cls, fields)

    def take(self, rows: Sequence[int], *, event_id: str | None = None) -> Self:
        """The batch of the given rows (in that order)."""
        return self.of_columns(
            [[column[i] for i in rows] for column in self.columns()],
            event_id=event_id,
            produced_at=self.produced_at,
        )

    @classmethod
    def concat(cls, batches: Sequence[RowBatch]) -> list[list[Any]]:
        """The columns of several batches one after the other."""
        out: list[list[Any]] = [[] for _ in cls.COLUMNS]
        for batch in batches:
            for into, column in zip(out, batch.columns(), strict=True):
                into.extend(column)
        return out

    @classmethod
    def from_events(cls, events: Sequence[Event], *, event_id: str | None = None) -> Self:
        """The rows of per-event (v1) events: the edge where a v1 message becomes a row. Each column is the
        event field of its name, but ``row_id`` (the event's id) and the time column (the event's ``ts``)."""
        time_column, per_us = cls.TIME
        columns: list[list[Any]] = []
        for name in cls.COLUMNS:
            if name == time_column:
                columns.append([epoch_us(ts) // per_us for ts in map(_TS, events)])
            else:
                columns.append(list(map(attrgetter("event_id" if name == "row_id" else name), events)))
        return cls.of_columns(columns, event_id=event_id)

    def to_events(self) -> list[Any]:
        """The rows as per-event (v1) events: the edge where a consumer or the v1 topic wants events."""
        time_column, per_us = self.TIME
        names = [name for name in self.COLUMNS if name not in (time_column, "row_id")]
        extra = (
            {"event_id": eid, "ts": from_epoch_us(ts * per_us)}
            for eid, ts in zip(self.row_ids(), getattr(self, time_column), strict=True)
        )
        return _rows_to_events(self, self.ROW_MODEL, names, extra)

    def row_ids(self) -> list[str]:
        """Each row's identity (the ``event_id`` its v1 event carries)."""
        raise NotImplementedError

    def symbols(self) -> list[str]:
        """Each row's token (every batch has a ``symbol`` column: it places the row in its partition)."""
        column: list[str] = self.__dict__["symbol"]
        return column


def _rows_to_events(
    batch: RowBatch, model: type[Event], names: Sequence[str], extra: Iterable[dict[str, Any]]
) -> list[Any]:
    fields_set = set(model.model_fields)
    head = {"schema_version": 1, "produced_at": batch.produced_at}
    columns = [getattr(batch, name) for name in names]
    out = []
    for values, more in zip(zip(*columns, strict=True), extra, strict=True):
        row = dict(zip(names, values, strict=True)) | head | more
        out.append(trusted(model, row, fields_set))
    return out


T = TypeVar("T")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter), as a consumer's batches come."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


TICK_COLUMNS = ("symbol", "source", "ts_us", "price", "size", "side", "trade_id", "quote")


class TickBatch(RowBatch):
    """Trades of one partition of ``tokenpulse.ticks.v2``, column by column: row ``i`` is the ``i``-th value
    of every column, one trade as a ``tokenpulse.ticks.v1`` message carries it (``ts_us`` its exchange time in
    epoch microseconds). Every column has the same length, 1 to 10,000 rows. The batch is valid or not as a
    whole. A row's identity is ``source:trade_id``, or ``event_id#row`` for a trade without an id."""

    ROW_MODEL: ClassVar[type[Event]] = TickEvent
    COLUMNS: ClassVar[tuple[str, ...]] = TICK_COLUMNS

    symbol: list[Symbol] = rows()
    source: list[Source] = rows()
    ts_us: list[EpochMicros] = rows()
    price: list[Price] = rows()
    size: list[Amount] = rows()
    side: list[Side] = rows()
    trade_id: list[TradeId | None] = rows()
    quote: list[Quote] = rows()

    def dedup_keys(self) -> list[str]:
        """Each row's identity, as :meth:`TickEvent.dedup_key` gives it for a per-trade message."""
        prefix = f"{self.event_id}#"
        return [
            f"{source}:{tid}" if tid else f"{prefix}{i}"
            for i, (source, tid) in enumerate(zip(self.source, self.trade_id, strict=True))
        ]

    def row_ids(self) -> list[str]:
        return [
            f"{src}-{sym}-{tid}" if tid else f"{self.event_id}#{i}"
            for i, (sym, src, tid) in enumerate(zip(self.symbol, self.source, self.trade_id, strict=True))
        ]


PRICE_COLUMNS = ("symbol", "ts_us", "price", "volume_24h", "sources", "stale", "prev_price")


class PriceBatch(RowBatch):
    """Reconciled reference prices of tokens of one partition of ``tokenpulse.prices.v2``: each row is a
    ``tokenpulse.prices.v1`` event, with ``ts_us`` the newest exchange time (epoch microseconds) among the
    token's trades in the batch ingest handled (for a ``stale`` row: the token's clock when it went stale).
    A row's identity is derived from its content: ``price-SYMBOL-ts_us-digest`` (the v1 event's id)."""

    ROW_MODEL: ClassVar[type[Event]] = PriceEvent
    COLUMNS: ClassVar[tuple[str, ...]] = PRICE_COLUMNS

    symbol: list[Symbol] = rows()
    ts_us: list[EpochMicros] = rows()
    price: list[Price] = rows()
    volume_24h: list[Amount | None] = rows()
    sources: list[list[str]] = rows()
    stale: list[bool] = rows()
    prev_price: list[Price | None] = rows()

    def row_ids(self) -> list[str]:
        return [
            price_row_id(*row)
            for row in zip(self.symbol, self.ts_us, self.price, self.sources, self.stale, self.prev_price, strict=True)
        ]


class IntervalRowBatch(RowBatch):
    """A batch of per-interval rows (candles, indicators): each row names its token, interval and open time
    (``ts_ms``, epoch milliseconds) and carries its identity in ``row_id`` (the v1 event's id)."""

    TIME: ClassVar[tuple[str, int]] = ("ts_ms", 1000)

    row_id: list[RowId] = rows()
    symbol: list[Symbol] = rows()
    interval: list[Interval] = rows()
    ts_ms: list[EpochMillis] = rows()

    def row_ids(self) -> list[str]:
        return list(self.row_id)


CANDLE_VALUES = ("open", "high", "low", "close", "volume", "trades", "source", "version")
"""a candle's own columns: what follows its identity, token, interval and open time (also in the candles table)"""
CANDLE_COLUMNS = ("row_id", "symbol", "interval", "ts_ms", *CANDLE_VALUES, "closed")


class CandleBatch(IntervalRowBatch):
    """Candles of one partition of ``tokenpulse.candles.v2``: each row is a ``tokenpulse.candles.v1`` event,
    with ``ts_ms`` its open time (epoch milliseconds, aligned to its interval) and ``row_id`` its identity
    (the v1 event's id). Per row, ``high`` is at least ``open``, ``close`` and ``low``, and ``low`` at most
    ``open`` and ``close``; a row that breaks this fails the batch, the reason naming the row."""

    ROW_MODEL: ClassVar[type[Event]] = CandleEvent
    COLUMNS: ClassVar[tuple[str, ...]] = CANDLE_COLUMNS

    open: list[Price] = rows()
    high: list[Price] = rows()
    low: list[Price] = rows()
    close: list[Price] = rows()
    volume: list[Amount] = rows()
    trades: list[Count] = rows()
    source: list[CandleSource] = rows()
    version: list[Count] = rows()
    closed: list[bool] = rows()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        rows = zip(self.interval, self.ts_ms, self.open, self.high, self.low, self.close, strict=False)
        for i, (interval, ts_ms, o, h, lo, c) in enumerate(rows):
            if h < max(o, c, lo):
                raise ValueError(f"row {i}: high must be >= open, close and low")
            if lo > min(o, c):
                raise ValueError(f"row {i}: low must be <= open and close")
            if ts_ms % interval.millis:
                raise ValueError(f"row {i}: ts_ms must be aligned to the {interval.value} interval")
        return self


INDICATOR_NAMES = (
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "ema_20",
    "ema_50",
    "sma_200",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "atr_14",
)
INDICATOR_COLUMNS = ("row_id", "symbol", "interval", "ts_ms", *INDICATOR_NAMES, "candle_version")


class IndicatorBatch(IntervalRowBatch):
    """Indicators of tokens of one partition of ``tokenpulse.indicators.v2``: each row is a
    ``tokenpulse.indicators.v1`` event, ``ts_ms`` the open time (epoch milliseconds) of the candle the values
    are computed at, ``row_id`` its identity (the v1 event's id); ``null`` while warming up."""

    ROW_MODEL: ClassVar[type[Event]] = IndicatorEvent
    COLUMNS: ClassVar[tuple[str, ...]] = INDICATOR_COLUMNS

    rsi_14: list[Indicator] = rows()
    macd: list[Indicator] = rows()
    macd_signal: list[Indicator] = rows()
    macd_hist: list[Indicator] = rows()
    ema_20: list[Indicator] = rows()
    ema_50: list[Indicator] = rows()
    sma_200: list[Indicator] = rows()
    bb_upper: list[Indicator] = rows()
    bb_middle: list[Indicator] = rows()
    bb_lower: list[Indicator] = rows()
    atr_14: list[Indicator] = rows()
    candle_version: list[Count] = rows()


BATCH_MODELS: tuple[type[RowBatch], ...] = (TickBatch, PriceBatch, CandleBatch, IndicatorBatch)
