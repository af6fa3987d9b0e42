"""What every venue's live connector shares: the connection loop, health, dedupe, gaps and bad-message accounting.

A connector owns one WebSocket connection to one exchange for a list of
:class:`Pair` s. :meth:`Connector.run` connects, subscribes, reads, and on any
failure (refused, reset, closed, or *stalled*: nothing at all received for
``stall_s`` seconds, heartbeats included) reconnects with jittered exponential
backoff and subscribes again. Protocol pings are the ``websockets`` library's; a venue
that wants an application-level ping as well (OKX, Bybit) names it in ``keepalive``.

Each received frame goes through the exchange's :meth:`Connector.parse`, which adds its trades to
:attr:`Connector.rows` as rows of a :class:`TickBatch` (``tokenpulse.ticks.v2``: symbol, source,
``ts_us`` as an integer, price, size, side, trade id, quote) through the pair's :class:`RowMaker`; no
per-trade event object is built, the sink gets the frame's rows as one ``TickBatch``. A frame that
cannot be understood raises :class:`BadMessage` (or anything else): none of its rows are kept, it is
counted in ``tokenpulse_feed_bad_messages_total{exchange, kind}``, logged once per kind, and skipped;
the connector goes on. Trades seen before (same pair and trade id, e.g. the overlap a reconnect
replays) are dropped, with bounded memory.

Frames and ticks are counted per connector and added to ``tokenpulse_feed_messages_total``,
``…_ticks_total`` and the connector-health series at most a second later (:meth:`Connector.flush_metrics`:
on a frame a second after the last flush, on disconnect, and from the ingest service's 1 s clock),
not per frame.

Gaps: a trade id that skips ahead (on the venues whose ids are consecutive per
pair; each venue module says whether it does), an exchange heartbeat announcing a trade we never received, and
every reconnect call the ``on_gap(exchange, symbol, since, until)`` hook, which
the REST backfiller plugs into. Gap hooks run as background tasks, so a slow
backfill never holds up the live stream. After a reconnect (its gap already
reported) the first trade newer than the last one received is the new baseline:
trades replayed from before the cut are not, else the jump from them to the next
new trade would report the same hole a second time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
from prometheus_client import Counter, Gauge
from tokenpulse_shared.batches import MAX_TS_US, TickBatch, from_epoch_us
from tokenpulse_shared.events import Side, TickEvent, trusted, utcnow
from tokenpulse_shared.telemetry import connector_delivered, set_connector_health

log = logging.getLogger("tokenpulse_ingest.venues")

TickSink = Callable[[TickBatch], Awaitable[None]]
GapHook = Callable[[str, str, datetime, datetime], Awaitable[None]]

METRICS_FLUSH_S = 1.0  # frames and ticks reach the metrics at most this late
MESSAGES = Counter("tokenpulse_feed_messages_total", "Frames received from an exchange", ["exchange"])
TICKS = Counter("tokenpulse_feed_ticks_total", "Trades normalised into ticks and published", ["exchange"])
BAD = Counter("tokenpulse_feed_bad_messages_total", "Unknown or garbled exchange frames, skipped", ["exchange", "kind"])
DUPLICATES = Counter("tokenpulse_feed_duplicate_ticks_total", "Trades received twice and dropped", ["exchange"])
RECONNECTS = Counter(
    "tokenpulse_feed_reconnects_total", "Reconnections to an exchange, by cause", ["exchange", "reason"]
)
GAPS = Counter("tokenpulse_feed_gaps_total", "Detected holes in an exchange's trade stream", ["exchange", "cause"])
CONNECTED = Gauge("tokenpulse_feed_connected", "1 while the exchange's stream is connected", ["exchange"])
LAST_AGE = Gauge(
    "tokenpulse_feed_last_message_age_seconds", "Seconds since the exchange last sent anything", ["exchange"]
)


class BadMessage(Exception):
    """A frame the connector does not understand; ``kind`` names it for the metric and the log."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


