"""Counting the ticks topics again, publishing nothing: how ingest rebuilds its open candles and reference
prices after a restart or a takeover (:meth:`IngestService.restore`).

The read streams: ticks go through the builder a fetch at a time and only the published candles that still
matter are kept, so the memory a rebuild needs is the state it rebuilds, not the day of ticks it reads.
``ticks.v1`` (outside producers, one event per trade) and ``ticks.v2`` (our feeds, row batches) are merged
by the time each message was made, each topic's own order kept: about the order the consumer counted them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from tokenpulse_shared.batches import CandleBatch, TickBatch
from tokenpulse_shared.events import CandleEvent, Event, TickEvent

from tokenpulse_ingest.candles import CandleBuilder
from tokenpulse_ingest.prices import PriceReconciler, tie_breaks

REPLAY_ROWS = 500  # ticks per builder call, as the consumer's batches: lateness decides as it did live
MERGE_CHUNK = 20_000  # ticks handed on at a time by the merge of the two topics
COPY_WINDOW_MS = 60_000  # how far before the newest candle a row may still lack its v1 copy (a kill between)

Columns = list[list[Any]]


def select_rows(columns: Columns, keys: list[str], rows: list[int]) -> tuple[Columns, list[str]]:
    """The given rows of the columns and of their dedup keys."""
    return [[column[i] for i in rows] for column in columns], [keys[i] for i in rows]


def rows_of(
    batches: Sequence[TickBatch], keep: Callable[[str], bool] | None = None
) -> tuple[Columns, list[str], list[int]]:
    """The rows of ``batches`` as one set of columns with their dedup keys, only the rows of the symbols ``keep``
    accepts when given; and each kept row's index among the batches' rows."""
    if len(batches) == 1:
        columns, keys = batches[0].columns(), batches[0].dedup_keys()
    else:
        columns, keys = TickBatch.concat(batches), [key for b in batches for key in b.dedup_keys()]
    rows = list(range(len(keys)))
    if keep is not None and not all(keep(symbol) for symbol in set(columns[0])):
        rows = [i for i, symbol in enumerate(columns[0]) if keep(symbol)]
        columns, keys = select_rows(columns, keys, rows)
    return columns, keys, rows


def replay(
    builder: CandleBuilder,
    reconciler: PriceReconciler,
    messages: Iterable[TickEvent | TickBatch],
    keep: Callable[[str], bool],
    wall: float,
) -> int:
    """Count ``messages`` (in order) into ``builder`` and ``reconciler``, the trades of the symbols ``keep``
    accepts; returns how many trades."""
    counted = 0
    events: list[TickEvent] = []
    for message in messages:
        if isinstance(message, TickEvent):
            if keep(message.symbol):
                events.append(message)
            continue
        counted += _replay_events(builder, reconciler, events, wall)
        events = []
        columns, keys, _ = rows_of([message], keep)
        for at in range(0, len(keys), REPLAY_ROWS):
            part = slice(at, at + REPLAY_ROWS)
            symbol, source, ts_us, price, size, _side, trade_id, quote = (column[part] for column in columns)
            builder.add_rows(symbol, source, ts_us, price, size, keys[part], wall)
            reconciler.update_rows(symbol, source, ts_us, price, size, quote, tie_breaks(trade_id, keys[part]), wall)
        counted += len(keys)
    return counted + _replay_events(builder, reconciler, events, wall)


def _replay_events(builder: CandleBuilder, reconciler: PriceReconciler, events: list[TickEvent], wall: float) -> int:
    builder.replay(events, wall, REPLAY_ROWS)
    return reconciler.replay(events, wall, REPLAY_ROWS)


async def by_time(streams: Sequence[AsyncIterator[list[Event]]]) -> AsyncIterator[list[Event]]:
    """The messages of ``streams`` (chunks of one log each) merged by the time each was made, each stream's
    own order kept, in chunks of about :data:`MERGE_CHUNK`."""
    buffers: list[deque[Event]] = [deque() for _ in streams]
    open_ = [True] * len(streams)
    out: list[Event] = []
    size = 0
    while True:
        for i, stream in enumerate(streams):
            while open_[i] and not buffers[i]:
                try:
                    buffers[i].extend(await anext(stream))
                except StopAsyncIteration:
                    open_[i] = False
        live = sorted((b for b in buffers if b), key=lambda b: b[0].produced_at)
        if not live:
            break
        first, bound = live[0], min((b[0].produced_at for b in live[1:]), default=None)
        while first and (bound is None or first[0].produced_at <= bound):
            message = first.popleft()
            out.append(message)
            size += len(message) if isinstance(message, TickBatch) else 1
        if size >= MERGE_CHUNK:
            yield out
            out, size = [], 0
    if out:
        yield out


class PublishedCandles:
    """The candles read from both candle topics, kept only while the rebuilt builder wants them (latest
    version per candle); and, per token, its last minute of ``candles.v2`` rows and v1 copies, to find the
    rows whose copy is missing (a kill between the two)."""

    def __init__(self, builder: CandleBuilder) -> None:
        self.builder = builder
        self.latest: dict[tuple[str, str, int], CandleEvent] = {}
        self._newest: dict[str, int] = {}  # per token, the time its newest candle was made
        self._rows: dict[str, list[CandleEvent]] = {}  # per token, its recent rows of this builder's source
        self._copies: dict[str, dict[str, int]] = {}  # per token, its recent v1 copies' event ids

    def add_messages(self, messages: Iterable[Event], copies: bool) -> None:
        for m in messages:
            if isinstance(m, CandleBatch):
                for c in m.to_events():
                    self.add(c, copies)
            elif isinstance(m, CandleEvent):
                self.add(m, copies)

    def add(self, c: CandleEvent, copy: bool) -> None:
        if self.builder.wants_published(c):
            key = (c.symbol, c.interval.value, int(c.ts.timestamp() * 1000))
            kept = self.latest.get(key)
            if kept is None or c.version >= kept.version:
                self.latest[key] = c
        made = int(c.produced_at.timestamp() * 1000)
        newest = self._newest[c.symbol] = max(self._newest.get(c.symbol, made), made)
        if made < newest - COPY_WINDOW_MS:
            return
        if copy:
            copies = self._copies.setdefault(c.symbol, {})
            copies[c.event_id] = made
            if len(copies) > 64:
                self._copies[c.symbol] = {k: t for k, t in copies.items() if t >= newest - COPY_WINDOW_MS}
        elif c.source == self.builder.source:
            rows = self._rows.setdefault(c.symbol, [])
            rows.append(c)
            if len(rows) > 64:
                self._rows[c.symbol] = [r for r in rows if _made_ms(r) >= newest - COPY_WINDOW_MS]

    def without_copy(self) -> list[CandleEvent]:
        """The recent rows whose v1 copy is not on the candles topic."""
        return [
            c
            for symbol, rows in self._rows.items()
            for c in rows
            if _made_ms(c) >= self._newest[symbol] - COPY_WINDOW_MS and c.event_id not in self._copies.get(symbol, {})
        ]


def _made_ms(c: Event) -> int:
    return int(c.produced_at.timestamp() * 1000)
