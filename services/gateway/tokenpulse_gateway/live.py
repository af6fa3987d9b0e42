"""The latest state in memory, from the bus, and the live event stream behind ``/v1/stream``.

Every gateway replica follows prices, signals and fired alerts live (a *tail* subscription:
from its start on, nothing committed) and reads grades and predictions whole (*broadcast*),
keeps the latest value per token, and answers ``/v1/tokens`` from memory. The token list is the
universe (``tokenpulse.universe.v1``, read whole): its names, every member even before its first
price, and no token removed from it. ClickHouse is read only
on a cold start (nothing in memory yet) and, in the background about once a minute, for
what the bus does not carry: the price 24 h ago, 24 h volume and slow analytics (ROI
references, levels) of the token page.

:class:`StreamHub` fans events out to ``/v1/stream`` clients and keeps a bounded ring
buffer of recent events with increasing ids for ``Last-Event-ID`` resumption. Ids are
milliseconds-since-epoch based (``max(last + 1, now_ms)``), so they keep increasing
across restarts and are close between replicas.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext
from tokenpulse_shared.batches import CandleBatch, IndicatorBatch, PriceBatch
from tokenpulse_shared.bus import Delivery
from tokenpulse_shared.events import (
    AlertFiredEvent,
    CandleEvent,
    GradeEvent,
    IndicatorEvent,
    Interval,
    MarketCapEvent,
    PredictionEvent,
    PriceEvent,
    SignalEvent,
)
from tokenpulse_shared.service import Context
from tokenpulse_shared.timeutil import MINUTE_MS
from tokenpulse_shared.tokens import token_name
from tokenpulse_shared.topics import (
    ALERTS,
    CANDLES,
    CANDLES_V2,
    GRADES,
    INDICATORS,
    INDICATORS_V2,
    MARKETCAPS,
    PREDICTIONS,
    PRICES,
    PRICES_V2,
    SIGNALS,
)
from tokenpulse_shared.universe import Token, UniverseFollower

from tokenpulse_gateway.caches import PageCache
from tokenpulse_gateway.limits import KeySlots
from tokenpulse_gateway.queries.common import iso
from tokenpulse_gateway.queries.market import WINDOWS, MarketQueries, tolerance

log = logging.getLogger(__name__)

STREAM_TYPES = ("price", "signal", "alert")
LIST_REFRESH_S = 0.5
"""a large universe's token list is rebuilt at most this often, in the background (prices change it many
times a second; the stream carries each price at once): ``token_board.py``"""
LARGE_LIST = 200
"""from this many tokens on, the list is rebuilt at most every LIST_REFRESH_S"""
FRESH_MS = 5 * MINUTE_MS
"""events older than this (a broadcast subscription replays the topic) update the state but are not streamed"""


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class StreamEvent:
    id: int
    type: str
    symbol: str
    owner: str | None
    interval: str | None
    data: str
    origin: SpanContext | None = field(default=None, compare=False, repr=False)
    """the span that handled the bus event (signals and alerts): a stream send continues its trace"""


class StreamHub:
    def __init__(self, capacity: int = 2000, queue_size: int = 1000, heartbeat_s: float = 15.0) -> None:
        self.buffer: deque[StreamEvent] = deque(maxlen=capacity)
        self.last_id = 0
        self.evicted_id = 0
        """id of the newest event that has left the buffer: a resume from before it has missed events"""
        self.queue_size = queue_size
        self.heartbeat_s = heartbeat_s
        """seconds between two ``: ping`` comments on an open stream"""
        self.subscribers: set[asyncio.Queue[StreamEvent | None]] = set()
        """streams of every symbol"""
        self.by_symbol: dict[str, set[asyncio.Queue[StreamEvent | None]]] = {}
        """streams of some symbols (``?symbols=``), by symbol: an event is handed only to the streams that want it"""
        self._symbols_of: dict[asyncio.Queue[StreamEvent | None], frozenset[str]] = {}
        self.open_streams = KeySlots()
        """open ``/v1/stream`` connections per key id (the tier caps them)"""

    def publish(
        self, type_: str, symbol: str, data: dict[str, Any], owner: str | None = None, interval: str | None = None
    ) -> StreamEvent:
        self.last_id = max(self.last_id + 1, _now_ms())
        # prices are too many to trace per client; signals and alerts keep the context of their bus span
        origin = trace.get_current_span().get_span_context() if type_ != "price" else None
        event = StreamEvent(
            self.last_id, type_, symbol, owner, interval, json.dumps(data, separators=(",", ":")), origin
        )
        if len(self.buffer) == self.buffer.maxlen:
            self.evicted_id = self.buffer[0].id
        self.buffer.append(event)
        for q in [*self.subscribers, *self.by_symbol.get(symbol, ())]:
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:  # a client that does not keep up: end its stream, it resumes by id
                self.unsubscribe(q)
                q.get_nowait()
                q.put_nowait(None)
        return event

    def subscribe(self, symbols: set[str] | None = None) -> asyncio.Queue[StreamEvent | None]:
        """A queue of the events of ``symbols`` (None: of every symbol)."""
        q: asyncio.Queue[StreamEvent | None] = asyncio.Queue(self.queue_size)
        if symbols is None:
            self.subscribers.add(q)
        else:
            self._symbols_of[q] = frozenset(symbols)
            for symbol in symbols:
                self.by_symbol.setdefault(symbol, set()).add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[StreamEvent | None]) -> None:
        self.subscribers.discard(q)
        for symbol in self._symbols_of.pop(q, ()):
            wanting = self.by_symbol.get(symbol)
            if wanting is not None:
                wanting.discard(q)
                if not wanting:
                    del self.by_symbol[symbol]

    def since(self, last_id: int) -> list[StreamEvent]:
        return [e for e in self.buffer if e.id > last_id]


def answer_row(symbol: str, row: dict[str, Any]) -> dict[str, Any]:
    """A token's row as ``/v1/tokens`` shows it (``_at_ms`` kept for the token page), from its live state."""
    ref, price = row["_ref_24h"], row["price"]
    return {
        "symbol": symbol,
        "name": row["name"],
        "price": price,
        "sources": row["sources"],
        "stale": row["stale"],
        "change_24h": round((price / ref - 1) * 100, 4) if ref and price is not None else None,
        "volume_24h": row["volume_24h"],
        "market_cap": row["market_cap"],
        "trader_grade": row["trader_grade"],
        "investor_grade": row["investor_grade"],
        "signal": row["signal"],
        "updated_at": iso(row["_at_ms"]),
        "_at_ms": row["_at_ms"],
    }