def shape_error(message: str) -> BadMessage:
    """A decoder's refusal as a bad message: ``missing_field`` when a required field is absent (a trade is
    never completed with a default), ``unexpected_shape`` for any other type or shape mismatch."""
    kind = "missing_field" if "missing required field" in message else "unexpected_shape"
    return BadMessage(kind, message)


def epoch_micros(value: object) -> int:
    """A trade time given in epoch seconds (number or decimal string) as epoch microseconds, rounded as
    ``datetime.fromtimestamp`` rounds them; zero, negative, non-finite or unreadable is a bad message, never a
    tick dated 1970."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadMessage("bad_time", repr(value)[:40]) from None
    if not 0 < seconds < _MAX_EPOCH_S:  # also false for NaN
        raise BadMessage("bad_time", repr(value)[:40])
    fraction, whole = math.modf(seconds)
    return int(whole) * 1_000_000 + round(fraction * 1e6)


@dataclass(frozen=True)
class Pair:
    """One token on one exchange: ``symbol`` is ours (BTC), ``venue`` the exchange's (BTCUSDT), ``quote`` USD/USDT."""

    symbol: str
    venue: str
    quote: str


async def log_gap(exchange: str, symbol: str, since: datetime, until: datetime) -> None:
    """The default gap hook: nothing to backfill with, so say what is missing."""
    log.info("feed gap: %s %s missed trades between %s and %s", exchange, symbol, since.isoformat(), until.isoformat())


class Dedupe:
    """Recently seen keys, the oldest forgotten first beyond ``size`` (bounded memory)."""

    def __init__(self, size: int = 50_000) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def seen(self, key: str) -> bool:
        """True if ``key`` was seen before; records it otherwise."""
        if key in self._seen:
            return True
        self._seen[key] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._seen)


@dataclass
class Health:
    exchange: str
    url: str
    connected: bool = False
    last_message: float | None = None  # monotonic
    connects: int = 0
    reconnects: int = 0
    stalls: int = 0
    gaps: int = 0
    bad_messages: int = 0
    duplicates: int = 0
    ticks: int = 0
    last_error: str | None = None
    errors_seen: set[str] = field(default_factory=set)

    def age(self) -> float | None:
        return None if self.last_message is None else max(0.0, time.monotonic() - self.last_message)

    def snapshot(self) -> dict[str, Any]:
        age = self.age()
        return {
            "connected": self.connected,
            "last_message_age_s": None if age is None else round(age, 3),
            "reconnects": self.reconnects,
            "stalls": self.stalls,
            "gaps": self.gaps,
            "bad_messages": self.bad_messages,
            "duplicates": self.duplicates,
            "ticks": self.ticks,
            "last_error": self.last_error,
        }


# every field set, one set shared by the fast-made ticks: a set (model_copy(update=...) copies it, then adds
# to the copy; a frozenset has no add), shared because the model is frozen: nothing adds to it in place
_FIELDS = set(TickEvent.model_fields)
_BATCH_FIELDS = set(TickBatch.model_fields)
_INF = float("inf")
_MAX_EPOCH_S = 253_402_300_800.0  # 10000-01-01: beyond it datetime cannot hold the time
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_MAX_TRADE_ID = 128  # the model's bound on ``trade_id``
_MIN_EVENT_ID, _MAX_EVENT_ID = 8, 128  # the model's bounds on ``event_id``
F = TypeVar("F")

Row = tuple[str, str, int, float, float, Side, str, str]
"""One trade as a row of a :class:`TickBatch`, its columns in ``TICK_COLUMNS`` order: symbol, source, ts_us,
price, size, side, trade_id, quote."""


def decode_frame(decode: Callable[[str | bytes], F], raw: str | bytes) -> F:
    """A frame through a venue's msgspec decoder; what it refuses becomes a BadMessage saying why."""
    try:
        return decode(raw)
    except msgspec.ValidationError as exc:
        raise shape_error(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadMessage("not_json", str(exc)) from None


def _check_trade(price: float, size: float, trade_id: str) -> None:
    """What a trade cannot be: a price or size not finite and > 0 (a size of zero means a field was lost, not a
    trade of nothing), a trade id empty or longer than the model allows."""
    if not 0 < price < _INF:  # also false for NaN
        raise BadMessage("bad_price", repr(price))
    if not 0 < size < _INF:
        raise BadMessage("bad_size", repr(size))
    if not 0 < len(trade_id) <= _MAX_TRADE_ID:
        raise BadMessage("bad_trade_id", trade_id[:40])


def make_tick(
    symbol: str,
    source: str,
    ts: datetime,
    price: float,
    size: float,
    side: Side,
    trade_id: str,
    quote: str,
    produced_at: datetime,
) -> TickEvent:
    """A TickEvent from already-checked parts, without pydantic's per-field validation (a v1 tick where one
    is wanted: the latency bench's producer, the cryptofeed comparison).

    Guaranteed here what the model would check, and stricter on size: price finite and > 0, size finite
    and > 0 (a trade of nothing is a parser's invention, never an exchange's), a
    timezone-aware UTC ``ts``, a bounded trade id. ``symbol`` and ``quote`` come from the caller,
    validated already. ``event_id`` is derived from the trade (source, symbol, trade id), so a trade
    published twice is the same event downstream.
    """
    _check_trade(price, size, trade_id)
    return trusted(
        TickEvent,
        {
            "event_id": f"{source}-{symbol}-{trade_id}",
            "schema_version": 1,
            "produced_at": produced_at,
            "symbol": symbol,
            "source": source,
            "ts": ts,
            "price": price,
            "size": size,
            "side": side,
            "trade_id": trade_id,
            "quote": quote,
        },
        _FIELDS,
    )


class RowMaker:
    """The trades of one pair on one exchange as rows of a :class:`TickBatch`, appended to ``rows``.

    Checked once here by pydantic (a ``ValueError`` for a bad symbol, source or quote): symbol, source,
    quote. Checked per trade in :meth:`add`, what the model checks and stricter (issue 22 item 6: a parser
    never invents a value): a time after 1970 and before 10000, price finite and > 0, size finite and > 0,
    a trade id of at least 1 and at most 128 characters whose event id (``source-symbol-trade_id``) has the
    model's 8 to 128. tests/unit/test_tick_rows.py proves it accepts exactly the trades ``TickEvent``
    accepts within those rules, with the same values.
    """

    __slots__ = ("_append", "_max_id", "_min_id", "quote", "source", "symbol")

    def __init__(self, source: str, pair: Pair, rows: list[Row]) -> None:
        TickEvent(symbol=pair.symbol, source=source, quote=pair.quote, ts=datetime.now(UTC), price=1.0)
        self.symbol, self.quote, self.source = pair.symbol, pair.quote, source
        self._append = rows.append
        # the row's v1 event id is ``source-symbol-trade_id``: the id's length keeps it within the model's 8..128
        prefix = len(source) + len(pair.symbol) + 2
        self._min_id, self._max_id = max(1, _MIN_EVENT_ID - prefix), min(_MAX_TRADE_ID, _MAX_EVENT_ID - prefix)

    def add(self, ts_us: int, price: float, size: float, side: Side, trade_id: str) -> None:
        """One trade as a row; a :class:`BadMessage` (and no row) for a part out of bounds."""
        if not 0 < ts_us <= MAX_TS_US:
            raise BadMessage("bad_time", str(ts_us))
        if not 0 < price < _INF:  # also false for NaN
            raise BadMessage("bad_price", repr(price))
        if not 0 < size < _INF:
            raise BadMessage("bad_size", repr(size))
        if not self._min_id <= len(trade_id) <= self._max_id:
            raise BadMessage("bad_trade_id", trade_id[:40])
        self._append((self.symbol, self.source, ts_us, price, size, side, trade_id, self.quote))


def tick_batch(rows: Sequence[Row]) -> TickBatch:
    """Rows made by :class:`RowMaker` s (valid by construction) as one ``TickBatch``, not validated again (what
    ``TickBatch.of_columns`` does, by hand: per frame, its generic loop cost more than the parse). The batch
    is named after its first trade (that trade's v1 event id): the bus re-batches rows by partition under ids
    of its own, so a random id per frame would be work for nothing."""
    if len(rows) == 1:  # one trade a frame, the common case: no transposition
        sym, src, ts, p, q, sd, tid, qt = rows[0]
        symbol, source, ts_us, price, size, side, trade_id, quote = [sym], [src], [ts], [p], [q], [sd], [tid], [qt]
    else:
        symbol, source, ts_us, price, size, side, trade_id, quote = map(list, zip(*rows, strict=True))
    fields = {"event_id": f"{source[0]}-{symbol[0]}-{trade_id[0]}", "schema_version": 1, "produced_at": utcnow()}
    fields |= {"symbol": symbol, "source": source, "ts_us": ts_us, "price": price, "size": size, "side": side}
    fields["trade_id"], fields["quote"] = trade_id, quote
    return trusted(TickBatch, fields, _BATCH_FIELDS)


def micros(ts: datetime) -> int:
    """Exact epoch microseconds of a decoded exchange time; a time without an offset is refused (never guessed)."""
    if ts.tzinfo is None:
        raise BadMessage("bad_time", f"{ts.isoformat()} has no UTC offset")
    return (ts - _EPOCH) // _ONE_US


def side_of(sides: dict[str, Side], raw: str, bad: str = "no_side") -> Side:
    """The taker side a venue's word names, or the venue's ``bad`` kind of :class:`BadMessage`."""
    side = sides.get(raw)
    if side is None:
        raise BadMessage(bad, raw[:16])
    return side


class Connector(ABC):
    """One exchange's WebSocket stream: connect, subscribe, read, normalise, reconnect."""

    name: str = "exchange"
    # (every seconds, text frame): an application-level ping for venues that close a connection without one
    keepalive: tuple[float, str] | None = None

    def __init__(
        self,
        url: str,
        pairs: list[Pair],
        sink: TickSink,
        *,
        on_gap: GapHook | None = None,
        stall_s: float = 30.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        ping_interval_s: float = 20.0,
        open_timeout_s: float = 10.0,
        dedupe_size: int = 50_000,
        rng: random.Random | None = None,
    ) -> None:
        if not pairs:
            raise ValueError(f"{self.name}: no pairs to subscribe to")
        self.url = url
        self.pairs = pairs
        self.by_venue = {p.venue: p for p in pairs}
        self.rows: list[Row] = []  # the trades of the frame being parsed, as TickBatch rows
        self.makers = {p.venue: RowMaker(self.name, p, self.rows) for p in pairs}  # venue → the pair's rows
        self.sink = sink
        self.on_gap: GapHook = on_gap or log_gap
        self.stall_s = stall_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.ping_interval_s = ping_interval_s
        self.open_timeout_s = open_timeout_s
        self.rng = rng or random.Random()
        self.health = Health(self.name, url)
        self.connected = asyncio.Event()
        self.dedupe = Dedupe(dedupe_size)
        self._last_id: dict[str, int] = {}
        self._last_ts: dict[str, int] = {}  # per symbol: the newest trade time seen, epoch µs
        self._resync: set[str] = set()
        self._pending_gaps: list[tuple[str, datetime, datetime]] = []
        self._gap_tasks: set[asyncio.Task[None]] = set()
        self._disconnected_at: datetime | None = None
        self._next_ping = 0.0
        self._quiet_retry = False
        self._now = lambda: datetime.now(UTC)
        self._messages = MESSAGES.labels(self.name)
        self._ticks = TICKS.labels(self.name)
        # frames and ticks counted here and added to the metrics at most every METRICS_FLUSH_S (a counter
        # update takes a lock: per frame it would cost more than parsing a heartbeat)
        self._unflushed_messages = 0
        self._unflushed_ticks = 0
        self._flushed_at = 0.0
        self._duplicates = DUPLICATES.labels(self.name)
        CONNECTED.labels(self.name).set(0)
        LAST_AGE.labels(self.name).set_function(lambda: self.health.age() or 0.0)

    # ------------------------------------------------------------------ per exchange
    def endpoint(self) -> str:
        """The URL to connect to (Binance puts its subscriptions in it)."""
        return self.url

    @abstractmethod
    def subscriptions(self) -> list[str]:
        """Frames to send after connecting."""

    @abstractmethod
    def parse(self, raw: str | bytes) -> None:
        """Normalise one frame: each trade a row added to :attr:`rows` (through :meth:`maker_for`), control
        frames nothing; ``BadMessage`` for what is not understood (the caller drops the frame's rows)."""

    def maker_for(self, venue_pair: str) -> RowMaker:
        """The row maker of a pair the frame names, or ``unknown_symbol`` for one not subscribed to."""
        maker = self.makers.get(venue_pair)
        if maker is None:
            raise BadMessage("unknown_symbol", venue_pair[:32])
        return maker

    # ------------------------------------------------------------------ shared bookkeeping
    def trade_seen(self, symbol: str, trade_id: int, ts_us: int, count: int = 1) -> None:
        """Track consecutive trade ids per pair; a jump ahead is a gap between the two trades' times (epoch µs).

        ``count`` > 1: the frame aggregates that many trades, ``trade_id`` being the last of them (OKX)."""
        last = self._last_id.get(symbol)
        if last is not None and trade_id - count == last and symbol not in self._resync:  # in step: the usual case
            self._last_id[symbol] = trade_id
            if ts_us > self._last_ts[symbol]:
                self._last_ts[symbol] = ts_us
            return
        last_ts = self._last_ts.get(symbol)
        if last is not None and symbol in self._resync and trade_id <= last and ts_us <= (last_ts or ts_us):
            return  # a reconnect's replay of trades we had: the first newer trade is the new baseline
        if last is None or symbol in self._resync:
            self._resync.discard(symbol)
            self._last_id[symbol] = trade_id
        elif trade_id - count + 1 > last + 1:
            self._gap(symbol, from_epoch_us(last_ts or ts_us), from_epoch_us(ts_us), "trade_id")
            self._last_id[symbol] = trade_id
        elif trade_id > last:
            self._last_id[symbol] = trade_id
        self.time_seen(symbol, ts_us)

    def time_seen(self, symbol: str, ts_us: int) -> None:
        """The newest trade time of a pair (epoch µs): where the gap of a reconnect or a hole starts."""
        prev = self._last_ts.get(symbol)
        if prev is None or ts_us > prev:
            self._last_ts[symbol] = ts_us

    def last_trade_at(self, symbol: str) -> datetime | None:
        """The time of the newest trade of a pair received, if any."""
        ts_us = self._last_ts.get(symbol)
        return None if ts_us is None else from_epoch_us(ts_us)

    def announced(self, symbol: str, last_trade_id: int, ts_us: int) -> None:
        """An exchange heartbeat names its latest trade id; one beyond ours means trades went missing."""
        last = self._last_id.get(symbol)
        if last is not None and symbol not in self._resync and last_trade_id > last:
            since = self._last_ts.get(symbol, ts_us)
            self._gap(symbol, from_epoch_us(since), from_epoch_us(ts_us), "heartbeat")
            self._last_id[symbol] = last_trade_id
            self._last_ts[symbol] = max(ts_us, since)

    def bad(self, kind: str, detail: str = "") -> None:
        self.health.bad_messages += 1
        BAD.labels(self.name, kind).inc()
        if kind not in self.health.errors_seen:  # once per kind: a flood of one bad frame is one log line
            self.health.errors_seen.add(kind)
            log.warning(
                "%s: skipping a frame it cannot use (%s) %s; counted in tokenpulse_feed_bad_messages_total "
                "(logged once per kind)",
                self.name,
                kind,
                detail[:200],
            )

    def _gap(self, symbol: str, since: datetime, until: datetime, cause: str) -> None:
        self.health.gaps += 1
        GAPS.labels(self.name, cause).inc()
        self._pending_gaps.append((symbol, since, until))

    def _flush_gaps(self) -> None:
        while self._pending_gaps:
            symbol, since, until = self._pending_gaps.pop(0)
            task = asyncio.create_task(self._call_gap(symbol, since, until), name=f"{self.name}-gap-{symbol}")
            self._gap_tasks.add(task)
            task.add_done_callback(self._gap_tasks.discard)

    async def _call_gap(self, symbol: str, since: datetime, until: datetime) -> None:
        try:
            await self.on_gap(self.name, symbol, since, until)
        except Exception:
            log.exception("%s: the gap hook failed for %s %s..%s", self.name, symbol, since, until)

    async def handle(self, raw: str | bytes) -> int:
        """One frame: parse into rows, drop duplicates, publish. Returns the number of trades published."""
        self.health.last_message = now = time.monotonic()
        self._unflushed_messages += 1
        if now - self._flushed_at >= METRICS_FLUSH_S:
            self.flush_metrics(now)
        try:
            self.parse(raw)
        except BadMessage as exc:
            self.rows.clear()  # a refused frame is refused whole: none of its trades go out
            self.bad(exc.kind, str(exc))
        except Exception as exc:  # a garbled frame must never take the connector down
            self.rows.clear()
            self.bad("garbled", f"{type(exc).__name__}: {exc}; frame {raw[:120]!r}")
        if self._pending_gaps:
            self._flush_gaps()
        if not self.rows:
            return 0
        fresh = self._fresh(self.rows)  # a new list: the rows are free for the next frame
        self.rows.clear()
        return await self._publish(fresh) if fresh else 0

    def take_rows(self) -> list[Row]:
        """The rows parsed so far, leaving :attr:`rows` empty for the next frame."""
        rows = self.rows[:]
        self.rows.clear()
        return rows

    async def deliver(self, rows: list[Row]) -> int:
        """Drop the trades seen before, publish the rest as one ``TickBatch``; returns how many were published."""
        fresh = self._fresh(rows)
        return await self._publish(fresh) if fresh else 0

    async def _publish(self, fresh: list[Row]) -> int:
        try:
            await self.sink(tick_batch(fresh))
        except Exception:
            # the bus refused them: report the trades' window as a gap (the backfill recovers it) and go on
            log.exception("%s: publishing %d ticks failed; reporting them as a gap", self.name, len(fresh))
            for symbol in {row[0] for row in fresh}:
                times = [row[2] for row in fresh if row[0] == symbol]
                self._gap(symbol, from_epoch_us(min(times)), from_epoch_us(max(times)), "publish_failed")
            self._flush_gaps()
            return 0
        self.health.ticks += len(fresh)
        self._unflushed_ticks += len(fresh)
        return len(fresh)

    def _fresh(self, rows: list[Row]) -> list[Row]:
        """The rows whose pair and trade id were not seen before (the others counted as duplicates)."""
        seen = self.dedupe.seen
        fresh = [row for row in rows if not seen(f"{row[0]}:{row[6]}")]
        if len(fresh) < len(rows):
            self.health.duplicates += len(rows) - len(fresh)
            self._duplicates.inc(len(rows) - len(fresh))
        return fresh

    def flush_metrics(self, now: float | None = None) -> None:
        """Add the frames and ticks counted since the last flush to the metrics (also on disconnect and close)."""
        self._flushed_at = time.monotonic() if now is None else now
        if self._unflushed_messages:
            self._messages.inc(self._unflushed_messages)
            self._unflushed_messages = 0
        if self._unflushed_ticks:
            self._ticks.inc(self._unflushed_ticks)
            connector_delivered(self.name, self._unflushed_ticks)  # the connector-health series every feed reports
            self._unflushed_ticks = 0

    # ------------------------------------------------------------------ the connection loop
    async def run(self) -> None:
        """Connect and read until cancelled, reconnecting after every failure."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        attempt = 0
        while True:
            reason = "error"
            try:
                async with connect(
                    self.endpoint(),
                    ping_interval=self.ping_interval_s,
                    ping_timeout=self.ping_interval_s,
                    open_timeout=self.open_timeout_s,
                    close_timeout=2,
                    max_size=2**23,
                    max_queue=4096,
                ) as ws:
                    for frame in self.subscriptions():
                        await ws.send(frame)
                    self._on_connected()
                    got_data = False
                    while True:
                        raw = await self._recv(ws)
                        if raw is None:
                            reason = "stall"
                            self.health.stalls += 1
                            log.warning("%s: nothing received for %.0fs: reconnecting", self.name, self.stall_s)
                            break
                        if await self.handle(raw) and not got_data:
                            got_data = True
                            attempt = 0  # healthy again: the next failure starts the backoff from the start
                    reason = reason if reason == "stall" else "closed"
            except asyncio.CancelledError:
                self._on_disconnected(None)
                raise
            except (OSError, WebSocketException, TimeoutError, ValueError) as exc:
                reason = "closed" if self.health.connected else "connect_failed"
                self._on_disconnected(f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # a bug must not end the feed: log it, reconnect
                reason = "error"
                log.exception("%s: unexpected failure in the connection loop", self.name)
                self._on_disconnected(f"{type(exc).__name__}: {exc}")
            else:
                self._on_disconnected(f"{reason}")
            RECONNECTS.labels(self.name, reason).inc()
            self.health.reconnects += 1
            delay = min(self.backoff_max_s, self.backoff_s * 2**attempt)
            delay = delay / 2 + self.rng.uniform(0, delay / 2)  # "equal jitter": never zero, never in lockstep
            attempt = min(attempt + 1, 30)
            log.log(
                logging.DEBUG if self._quiet_retry else logging.INFO,
                "%s: reconnecting in %.2fs (%s)",
                self.name,
                delay,
                reason,
            )
            await asyncio.sleep(delay)

    async def _recv(self, ws: Any) -> str | bytes | None:
        """The next frame, or None once nothing at all came for ``stall_s``; sends the venue's keepalive meanwhile."""
        if self.keepalive is None:
            try:
                async with asyncio.timeout(self.stall_s):
                    return await ws.recv()  # type: ignore[no-any-return]
            except TimeoutError:
                return None
        every, frame = min(self.keepalive[0], self.stall_s / 2), self.keepalive[1]  # answered well before a stall
        while True:
            now = time.monotonic()
            if now >= self._next_ping:
                await ws.send(frame)
                self._next_ping = now + every
            quiet = now - (self.health.last_message or now)
            if quiet >= self.stall_s:
                return None
            try:
                async with asyncio.timeout(min(self.stall_s - quiet, self._next_ping - now)):
                    return await ws.recv()  # type: ignore[no-any-return]
            except TimeoutError:
                continue

    def _on_connected(self) -> None:
        self.health.connected = True
        self.health.connects += 1
        self.health.last_message = time.monotonic()
        self._next_ping = self.health.last_message + (min(self.keepalive[0], self.stall_s / 2) if self.keepalive else 0)
        CONNECTED.labels(self.name).set(1)
        set_connector_health(self.name, True)
        self.connected.set()
        if self.health.connects == 1:
            log.info("%s: connected to %s, subscribed to %d pairs", self.name, self.url, len(self.pairs))
            return
        # a reconnect: everything between the last trade we have and now may be missing
        now = self._now()
        log.info("%s: reconnected and resubscribed (%d pairs)", self.name, len(self.pairs))
        for pair in self.pairs:
            since = self.last_trade_at(pair.symbol) or self._disconnected_at or now
            self._gap(pair.symbol, since, now, "reconnect")
            self._resync.add(pair.symbol)
        self._flush_gaps()

    def _on_disconnected(self, error: str | None) -> None:
        self.flush_metrics()
        was_connected = self.health.connected
        if was_connected:
            self._disconnected_at = self._now()
        self.health.connected = False
        CONNECTED.labels(self.name).set(0)
        set_connector_health(self.name, False)
        # an exchange that stays unreachable (offline, or `auto` probing from its synthetic fallback)
        # says so once at WARNING; the same refusal again is DEBUG until something changes
        self._quiet_retry = bool(error) and error == self.health.last_error and not was_connected
        if error:
            self.health.last_error = error
            log.log(
                logging.DEBUG if self._quiet_retry else logging.WARNING,
                "%s: connection lost or refused: %s",
                self.name,
                error,
            )

    async def close(self) -> None:
        self.flush_metrics()
        for task in list(self._gap_tasks):
            task.cancel()