class LiveState:
    def __init__(
        self,
        ctx: Context,
        queries: MarketQueries,
        hub: StreamHub,
        sync_every_s: float = 60.0,
        pages: PageCache | None = None,
        symbols: Sequence[str] = (),
    ) -> None:
        self.configured = list(symbols)
        """the tracked tokens (TOKENPULSE_SYMBOLS): listed before the store has any of their rows"""
        self.queries = queries
        self.hub = hub
        self.sync_every_s = sync_every_s
        self.tokens: dict[str, dict[str, Any]] = {}
        self.predictions: dict[str, dict[str, dict[str, Any]]] = {}
        self.slow: dict[str, tuple[float, dict[str, Any]]] = {}
        self._computing: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.synced_at = 0.0
        self.version = 0
        """bumped whenever the token rows or predictions change: answers built from them are cached per version"""
        self._sync_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._rows: tuple[int, list[dict[str, Any]]] | None = None
        self.members_version = 0
        """bumped when the universe adds, renames or removes tokens: the token list shows that at once"""
        group = "gateway-live"
        self.universe = UniverseFollower().follow(ctx.bus, f"{group}-universe")
        self.universe.on_change(self.on_universe)
        ctx.bus.subscribe(MARKETCAPS, group, self.on_marketcaps, delivery=Delivery.TAIL)
        # every replica follows the busy streams from its start (the store covers what came before) ...
        ctx.bus.subscribe(PRICES, group, self.on_prices, delivery=Delivery.TAIL)
        ctx.bus.subscribe(PRICES_V2, group, self.on_price_rows, delivery=Delivery.TAIL)
        ctx.bus.subscribe(SIGNALS, group, self.on_signals, delivery=Delivery.TAIL)
        ctx.bus.subscribe(ALERTS, group, self.on_alerts, delivery=Delivery.TAIL)
        # ... and reads the small ones whole (predictions are kept only here)
        ctx.bus.subscribe(GRADES, group, self.on_grades, delivery=Delivery.BROADCAST)
        ctx.bus.subscribe(PREDICTIONS, group, self.on_predictions, delivery=Delivery.BROADCAST)
        self.pages = pages
        if pages is not None:  # a new candle (or indicator) makes the cached history pages of its series stale
            ctx.bus.subscribe(CANDLES, group, self.on_candles, delivery=Delivery.TAIL)
            ctx.bus.subscribe(INDICATORS, group, self.on_indicators, delivery=Delivery.TAIL)
            ctx.bus.subscribe(CANDLES_V2, group, self.on_series_rows("candles"), delivery=Delivery.TAIL)
            ctx.bus.subscribe(INDICATORS_V2, group, self.on_series_rows("indicators"), delivery=Delivery.TAIL)

    def _row(self, symbol: str) -> dict[str, Any]:
        row = self.tokens.get(symbol)
        if row is None:
            member = self.universe.tokens.get(symbol)
            row = {
                "symbol": symbol,
                "name": member.name if member is not None else token_name(symbol),
                "price": None,
                "sources": [],
                "stale": None,
                "_at_ms": None,
                "_ref_24h": None,
                "volume_24h": None,
                "market_cap": None,
                "_cap_ms": None,
                "trader_grade": None,
                "investor_grade": None,
                "_grade_ms": None,
                "signal": None,
                "_signal_ms": None,
            }
            self.tokens[symbol] = row
        return row

    # ------------------------------------------------------------------ from the bus
    async def on_universe(self, changed: list[Token], removed: list[str]) -> None:
        self.version += 1
        self.members_version += 1
        self._rows = None  # members and names show at once (members_version): price moves wait for the next refresh
        for token in changed:
            self._row(token.symbol)["name"] = token.name
        for symbol in removed:  # its history stays in the store; the list no longer shows it
            self.tokens.pop(symbol, None)

    async def on_marketcaps(self, events: list[MarketCapEvent]) -> None:
        self.version += 1
        for e in events:
            if e.symbol is None:
                continue
            ts = _ms(e.ts)
            row = self._row(e.symbol)
            if row["_cap_ms"] is None or ts >= row["_cap_ms"]:
                row["market_cap"], row["_cap_ms"] = e.market_cap, ts

    async def on_prices(self, events: list[PriceEvent]) -> None:
        self.version += 1
        fresh_after = _now_ms() - FRESH_MS
        for e in events:
            self._apply_price(e.symbol, _ms(e.ts), e.price, e.sources, e.stale, fresh_after)

    async def on_price_rows(self, batches: list[PriceBatch]) -> None:
        """Prices of v2 batches: only each token's newest row of the batches counts (the list and the
        stream show a token's latest price; the rows before it in the same batches are history)."""
        newest: dict[str, tuple[int, float, list[str], bool]] = {}
        for b in batches:
            rows = zip(b.symbol, b.ts_us, b.price, b.sources, b.stale, strict=True)
            for symbol, ts_us, price, sources, stale in rows:
                held = newest.get(symbol)
                if held is None or ts_us >= held[0]:
                    newest[symbol] = (ts_us, price, sources, stale)
        self.version += 1
        fresh_after = _now_ms() - FRESH_MS
        for symbol, (ts_us, price, sources, stale) in newest.items():
            self._apply_price(symbol, ts_us // 1000, price, sources, stale, fresh_after)

    def _apply_price(
        self, symbol: str, ts: int, price: float, sources: Sequence[str], stale: bool, fresh_after: int
    ) -> None:
        row = self._row(symbol)
        if row["_at_ms"] is None or ts >= row["_at_ms"]:
            row["price"], row["_at_ms"] = price, ts
            row["sources"], row["stale"] = list(sources), stale
        if ts >= fresh_after:
            self.hub.publish("price", symbol, {"symbol": symbol, "price": price, "ts": iso(ts)})

    async def on_grades(self, events: list[GradeEvent]) -> None:
        self.version += 1
        for e in events:
            ts = _ms(e.ts)
            row = self._row(e.symbol)
            if row["_grade_ms"] is None or ts >= row["_grade_ms"]:
                row.update(trader_grade=e.trader_grade, investor_grade=e.investor_grade, _grade_ms=ts)

    async def on_signals(self, events: list[SignalEvent]) -> None:
        self.version += 1
        fresh_after = _now_ms() - FRESH_MS
        for e in events:
            ts = _ms(e.ts)
            body = {"direction": e.direction.value, "strength": e.strength, "ts": iso(ts)}
            if e.interval is Interval.D1:  # a token's signal is its daily one (every tier sees it)
                row = self._row(e.symbol)
                if e.retracted:
                    if row["_signal_ms"] == ts:  # withdrawn: the store's latest standing one, at the next sync
                        row.update(signal=None, _signal_ms=None)
                elif row["_signal_ms"] is None or ts >= row["_signal_ms"]:
                    row.update(signal=body, _signal_ms=ts)
            if _ms(e.produced_at) >= fresh_after:
                data = {"symbol": e.symbol, "interval": e.interval.value, **body, "reasons": e.reasons}
                if e.retracted:
                    data["retracted"] = True
                self.hub.publish("signal", e.symbol, data, interval=e.interval.value)

    async def on_predictions(self, events: list[PredictionEvent]) -> None:
        self.version += 1
        for e in events:
            if e.kind != "live":
                continue  # walk-forward (backtest) forecasts are history, not the current forecast
            current = self.predictions.setdefault(e.symbol, {}).get(e.horizon)
            if current is None or _ms(e.made_at) >= current["_made_ms"]:
                self.predictions[e.symbol][e.horizon] = {
                    "horizon": e.horizon,
                    "made_at": iso(_ms(e.made_at)),
                    "target_ts": iso(_ms(e.target_ts)),
                    "point": e.point,
                    "lower": e.lower,
                    "upper": e.upper,
                    "interval": e.interval,
                    "lower_95": e.lower_95,
                    "upper_95": e.upper_95,
                    "model": e.model,
                    "kind": e.kind,
                    "backtest": e.backtest,
                    "_made_ms": _ms(e.made_at),
                }

    async def on_candles(self, events: list[CandleEvent]) -> None:
        if self.pages is not None:
            self.pages.invalidate("candles", {(e.symbol, e.interval.value) for e in events})

    def on_series_rows(self, table: str) -> Callable[[list[CandleBatch | IndicatorBatch]], Awaitable[None]]:
        """A handler of v2 candle or indicator batches dropping the cached pages of their series."""

        async def on_rows(batches: list[CandleBatch | IndicatorBatch]) -> None:
            if self.pages is not None:
                series = {(s, i.value) for b in batches for s, i in zip(b.symbol, b.interval, strict=True)}
                self.pages.invalidate(table, series)

        on_rows.__name__ = f"on_{table}_rows"
        return on_rows

    def on_stored(self, table: str, series: Set[tuple[str, str]]) -> None:
        """This process's store writer has stored rows of ``series`` ((symbol, interval) pairs): drop their
        pages again (a page read after the bus brought them and before the insert holds the rows from
        before). A replica whose writer does not write a partition relies on the drop on arrival and the TTL."""
        if self.pages is not None and table in ("candles", "indicators"):
            self.pages.invalidate(table, set(series))

    async def on_indicators(self, events: list[IndicatorEvent]) -> None:
        if self.pages is not None:
            self.pages.invalidate("indicators", {(e.symbol, e.interval.value) for e in events})

    async def on_alerts(self, events: list[AlertFiredEvent]) -> None:
        fresh_after = _now_ms() - FRESH_MS
        for e in events:
            if _ms(e.produced_at) < fresh_after:
                continue
            data = {
                "rule_id": e.rule_id,
                "symbol": e.symbol,
                "ts": iso(_ms(e.ts)),
                "price": e.price,
                "message": e.message,
            }
            self.hub.publish("alert", e.symbol, data, owner=e.owner)

    # ------------------------------------------------------------------ from the store
    async def ensure(self) -> None:
        """Cold start: wait for one load from the store; afterwards refresh in the background."""
        if self.synced_at == 0.0:
            async with self._lock:
                if self.synced_at == 0.0:
                    await self._sync()
        elif time.monotonic() - self.synced_at > self.sync_every_s and (
            self._sync_task is None or self._sync_task.done()
        ):
            self._sync_task = asyncio.create_task(self._sync_quietly())

    async def _sync_quietly(self) -> None:
        try:
            async with self._lock:
                await self._sync()
        except Exception:
            log.warning("refreshing the token state from the store failed; serving what is in memory", exc_info=True)

    async def _sync(self) -> None:
        q = self.queries
        members = set(self.universe.tokens) if self.universe.loaded else set(self.configured)
        symbols = sorted((members | await q.known_symbols() | set(self.tokens)) - self.universe.removed)
        prices = await q.latest_prices(symbols)
        caps = await q.latest_market_caps(symbols)
        grades = await q.latest_grades(symbols)
        signals = await q.latest_signals(symbols)
        for sym in symbols:
            row = self._row(sym)
            price, at_ms = prices.get(sym, (None, None))
            if price is not None and at_ms is not None and (row["_at_ms"] is None or at_ms > row["_at_ms"]):
                row["price"], row["_at_ms"] = price, at_ms
            if sym in caps and (row["_cap_ms"] is None or caps[sym][1] > row["_cap_ms"]):
                row["market_cap"], row["_cap_ms"] = caps[sym]
            if row["_grade_ms"] is None and sym in grades:
                row.update(grades[sym])
            if row["_signal_ms"] is None and signals.get(sym):
                row["signal"] = signals[sym]
        # the 24 h references of every token in a few queries: one query per token took minutes at 1,000 tokens
        at = {sym: self.tokens[sym]["_at_ms"] for sym in symbols if self.tokens[sym]["_at_ms"] is not None}
        refs = await q.prices_at({s: t - WINDOWS["24h"] for s, t in at.items()}, tolerance(WINDOWS["24h"]))
        volumes = await q.volumes_24h_usd(at)
        for sym in at:
            self.tokens[sym]["_ref_24h"] = refs.get(sym)
            self.tokens[sym]["volume_24h"] = volumes.get(sym)
        self.version += 1
        self.synced_at = time.monotonic()

    async def slow_parts(self, symbol: str, compute: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """Per-token analytics that change slowly (levels, ROI references), cached for ``sync_every_s``."""
        cached = self.slow.get(symbol)
        if cached and time.monotonic() - cached[0] < self.sync_every_s:
            return cached[1]
        # one computation per token at a time: when the entry expires under load, every waiting request
        # would otherwise run the same store queries at once (seconds of stall measured at 32 concurrent)
        running = self._computing.get(symbol)
        if running is None:
            running = self._computing[symbol] = asyncio.ensure_future(self._compute_slow(symbol, compute))
        return await asyncio.shield(running)

    async def _compute_slow(self, symbol: str, compute: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        try:
            value = await compute()
            self.slow[symbol] = (time.monotonic(), value)
            return value
        finally:
            self._computing.pop(symbol, None)

    # ------------------------------------------------------------------ answers
    def rows(self) -> list[dict[str, Any]]:
        """The answer rows of every token, made once per version of the state (callers must not change them)."""
        if self._rows is not None and self._rows[0] == self.version:
            return self._rows[1]
        removed = self.universe.removed
        out = [answer_row(sym, self.tokens[sym]) for sym in sorted(self.tokens) if sym not in removed]
        self._rows = (self.version, out)
        return out

    def row_of(self, symbol: str) -> dict[str, Any] | None:
        """One token's answer row, made now (a token page needs one row, not the whole list)."""
        row = self.tokens.get(symbol)
        return None if row is None or symbol in self.universe.removed else answer_row(symbol, row)

    def predictions_of(self, symbol: str) -> list[dict[str, Any]]:
        by_h = self.predictions.get(symbol, {})
        order = {"1d": 0, "7d": 1, "30d": 2}
        ranked = sorted(by_h.items(), key=lambda kv: order.get(kv[0], 99))
        return [{k: v for k, v in p.items() if not k.startswith("_")} for _, p in ranked]
