"""The ingest service: ticks in, candles and reference prices out; live or synthetic feed.

Consumes ``tokenpulse.ticks.v1`` (consumer group ``ingest``), builds candles
for every interval and the reference price, and publishes them on
``tokenpulse.candles.v1`` and ``tokenpulse.prices.v1``. Ticks too late to be
placed in a candle go to the dead-letter topic with the reason.

Ticks come from the live venue connectors (``venues/``) or the seeded
synthetic generator, per ``TOKENPULSE_LIVE_FEED``: ``auto`` starts the
connectors and falls back to synthetic ticks when none connects within
``TOKENPULSE_FEED_CONNECT_TIMEOUT_S`` (said in the log and in ``/readyz``:
``feed: synthetic-fallback``); the connectors keep retrying meanwhile (jittered
backoff), and the first live trade published switches back: the synthetic feed stops,
``/readyz`` says ``feed: live`` again and the log says so (``_back_to_live``). The open
synthetic candles are discarded, not mixed with live trades (``candles.py``), and the
reference price drops its synthetic source (``prices.py``). ``live`` keeps retrying
the exchanges, ``synthetic`` and ``off`` do what they say. Connector health is in
``ctx.status["feeds"]``.

Universe: at start ingest publishes the configured universe (``TOKENPULSE_UNIVERSE`` or
``TOKENPULSE_SYMBOLS``) on ``tokenpulse.universe.v1`` and re-reads the file every
``TOKENPULSE_UNIVERSE_REFRESH_S``; its feeds follow that topic (:class:`UniverseFollower`), so a token
added is subscribed and gets synthetic ticks without a restart, and a removed one is unsubscribed, its
synthetic walk stopped and its ticks no longer taken (its history stays in the store).

Replicas (docs/design/0003-ingest-scale-out.md): each ticks partition's tokens (candles, reference prices)
belong to the replica the ``ingest`` group assigns it (:meth:`IngestService.on_assign`), each universe
partition's feeds (venue subscriptions, synthetic walk) to the replica the ``ingest-feeds`` group assigns
it (:meth:`IngestService.on_feeds_assign`); embedded mode owns everything.

Gap seam: ``IngestService.gap_hook`` is awaited as ``(exchange, symbol, since,
until)`` for every hole a connector detects (a trade-id jump, a heartbeat
announcing a missed trade, a reconnect). It logs the gap and, with
``TOKENPULSE_REST_BACKFILL_GAPS`` (default on), backfills its candles over the exchange's REST
API in the background (:meth:`IngestService.backfill_on_gap`).

REST backfill: :meth:`IngestService.backfill_gap` (awaitable) and
:meth:`IngestService.on_gap` (fire and forget, for the connectors' reconnect hook) fetch the
candles of a gap from an exchange's REST API; ``TOKENPULSE_REST_BACKFILL_EXCHANGE`` also
backfills from the last stored candle at start. ``TOKENPULSE_MARKETCAP_POLL`` runs the
market-cap poller.

Restart: the candles ingest has open live only in its memory, so at start (:meth:`IngestService.restore`,
before a tick is handled; on Kafka for the partitions each assignment gives this replica) they are rebuilt from the
ticks the previous instance had counted: on Kafka the ticks topic read up to the offsets the ``ingest``
consumer group committed (a batch is committed only after its candles were published), from the start
of the UTC day of ``now - TOKENPULSE_INGEST_RESTORE_LOOKBACK_S``; the ticks after those offsets are then
redelivered to the consumer as usual. The candles topic over the same span says which buckets were
already published and at which version, so none is published twice and the next version is higher.
This covers a kill -9 as well as a SIGTERM. Embedded mode has no log: the ticks and candles the store
holds stand in for it.

Checkpoints (Kafka): every ``TOKENPULSE_INGEST_CHECKPOINT_INTERVAL_S``, right after a batch was handled
whole and committed (:meth:`IngestService.on_committed`), each partition's state and the ticks offsets it
is exactly the result of go to ``tokenpulse.ingest-checkpoints.v1`` (``checkpoint.py``); a restore starts
a partition from its newest usable checkpoint and replays only the ticks after it, reading the candles
topic from just before it; the others are replayed from the day's start as above.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from tokenpulse_shared.batches import CandleBatch, PriceBatch, TickBatch, epoch_us
from tokenpulse_shared.bus.base import Assignment, LogRange, Positions, Rejected, TransientError, dead_letter_for
from tokenpulse_shared.checkpoints import IngestCheckpoint, checkpoint_key
from tokenpulse_shared.events import CandleEvent, Interval, PriceEvent, Side, TickEvent
from tokenpulse_shared.service import ASGIApp, Context, StoreAccess
from tokenpulse_shared.telemetry import DEAD_LETTERS, connector_delivered, set_connector_health
from tokenpulse_shared.timeutil import MINUTE_MS
from tokenpulse_shared.topics import (
    CANDLES,
    CANDLES_V2,
    DEAD_LETTER,
    INGEST_CHECKPOINTS,
    PRICES,
    PRICES_V2,
    TICKS,
    TICKS_V2,
    UNIVERSE,
)
from tokenpulse_shared.universe import Token, UniverseError, UniverseFollower, UniversePublisher, configured

from tokenpulse_ingest import checkpoint
from tokenpulse_ingest.bundle import iter_bundle
from tokenpulse_ingest.candles import CandleBuilder, RestoreResult
from tokenpulse_ingest.discovery import Discovery
from tokenpulse_ingest.marketcaps import MarketCapPoller, last_stored_caps
from tokenpulse_ingest.prices import PriceReconciler, tie_breaks
from tokenpulse_ingest.replay import Columns, PublishedCandles, by_time, replay, rows_of, select_rows
from tokenpulse_ingest.rest_backfill import GapResult, RestBackfiller
from tokenpulse_ingest.slices import token_slices
from tokenpulse_ingest.synthetic import SyntheticFeed, TokenState, daily_volatility, generated_state
from tokenpulse_ingest.venues.connector import Connector, GapHook, log_gap, tick_batch
from tokenpulse_ingest.venues.registry import build_connectors, pairs_for

log = logging.getLogger(__name__)

FEEDS_GROUP = "ingest-feeds"  # the consumer group sharing the universe's partitions (the feeds) among replicas
SYNTHETIC_PART = 250  # synthetic trades published at once, the rest of the period's after (spread over it)
LIVE_POLL_S = 0.05  # how often the start of the live feed looks for a connected exchange
READY_WAIT_S = 1.0  # how long a batch waits for its partitions' rebuilt state before it is given back
UNIVERSE_WAIT_S = 10.0  # how long start waits for its own universe to come back from the topic
RESTORE_SKEW_MS = 5 * MINUTE_MS  # ticks are read from this long before the first bucket: exchange clocks ahead of ours
CHECKPOINT_SKEW_MS = MINUTE_MS  # candles are read from this long before a checkpoint: clock steps of its writer


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _late_events(batches: list[TickBatch], late: list[int]) -> list[TickEvent]:
    """The trades at the given indexes of the batches' rows one after the other, as events (dead letters)."""
    out: list[TickEvent] = []
    offset = 0
    for batch in batches:
        mine = [i - offset for i in late if offset <= i < offset + len(batch)]
        if mine:
            events = batch.to_events()
            out += [events[i] for i in mine]
        offset += len(batch)
    return out


def _everything(symbol: str) -> bool:
    return True


class IngestService:
    name = "ingest"
    store_access = StoreAccess.NONE  # restores from the ticks topic (embedded: from the store it is given)

    def __init__(self) -> None:
        self.builder = CandleBuilder()
        self.reconciler = PriceReconciler()
        self.ctx: Context | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.feed: SyntheticFeed | None = None
        self.rest: RestBackfiller | None = None
        self.marketcaps: MarketCapPoller | None = None
        self._gap_tasks: set[asyncio.Task[GapResult | None]] = set()
        self.connectors: list[Connector] = []
        self._connector_tasks: list[asyncio.Task[None]] = []
        self._synthetic_task: asyncio.Task[None] | None = None
        self._fallback_since: datetime | None = None  # ``auto`` on its synthetic fallback, probing the exchanges
        self.gap_hook: GapHook = self.backfill_on_gap
        self.ready = asyncio.Event()  # set once the open candles are restored: ticks wait for it
        self.restored: RestoreResult | None = None
        self.assignment: Assignment | None = None  # the ticks partitions this replica owns the symbols of
        self._state_lock = asyncio.Lock()  # a rebalance never drops state the clock is closing and publishing
        self._restoring: asyncio.Task[None] | None = None
        self._built: set[int] = set()  # partitions whose state is whole here
        self._parked: dict[tuple[str, int], int | None] = {}  # at a revoke: where each (topic, partition) stood
        self.ticks_topics = (TICKS, TICKS_V2)  # one group, co-partitioned: their assignments make one round
        self._round: dict[str, Assignment] = {}  # this rebalance's assignments so far, by topic
        self._resumed = True  # False after a rebalance until the first batch is handled
        self.universe = UniverseFollower()
        self.publisher: UniversePublisher | None = None
        self._universe_stamp: tuple[float, int] | None = None  # the file's (mtime, size) when last published
        self.discovery = Discovery()  # what the listing endpoints and the top-N figures said when last asked
        self.feed_share: Assignment | None = None  # the universe partitions whose tokens' feeds run here
        self._live = False  # the venues' connectors follow this replica's share (LIVE_FEED auto or live)
        self._feeds_lock = asyncio.Lock()  # one change of the feeds at a time (an assignment, the universe)
        self._follows: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._epoch = 0  # counts rebalances: a checkpoint taken across one would mix two ownerships
        self._checkpoint_due = 0.0  # monotonic time of the next checkpoint
        self._checkpoint_parts: dict[int, int] = {}  # per partition, the parts of the last checkpoint written

    def http_app(self) -> ASGIApp | None:
        return None

    def register(self, ctx: Context) -> None:
        self.ctx = ctx
        s = ctx.settings.ingest
        self.builder = CandleBuilder(idle_close_s=s.candle_idle_close_s)
        self.reconciler = PriceReconciler(
            s.price_stale_after_s,
            half_life_s=s.price_half_life_s,
            outlier_k=s.price_outlier_k,
            outlier_floor=s.price_outlier_floor,
            usdt_usd_rate=s.usdt_usd_rate,
        )
        # one group over both forms of the trades, a token's v1 and v2 partitions on the same member; its
        # assignment says which tokens' candles and prices this replica holds (on_assign, on_revoke)
        subscribe = partial(
            ctx.bus.subscribe,
            co_partitioned=True,
            finish_batch_on_rebalance=True,
            on_assign=self.on_assign,
            on_revoke=self.on_revoke,
            on_committed=self.on_committed,
        )
        subscribe(TICKS, self.name, self.on_ticks, on_misplaced=self.on_misplaced)
        subscribe(TICKS_V2, self.name, self.on_tick_batches)
        self.universe.follow(ctx.bus, f"{self.name}-universe")
        self.universe.on_change(self._universe_changed)
        # the feeds' share: the same topic as a consumer group, its partitions (tokens) split among the replicas
        ctx.bus.subscribe(UNIVERSE, FEEDS_GROUP, self._feed_share_events, on_assign=self.on_feeds_assign)

    async def on_ticks(self, ticks: list[TickEvent]) -> None:
        """Trades of ``tokenpulse.ticks.v1`` (outside producers), one event each."""
        await self._until_ready()
        removed = self.universe.removed
        if removed:  # a token taken out of the universe stops here, whoever still sends its trades
            ticks = [t for t in ticks if t.symbol not in removed]
        result = self.builder.add(ticks)
        late = set(result.late_rows)
        prices = self.reconciler.update([t for i, t in enumerate(ticks) if i not in late])
        await self._emit(result.candles, prices, result.late)

    async def on_tick_batches(self, batches: list[TickBatch]) -> None:
        """Trades of ``tokenpulse.ticks.v2`` (our feeds), the rows of every batch handled as one, in slices of
        whole tokens with the event loop free between them (:mod:`tokenpulse_ingest.slices`)."""
        await self._until_ready()
        removed = self.universe.removed  # a token taken out of the universe stops here, whoever sends its trades
        columns, keys, rows = rows_of(batches, (lambda symbol: symbol not in removed) if removed else None)
        wall = time.time()  # the batch's arrival, the same for every slice
        for n, part in enumerate(token_slices(columns[0])):
            if n:
                await asyncio.sleep(0)
            whole = len(part) == len(keys)
            columns_of, keys_of = (columns, keys) if whole else select_rows(columns, keys, part)
            await self._handle_rows(batches, columns_of, keys_of, rows if whole else [rows[i] for i in part], wall)

    async def _handle_rows(
        self, batches: list[TickBatch], columns: Columns, keys: list[str], rows: list[int], wall: float
    ) -> None:
        """Rows of ``batches`` (``rows``: their indexes among the batches' rows) into candles and prices."""
        symbol, source, ts_us, price, size, _side, trade_id, quote = columns
        result = self.builder.add_rows(symbol, source, ts_us, price, size, keys, wall)
        late = set(result.late_rows)
        if late:  # rare: keep the others only
            kept = [i for i in range(len(keys)) if i not in late]
            columns, keys = select_rows(columns, keys, kept)
            symbol, source, ts_us, price, size, _side, trade_id, quote = columns
        ids = tie_breaks(trade_id, keys)
        prices = self.reconciler.update_rows(symbol, source, ts_us, price, size, quote, ids, wall)
        await self._emit(result.candles, prices, _late_events(batches, sorted(rows[i] for i in late)))

    async def on_misplaced(self, ticks: list[TickEvent]) -> None:
        """``ticks.v1`` events not in their token's partition (an outside producer's other partitioner): moved
        to ``ticks.v2`` as rows, which reach the member holding the token; their identity stays."""
        assert self.ctx is not None
        log.info("ingest: %d ticks.v1 events outside their token's partition moved to ticks.v2", len(ticks))
        await self.ctx.bus.publish_rows(TICKS_V2, TickBatch.from_events(ticks), linger=False)

    async def _emit(self, candles: list[CandleEvent], prices: list[PriceEvent], late: list[TickEvent]) -> None:
        """Publish what a handled batch made: candles and prices as rows (one message per partition, no wait),
        their v1 events too while TOKENPULSE_PUBLISH_V1; late ticks to the dead-letter topic."""
        assert self.ctx is not None
        bus, v1 = self.ctx.bus, self.ctx.settings.bus.publish_v1
        if candles:
            await bus.publish_rows(CANDLES_V2, CandleBatch.from_events(candles), linger=False)
            if v1:
                await bus.publish_v1_copy(CANDLES, candles)
        if prices:
            await bus.publish_rows(PRICES_V2, PriceBatch.from_events(prices), linger=False)
            if v1:
                await bus.publish_v1_copy(PRICES, prices)
        if late:
            DEAD_LETTERS.labels(self.name, TICKS.name).inc(len(late))
            reason = "late tick: its candles are already final"
            await bus.publish(DEAD_LETTER, [dead_letter_for(TICKS, self.name, reason, event=t) for t in late])

    async def _until_ready(self) -> None:
        """Hold a batch until this replica's partitions are rebuilt; the first batch after a rebalance restarts
        the idle timers (the pause said nothing about the tokens' trading)."""
        if not self.ready.is_set():
            await self._wait_ready()
        if not self._resumed:
            self.builder.touch_all()
            self._resumed = True

    async def _wait_ready(self) -> None:
        """Wait for the partitions' state; on Kafka only briefly, then give the batch back (redelivered): a
        batch held here would hold up the next rebalance, which waits for the batch in hand."""
        assert self.ctx is not None
        try:
            await asyncio.wait_for(self.ready.wait(), None if self.ctx.embedded else READY_WAIT_S)
        except TimeoutError:
            raise TransientError("the state of this replica's ticks partitions is still being rebuilt") from None

    # --- ownership: the symbols of the ticks partitions the consumer group assigns to this replica ----------

    async def on_revoke(self, lost: Assignment) -> None:
        """A rebalance begins (the batch in hand is finished and committed): hold the ticks and the clock until
        :meth:`on_assign`, and remember where each partition lost stood (the group may give it back)."""
        self.ready.clear()
        self._epoch += 1
        async with self._state_lock:  # a clock emission under way (rows, then their v1 copies) ends first
            pass
        await self._cancel_restore()
        self._parked.update({(lost.topic.name, p): lost.offsets.get(p) for p in lost.partitions})
        self._round = {}

    def _unmoved(self, round_: dict[str, Assignment], parked: dict[tuple[str, int], int | None]) -> set[int]:
        """The partitions given back at the offsets this replica left them at, in every ticks topic (no one
        handled them in between), whose state was whole here."""
        partitions = set.intersection(*(set(a.partitions) for a in round_.values())) & self._built
        return {
            p
            for p in partitions
            if all(parked.get((t, p)) is not None and a.offsets.get(p) == parked[(t, p)] for t, a in round_.items())
        }

    async def on_assign(self, got: Assignment) -> None:
        """The rebalance's new assignment. State is kept for a partition given back at the offset this replica
        left it at (no one handled it in between); every other symbol's state goes, and the partitions gained
        are rebuilt from the ticks topic (as a restart does) before their ticks are handled. Embedded: the one
        call at start, before start() restores everything. The ticks topics of the group (co-partitioned: the
        same partition numbers) each report theirs; the replica acts once all of them have."""
        assert self.ctx is not None
        self._round[got.topic.name] = got
        if set(self._round) < {t.name for t in self.ticks_topics}:
            return
        round_, self._round = self._round, {}
        parked, self._parked = self._parked, {}
        self._epoch += 1
        keep = self._unmoved(round_, parked)
        async with self._state_lock:
            gone = {s for s in self.builder.symbols() | self.reconciler.symbols() if got.partition_of(s) not in keep}
            self.builder.drop(gone)
            self.reconciler.drop(gone)
        self.assignment, self._built = got, keep
        if self.ctx.embedded:
            return
        gained = Assignment(TICKS, got.partitions - keep, got.partition_of)
        log.info(
            "ingest: ticks partitions %s assigned (%s kept, state of %d symbols dropped)",
            sorted(got.partitions),
            sorted(keep),
            len(gone),
        )
        await self._cancel_restore()
        # in the background: the group's heartbeats pause until this callback returns (aiokafka)
        self._restoring = asyncio.create_task(self._restore_until_done(gained), name="ingest-restore")

    async def _cancel_restore(self) -> None:
        task, self._restoring = self._restoring, None
        if task is not None and not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _restore_until_done(self, gained: Assignment) -> None:
        """Restore the partitions gained, then let their ticks through; a failed read is tried again (their
        ticks wait meanwhile)."""
        for attempt in range(10**9):
            try:
                if gained.partitions:
                    await self.restore(partitions=gained)
                self._built |= gained.partitions
                self.builder.touch_all()  # the clock runs from here; the first batch touches them again
                self._resumed = False
                self.ready.set()
                return
            except Exception as exc:
                delay = min(30.0, 2.0**attempt)
                log.warning(
                    "ingest: restoring partitions %s failed (%r); again in %.0fs", sorted(gained.partitions), exc, delay
                )
                await asyncio.sleep(delay)

    # --- checkpoints: each partition's state and the ticks offsets it covers (Kafka) ------------------------

    async def on_committed(self, positions: Positions) -> None:
        """After a batch handled whole was committed (the next batch waits for this): every
        TOKENPULSE_INGEST_CHECKPOINT_INTERVAL_S, a checkpoint of each partition owned. The state is then exactly
        the result of the ticks up to the committed offsets; the state lock keeps a clock emission from being
        half done in it (marked emitted, not yet published)."""
        assert self.ctx is not None
        every = self.ctx.settings.ingest.ingest_checkpoint_interval_s
        if every <= 0 or self.ctx.embedded or time.monotonic() < self._checkpoint_due:
            return
        self._checkpoint_due = time.monotonic() + every
        epoch, at = self._epoch, await positions()
        async with self._state_lock:
            if epoch != self._epoch or not self.ready.is_set() or self.assignment is None:
                return  # a rebalance began meanwhile: the state is no longer that of these offsets
            taken = self._take_checkpoints(self.assignment, at)
        await self._write_checkpoints(taken)

    def _take_checkpoints(
        self, owned: Assignment, at: dict[str, dict[int, int]]
    ) -> dict[int, tuple[dict[str, int], checkpoint.PartitionState]]:
        """Per partition owned whose position is known in every ticks topic: those offsets and a copy of its state."""
        symbols: dict[int, set[str]] = {}
        for symbol in self.builder.symbols() | self.reconciler.symbols():
            symbols.setdefault(owned.partition_of(symbol), set()).add(symbol)
        out = {}
        for p in sorted(owned.partitions & self._built):
            offsets = {t.name: at.get(t.name, {}).get(p) for t in self.ticks_topics}
            if all(offset is not None for offset in offsets.values()):
                state = checkpoint.take(self.builder, self.reconciler, symbols.get(p, set()))
                out[p] = ({t: o for t, o in offsets.items() if o is not None}, state)
        return out

    async def _write_checkpoints(self, taken: dict[int, tuple[dict[str, int], checkpoint.PartitionState]]) -> None:
        """Publish the checkpoints taken, then delete the parts a partition's previous checkpoint had beyond them."""
        assert self.ctx is not None
        bus = self.ctx.bus
        group = bus.group_id(self.name)
        for p, (offsets, state) in taken.items():
            try:
                messages = await asyncio.to_thread(checkpoint.to_messages, group, p, offsets, state)
                await bus.publish(INGEST_CHECKPOINTS, messages)
                for part in range(len(messages), self._checkpoint_parts.get(p, 0)):
                    await bus.publish_tombstone(INGEST_CHECKPOINTS, checkpoint_key(group, p, part))
            except Exception as exc:  # the next one is due at the next interval; a restore meanwhile reads more
                log.warning("ingest: the checkpoint of ticks partition %d was not written: %r", p, exc)
                continue
            self._checkpoint_parts[p] = len(messages)

    async def _usable_checkpoints(self, part: Assignment, since_ms: int) -> dict[int, checkpoint.Checkpoint]:
        """The newest checkpoint of each of ``part``'s partitions, where one may be used; the others are named in
        one log line (their day is replayed)."""
        assert self.ctx is not None
        bus = self.ctx.bus
        group = bus.group_id(self.name)
        committed = {t.name: await bus.committed_offsets(self.name, t) for t in self.ticks_topics}
        rejected: list[Rejected] = []
        messages: list[IngestCheckpoint] = []
        async for chunk in bus.read_log_chunks(INGEST_CHECKPOINTS, LogRange(since_ms), rejected):
            messages += [m for m in chunk if isinstance(m, IngestCheckpoint) and m.group == group]
        unreadable = [r.message.key or "" for r in rejected]
        found, refused = checkpoint.newest(messages, unreadable, group, committed, part.partitions)
        if refused:
            log.info(
                "ingest: ticks partitions without a usable checkpoint, their ticks read from %s: %s",
                datetime.fromtimestamp(since_ms / 1000, UTC).isoformat(),
                ", ".join(f"{p} ({why})" for p, why in sorted(refused.items())),
            )
        return found

    # --- REST backfill ------------------------------------------------------------------------

    async def backfill_gap(self, exchange: str, symbol: str, since: datetime, until: datetime) -> GapResult:
        """Fetch the candles of ``symbol`` in [since, until) from ``exchange``'s REST API and publish them."""
        assert self.ctx is not None
        if self.rest is None:
            self.rest = RestBackfiller(self.ctx.bus, self.ctx.settings)
        return await self.rest.backfill_gap(exchange, symbol, since, until)

    async def backfill_on_gap(self, exchange: str, symbol: str, since: datetime, until: datetime) -> None:
        """The connectors' gap hook: log the gap, then backfill it in the background (never blocks a feed)."""
        await log_gap(exchange, symbol, since, until)
        if self.ctx is not None and self.ctx.settings.ingest.rest_backfill_gaps:
            self.on_gap(exchange, symbol, since, until)

    def on_gap(self, exchange: str, symbol: str, since: datetime, until: datetime) -> None:
        """Hook for the live connectors after a reconnect or a sequence gap: backfill in the background."""

        async def run() -> GapResult | None:
            try:
                return await self.backfill_gap(exchange, symbol, since, until)
            except Exception as exc:
                log.warning("REST backfill of %s %s from %s failed: %s", exchange, symbol, since.isoformat(), exc)
                return None

        task = asyncio.create_task(run(), name=f"gap-{exchange}-{symbol}")
        self._gap_tasks.add(task)
        task.add_done_callback(self._gap_tasks.discard)

    async def backfill_since_last_stored(self, exchange: str, now: datetime | None = None) -> int:
        """Per symbol and interval: from the last stored candle (1 day back without a store) to now.

        Returns the candles published. Each interval is capped at TOKENPULSE_REST_BACKFILL_MAX_BARS."""
        assert self.ctx is not None
        ctx = self.ctx
        if ctx.embedded and ctx.settings.runtime.backfill_on_start and ctx.store is not None:
            # the bundled history goes first (the runtime reports it in status; give up waiting for a
            # report that never comes, e.g. when no runtime loads it)
            for waited in range(10**9):
                state = ctx.status.get("backfill")
                if state in ("done", "failed") or (state is None and waited >= 30):
                    break
                await asyncio.sleep(1.0)
        if self.rest is None:
            self.rest = RestBackfiller(ctx.bus, ctx.settings)
        now = now or datetime.now(UTC)
        last: dict[tuple[str, str], datetime] = {}
        if ctx.store is not None:
            rows = await ctx.store.query("SELECT symbol, interval, max(ts) FROM candles GROUP BY symbol, interval")
            last = {(sym, iv): t.replace(tzinfo=UTC) if t.tzinfo is None else t for sym, iv, t in rows}
        ctx.status["rest_backfill"] = "running"
        published = 0
        for symbol in [t.symbol for t in self._tokens(ctx)]:
            for interval in Interval:
                stored = last.get((symbol, interval.value))
                since = stored + timedelta(milliseconds=interval.millis) if stored else now - timedelta(days=1)
                try:
                    result = await self.rest.backfill_gap(exchange, symbol, since, now, intervals=[interval], now=now)
                    published += result.total
                except Exception as exc:
                    log.warning("start-up REST backfill of %s %s from %s failed: %s", symbol, interval, exchange, exc)
        ctx.status["rest_backfill"] = f"done ({published} candles from {exchange})"
        return published

    async def _poll_marketcaps(self) -> None:
        assert self.ctx is not None and self.marketcaps is not None
        ctx, poller = self.ctx, self.marketcaps
        if ctx.store is not None:
            try:
                await poller.sync_history(await last_stored_caps(ctx.store))
            except Exception as exc:
                log.warning("market-cap history sync failed: %s", exc)
        while True:
            try:
                await poller.poll_once()
            except Exception as exc:
                log.warning("market-cap poll failed: %s", exc)
            ctx.status["marketcaps"] = poller.status()
            await asyncio.sleep(ctx.settings.marketcap.poll_s)

    # --- restart ------------------------------------------------------------------------------

    async def restore(self, now_ms: int | None = None, partitions: Assignment | None = None) -> RestoreResult:
        """Rebuild the open candles and reference prices from the ticks counted before (see the module doc):
        those of ``partitions`` (a rebalance gave them to this replica), or all. On Kafka a partition with a
        usable checkpoint starts from it and replays only the ticks after its offsets."""
        assert self.ctx is not None
        ctx = self.ctx
        started = time.monotonic()
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        lookback_ms = int(ctx.settings.ingest.ingest_restore_lookback_s * 1000)
        first_bucket = Interval.D1.bucket_ms(now_ms - lookback_ms)  # every bucket of a coarser interval opens later
        since_ms = first_bucket - RESTORE_SKEW_MS
        found = {}
        if partitions is not None and not ctx.embedded and ctx.settings.ingest.ingest_checkpoint_interval_s > 0:
            found = await self._usable_checkpoints(partitions, since_ms)
        result, prices = RestoreResult(), 0
        if found:
            assert partitions is not None
            part = Assignment(TICKS, frozenset(found), partitions.partition_of)
            result, prices = await self._rebuild(part, since_ms, first_bucket, found)
            result.after_checkpoint = result.ticks
        rest = (
            None
            if partitions is None
            else Assignment(TICKS, partitions.partitions - set(found), partitions.partition_of)
        )
        if rest is None or rest.partitions:
            full, more = await self._rebuild(rest, since_ms, first_bucket, {})
            result, prices = result + full, prices + more
        self.restored = result
        self._log_restored(result, prices, partitions, found, since_ms, started)
        if result.dropped:
            log.warning(
                "ingest: %d open candles opened before %s and were never published: their ticks before it were not "
                "read (raise TOKENPULSE_INGEST_RESTORE_LOOKBACK_S); they are dropped, not published partial",
                result.dropped,
                datetime.fromtimestamp(first_bucket / 1000, UTC).isoformat(),
            )
        return result

    async def _rebuild(
        self, part: Assignment | None, since_ms: int, first_bucket: int, found: dict[int, checkpoint.Checkpoint]
    ) -> tuple[RestoreResult, int]:
        """Rebuild ``part``'s partitions (default: all) into a builder and reconciler of their own, adopted in one
        step (the clock never sees them half done): from their checkpoints in ``found`` and the ticks after
        them, else from the ticks since ``since_ms``. The result and the reference prices rebuilt."""
        assert self.ctx is not None
        ctx = self.ctx
        builder, reconciler = self.builder.empty_like(), self.reconciler.empty_like()
        wall = time.time()
        # off the event loop (a day of ticks)
        if ctx.embedded:
            ticks, candles = await self._stored_since(since_ms, first_bucket)
            replayed = await asyncio.to_thread(replay, builder, reconciler, ticks, _everything, wall)
        else:
            for cp in found.values():
                checkpoint.load(builder, reconciler, cp, wall)
            starts = {t.name: {p: cp.offsets[t.name] for p, cp in found.items()} for t in self.ticks_topics}
            replayed = await self._replay_logged(builder, reconciler, since_ms, part, starts if found else None)
            # what was published after a checkpoint (the clock, a batch not committed before a kill) is read back
            written = min((int(cp.written_at.timestamp() * 1000) for cp in found.values()), default=None)
            candles = await self._published_since(
                builder, since_ms if written is None else written - CHECKPOINT_SKEW_MS, part
            )
        # a checkpoint's buckets are whole: none of them takes its content from its published candle
        complete_from = None if found else first_bucket
        result = await asyncio.to_thread(builder.settle, candles, complete_from_ms=complete_from)
        result.ticks = replayed
        async with self._state_lock:
            self.builder.adopt(builder)
            self.reconciler.adopt(reconciler)
        return result, len(reconciler.symbols())

    def _log_restored(
        self,
        result: RestoreResult,
        prices: int,
        partitions: Assignment | None,
        found: dict[int, checkpoint.Checkpoint],
        since_ms: int,
        started: float,
    ) -> None:
        where = f" of ticks partitions {sorted(partitions.partitions)}" if partitions is not None else ""
        log.info(
            "ingest: %d open or recent candles%s restored from %d ticks counted (%d after the checkpoints of "
            "partitions %s, %d since %s) (%d already published, %d taken from their published candle; %d reference "
            "prices) in %.1fs",
            result.buckets,
            where,
            result.ticks,
            result.after_checkpoint,
            sorted(found),
            result.ticks - result.after_checkpoint,
            datetime.fromtimestamp(since_ms / 1000, UTC).isoformat(),
            result.emitted,
            result.from_candles,
            prices,
            time.monotonic() - started,
        )

    async def _replay_logged(
        self,
        builder: CandleBuilder,
        reconciler: PriceReconciler,
        since_ms: int,
        part: Assignment | None,
        starts: dict[str, dict[int, int]] | None = None,
    ) -> int:
        """Kafka: count into ``builder`` and ``reconciler`` the ticks of ``part``'s partitions (default: all) the
        group counted (both topics, up to its committed offsets; from ``starts``' offset per topic and partition
        where given, else from ``since_ms``), merged by the time each message was made."""
        assert self.ctx is not None
        bus, wall = self.ctx.bus, time.time()
        keep = part.holds if part is not None else _everything
        partitions = part.partitions if part is not None else None
        logs = [
            bus.read_log_chunks(
                topic,
                LogRange(since_ms, self.name, partitions, from_offsets=(starts or {}).get(topic.name)),
            )
            for topic in self.ticks_topics
        ]
        replayed = 0
        async for chunk in by_time(logs):
            # off the event loop: a loop held for seconds misses the group's heartbeats
            replayed += await asyncio.to_thread(replay, builder, reconciler, chunk, keep, wall)  # type: ignore[arg-type]
        return replayed

    async def _published_since(
        self, builder: CandleBuilder, since_ms: int, part: Assignment | None
    ) -> list[CandleEvent]:
        """Kafka: the published candles (both topics) the rebuilt ``builder`` still needs; a row whose v1 copy
        is missing (a kill between the two) has it published now, as no later batch will."""
        assert self.ctx is not None
        bus = self.ctx.bus
        partitions = part.partitions if part is not None else None
        published = PublishedCandles(builder)
        # rows before copies: a batch finished between the two reads then has its copy read too, not repaired twice;
        # the candle topics are placed as the ticks topics (keyed by symbol, TOKENPULSE_KAFKA_PARTITIONS each)
        for topic, copies in ((CANDLES_V2, False), (CANDLES, True)):
            async for chunk in bus.read_log_chunks(topic, LogRange(since_ms, partitions=partitions)):
                await asyncio.to_thread(published.add_messages, chunk, copies)
        missing = published.without_copy()
        if missing and self.ctx.settings.bus.publish_v1:
            log.warning("ingest: %d candles of candles.v2 lacked their v1 copy; published it now", len(missing))
            await bus.publish_v1_copy(CANDLES, missing)
        return list(published.latest.values())

    async def _stored_since(self, since_ms: int, first_bucket: int) -> tuple[list[TickEvent], list[CandleEvent]]:
        """Embedded mode: the store's ticks (what the writer stored) and tick-built candles since ``since_ms``."""
        assert self.ctx is not None
        store = self.ctx.store
        if store is None:
            return [], []
        since = datetime.fromtimestamp(since_ms / 1000, UTC)
        rows = await store.query(
            "SELECT symbol, source, ts, price, size, side, dedup_key, event_id, produced_at FROM ticks FINAL "
            "WHERE produced_at >= {since:DateTime64(3, 'UTC')} ORDER BY produced_at, ts",
            {"since": since},
        )
        ticks = []
        for symbol, source, ts, price, size, side, dedup_key, event_id, produced_at in rows:
            prefix = f"{source}:"
            trade_id = dedup_key[len(prefix) :] if dedup_key.startswith(prefix) and dedup_key != event_id else None
            try:
                ticks.append(
                    TickEvent(
                        symbol=symbol,
                        source=source,
                        ts=_utc(ts),
                        price=price,
                        size=size,
                        side=Side(side) if side in Side._value2member_map_ else Side.UNKNOWN,
                        trade_id=trade_id or None,
                        event_id=event_id,
                        produced_at=_utc(produced_at),
                    )
                )
            except ValueError:
                continue
        older = datetime.fromtimestamp((first_bucket - Interval.D1.millis) / 1000, UTC)
        crows = await store.query(
            "SELECT symbol, interval, ts, open, high, low, close, volume, trades, version FROM candles FINAL "
            "WHERE source = {source:String} AND ts >= {since:DateTime64(3, 'UTC')}",
            {"source": self.builder.source, "since": older},
        )
        candles = []
        for symbol, interval, ts, o, h, lo, c, v, n, version in crows:
            with suppress(ValueError):
                candles.append(
                    CandleEvent(
                        symbol=symbol,
                        interval=Interval(interval),
                        ts=_utc(ts),
                        open=o,
                        high=h,
                        low=lo,
                        close=c,
                        volume=v,
                        trades=n,
                        source=self.builder.source,
                        version=version,
                    )
                )
        return ticks, candles

    async def start(self, ctx: Context) -> None:
        if ctx.embedded:  # on Kafka each rebalance's on_assign restores the partitions it gives this replica
            try:
                await self.restore()
            except Exception:
                log.exception("ingest: open candles not restored from the store; they start empty")
            finally:
                self.ready.set()
        await self._publish_universe(ctx, first=True)
        if ctx.settings.runtime.universe is not None and ctx.settings.ingest.universe_refresh_s > 0:
            self._tasks.append(asyncio.create_task(self._refresh_universe(ctx), name="ingest-universe"))
        if Discovery.wanted(ctx.settings):
            self._tasks.append(asyncio.create_task(self._discover(ctx), name="ingest-universe-discovery"))
        self._tasks.append(asyncio.create_task(self._clock(), name="ingest-clock"))
        if ctx.settings.ingest.rest_backfill_exchange:
            self._tasks.append(
                asyncio.create_task(
                    self.backfill_since_last_stored(ctx.settings.ingest.rest_backfill_exchange),
                    name="ingest-rest-backfill",
                )
            )
        if ctx.settings.marketcap.poll:
            budget = ctx.settings.store.data_dir / "marketcap-budget.json"
            self.marketcaps = MarketCapPoller(ctx.bus, ctx.settings, budget_path=budget)
            self._tasks.append(asyncio.create_task(self._poll_marketcaps(), name="ingest-marketcaps"))
        mode = ctx.settings.ingest.live_feed
        if mode == "off":
            ctx.status["feed"] = "off"
            return
        if mode == "synthetic":
            self._start_synthetic(ctx, "synthetic", "synthetic ticks (TOKENPULSE_LIVE_FEED=synthetic)")
            return
        await self._start_live(ctx, mode)

    async def _start_live(self, ctx: Context, mode: str) -> None:
        """The venues' connectors of this replica's share of the universe's pairs (the configuration is checked
        against every pair: on Kafka the share comes with the group's first assignment)."""
        try:
            every = pairs_for(ctx.settings, self._tokens(ctx))
        except ValueError as exc:
            if mode == "live":
                raise
            log.error("live feed: bad exchange configuration (%s); using synthetic ticks", exc)
            self._start_synthetic(ctx, "synthetic-fallback", f"bad exchange configuration: {exc}")
            return
        if not every:
            if mode == "live":
                raise ValueError("TOKENPULSE_LIVE_FEED=live but no exchange is configured (TOKENPULSE_FEED_EXCHANGES)")
            self._start_synthetic(ctx, "synthetic-fallback", "no exchange configured")
            return
        self._live = True
        await self._follow_feeds()
        ctx.status["feed"] = "connecting"
        ctx.status["feed_detail"] = (
            "connecting to " + ", ".join(f"{c.name} ({c.url})" for c in self.connectors)
            if self.connectors
            else f"waiting for this replica's share of the universe (consumer group {FEEDS_GROUP})"
        )
        self._refresh_status()
        log.info("live feed: %s", ctx.status["feed_detail"])
        self._tasks.append(asyncio.create_task(self._await_live(ctx, mode), name="ingest-feed-watch"))

    async def _await_live(self, ctx: Context, mode: str) -> None:
        """``auto``: the first exchange to connect makes the feed live; none within the timeout → synthetic. The
        connectors change with the replica's share, so they are looked at again every poll; time without any
        (no share yet) does not count against the timeout."""
        timeout = None if mode == "live" else ctx.settings.ingest.feed_connect_timeout_s
        waited = 0.0
        while not (done := any(c.connected.is_set() for c in self.connectors)):
            if timeout is not None and waited >= timeout:
                break
            await asyncio.sleep(LIVE_POLL_S)
            waited += LIVE_POLL_S if self.connectors else 0.0
        if done:
            up = [c.name for c in self.connectors if c.connected.is_set()]
            ctx.status["feed"] = "live"
            ctx.status["feed_detail"] = "live trades from " + ", ".join(c.name for c in self.connectors)
            log.info("live feed: connected to %s", ", ".join(up))
            return
        errors = "; ".join(f"{c.name}: {c.health.last_error or 'no answer'}" for c in self.connectors)
        # the connectors keep running: their reconnect loop (jittered backoff up to FEED_BACKOFF_MAX_S)
        # probes the exchanges, and their first trade switches back to live (_publish_ticks)
        self._fallback_since = datetime.now(UTC)
        self._start_synthetic(
            ctx,
            "synthetic-fallback",
            f"no exchange answered within {ctx.settings.ingest.feed_connect_timeout_s:g}s ({errors}); still trying "
            f"{', '.join(c.name for c in self.connectors)} and switching back to live when their trades flow",
        )

    def _start_synthetic(self, ctx: Context, status: str, why: str) -> None:
        ctx.status["feed"] = status
        ctx.status["feed_detail"] = f"synthetic ticks: {why}"
        if status == "synthetic-fallback":
            log.warning("live feed: falling back to SYNTHETIC ticks: %s", why)
        else:
            log.info("live feed: %s", why)
        self.feed = SyntheticFeed(
            self._seed_states(ctx, self._feed_tokens(ctx)),
            period_s=ctx.settings.ingest.synthetic_tick_s,
            seed=ctx.settings.ingest.synthetic_seed,
        )
        self._synthetic_task = asyncio.create_task(self._synthetic(), name="ingest-synthetic")
        self._tasks.append(self._synthetic_task)

    async def _publish_ticks(self, ticks: TickBatch) -> None:
        """The connectors' sink: their rows, published as they come. On the synthetic fallback, the first live
        trades switch back to live."""
        assert self.ctx is not None
        if self._fallback_since is not None:
            await self._back_to_live(ticks)
        await self.ctx.bus.publish_rows(TICKS_V2, ticks)

    async def _back_to_live(self, ticks: TickBatch) -> None:
        """Stop the synthetic fallback for good (never mixed with live trades) and say so."""
        assert self.ctx is not None
        since, self._fallback_since = self._fallback_since, None
        task, self._synthetic_task = self._synthetic_task, None
        sources = sorted(set(ticks.source))
        status = self.ctx.status
        status["feed"] = "live"
        status["feed_detail"] = "live trades from " + ", ".join(sources)
        status["feed_back_to_live_at"] = datetime.now(UTC).isoformat()
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            if task in self._tasks:
                self._tasks.remove(task)
        self.feed = None
        set_connector_health("synthetic", False)
        took = (datetime.now(UTC) - since).total_seconds() if since else 0.0
        log.warning(
            "live feed: exchanges reachable again: switched back from SYNTHETIC ticks to live trades from %s "
            "after %.0fs on the fallback (open synthetic candles discarded, never mixed with live trades)",
            ", ".join(sources),
            took,
        )
        self._refresh_status()

    async def _on_gap(self, exchange: str, symbol: str, since: datetime, until: datetime) -> None:
        await self.gap_hook(exchange, symbol, since, until)

    def _refresh_status(self) -> None:
        if self.ctx is not None and self.connectors:
            for c in self.connectors:
                c.flush_metrics()  # the frames and ticks counted since the last frame's flush (a quiet stream)
            status = self.ctx.status
            status["feeds"] = {c.name: c.health.snapshot() for c in self.connectors}
            if status.get("feed") == "live":
                up = [c.name for c in self.connectors if c.health.connected]
                status["feed_detail"] = (
                    f"live trades from {', '.join(up)}"
                    if up
                    else "live, but no exchange is connected right now (reconnecting; see feeds)"
                )

    async def _stop_connectors(self) -> None:
        for t in self._connector_tasks:
            t.cancel()
        for t in self._connector_tasks:
            with suppress(asyncio.CancelledError):
                await t
        for c in self.connectors:
            await c.close()
        self._connector_tasks.clear()
        self._refresh_status()

    def _seed_states(self, ctx: Context, tokens: list[Token] | None = None) -> list[TokenState]:
        """A start for each token's synthetic walk: its bundled history where there is some, else generated."""
        tokens = self._tokens(ctx) if tokens is None else tokens
        symbols = [t.symbol for t in tokens]
        daily = {s: bars for s, i, bars in iter_bundle(ctx.settings.runtime.bundle_dir, symbols, [Interval.D1])}
        period = ctx.settings.ingest.synthetic_tick_s
        states = []
        for token in tokens:
            bars = daily.get(token.symbol)
            if not bars:
                states.append(generated_state(token.symbol, token.rank, period))
                continue
            recent = bars[-90:]
            avg_volume = sum(b.volume for b in recent) / len(recent)
            states.append(
                TokenState(
                    token.symbol,
                    bars[-1].close,
                    daily_volatility([b.close for b in recent]),
                    typical_size=max(avg_volume * period / 86400.0, 1e-6),
                )
            )
        return states

    # --- the universe -------------------------------------------------------------------------

    def _tokens(self, ctx: Context) -> list[Token]:
        """The universe the feeds follow: the topic's once it delivered, else the configured one."""
        if self.universe.loaded:
            return sorted(self.universe.tokens.values(), key=lambda t: (t.rank or 0, t.symbol))
        return configured(ctx.settings)

    def _file_stamp(self, ctx: Context) -> tuple[float, int] | None:
        path = ctx.settings.runtime.universe
        if path is None:
            return None
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_mtime, st.st_size

    async def _publish_universe(self, ctx: Context, *, first: bool = False) -> None:
        """Publish the configured universe's changes; at start also wait until the topic gave it back."""
        stamp = self._file_stamp(ctx)
        try:
            tokens = self.discovery.universe(ctx.settings)
        except UniverseError:
            if first:
                raise  # a broken universe at start is a configuration error
            log.exception("universe: the file could not be read; keeping the universe as it was")
            self._universe_stamp = stamp  # report a broken file once, not at every refresh
            return
        if self.publisher is None:
            self.publisher = UniversePublisher(ctx.bus)
        await self.publisher.publish(tokens)
        self._universe_stamp = stamp
        ctx.status["universe"] = f"{len(tokens)} tokens"
        if first:
            await self.universe.wait_for({t.symbol for t in tokens}, UNIVERSE_WAIT_S)

    async def _refresh_universe(self, ctx: Context) -> None:
        """Re-read the universe file whenever it changed (mtime or size)."""
        while True:
            await asyncio.sleep(ctx.settings.ingest.universe_refresh_s)
            if self._file_stamp(ctx) != self._universe_stamp:
                try:
                    await self._publish_universe(ctx)
                except Exception:
                    log.exception("universe: publishing a change failed; trying again at the next refresh")

    async def _discover(self, ctx: Context) -> None:
        """Check the universe's pairs against the exchanges' listings and re-cut its top N, now and every
        UNIVERSE_DISCOVERY_S."""
        while True:
            try:
                if await self.discovery.refresh(ctx.settings):
                    await self._publish_universe(ctx)
                ctx.status["universe_listings"] = self.discovery.said
            except Exception:
                log.exception("universe: discovery failed; trying again at the next round")
            await asyncio.sleep(ctx.settings.ingest.universe_discovery_s)

    async def _universe_changed(self, changed: list[Token], removed: list[str]) -> None:
        """The topic changed the universe: follow it with the synthetic walk and the venues' subscriptions."""
        if self.ctx is None:
            return
        for symbol in removed:
            self.reconciler.forget(symbol)
        await self._follow_feeds()
        if changed or removed:
            log.info("universe: following %d tokens (%d added or changed, %d removed)",
                     len(self.universe.tokens), len(changed), len(removed))  # fmt: skip

    # --- feed ownership: the tokens of the universe partitions the ingest-feeds group assigns to this replica --

    async def _feed_share_events(self, events: list[Any]) -> None:
        """The feeds group's deliveries: nothing to do, the broadcast follower applies the universe; this group
        is there for Kafka to share the universe's partitions out."""
        return None

    async def on_feeds_assign(self, got: Assignment) -> None:
        """The feeds group's new assignment: run the feeds of these partitions' tokens from now on, stop the
        others'. In the background: the group's heartbeats pause until this callback returns (aiokafka)."""
        self.feed_share = got
        log.info("ingest: universe partitions %s assigned: the feeds of their tokens run here", sorted(got.partitions))
        task = asyncio.create_task(self._follow_feeds(), name="ingest-feeds-follow")
        self._follows.add(task)
        task.add_done_callback(self._follows.discard)

    def _owns_feed(self, symbol: str) -> bool:
        """Embedded: every feed; on Kafka: the symbols of the universe partitions assigned (none before)."""
        if self.ctx is not None and self.ctx.embedded:
            return True
        return self.feed_share is not None and self.feed_share.holds(symbol)

    def _feed_tokens(self, ctx: Context) -> list[Token]:
        return [t for t in self._tokens(ctx) if self._owns_feed(t.symbol)]

    async def _follow_feeds(self) -> None:
        """Make the running feeds those of this replica's share of the universe: the synthetic walk's tokens and
        the venues' subscriptions (a connector whose pairs changed resubscribes; the others go on untouched)."""
        assert self.ctx is not None
        ctx = self.ctx
        async with self._feeds_lock:
            if self._stopping:
                return
            owned = self._feed_tokens(ctx)
            if self.feed is not None:
                want = {t.symbol for t in owned}
                for symbol in [s for s in self.feed.states if s not in want]:
                    self.feed.remove(symbol)
                for state in self._seed_states(ctx, [t for t in owned if t.symbol not in self.feed.states]):
                    self.feed.add(state)
            if self._live:
                await self._resubscribe(ctx)
            ctx.status["feed_share"] = f"{len(owned)} of {len(self._tokens(ctx))} tokens"

    async def _resubscribe(self, ctx: Context) -> None:
        """Restart the connectors whose pairs changed with the universe (each resubscribes as on a reconnect)."""
        try:
            fresh = {
                c.name: c
                for c in build_connectors(
                    ctx.settings, self._publish_ticks, self._on_gap, self._tokens(ctx), owns=self._owns_feed
                )
            }
        except ValueError as exc:
            log.error("universe: the venues' pairs cannot follow it (%s); keeping the current subscriptions", exc)
            return
        current = {c.name: (c, t) for c, t in zip(self.connectors, self._connector_tasks, strict=True)}
        for name in sorted(set(current) | set(fresh)):
            old, new = current.get(name), fresh.get(name)
            if old is not None and new is not None and old[0].pairs == new.pairs:
                continue
            if old is not None:
                old[1].cancel()
                with suppress(asyncio.CancelledError):
                    await old[1]
                await old[0].close()
                del current[name]
            if new is not None:
                current[name] = (new, asyncio.create_task(new.run(), name=f"feed-{name}"))
        self.connectors = [c for c, _ in current.values()]
        self._connector_tasks = [t for _, t in current.values()]
        self._refresh_status()

    async def _synthetic(self) -> None:
        """Every token's trade each period, spread over it in parts of :data:`SYNTHETIC_PART` tokens: one burst
        of a 1,000-token universe held the event loop (and every token's candles and prices after it) at once."""
        assert self.ctx is not None and self.feed is not None
        feed = self.feed
        while True:
            symbols = list(feed.states)
            parts = max(1, -(-len(symbols) // SYNTHETIC_PART))
            for part in range(parts):
                try:
                    rows = feed.rows(epoch_us(datetime.now(UTC)), symbols[part::parts])
                    if rows:
                        await self.ctx.bus.publish_rows(TICKS_V2, tick_batch(rows))
                    set_connector_health("synthetic", True)
                    connector_delivered("synthetic", len(rows))
                except Exception:
                    set_connector_health("synthetic", False)
                    log.exception("synthetic feed failed to publish")
                await asyncio.sleep(feed.period_s / parts)

    async def _clock(self) -> None:
        assert self.ctx is not None
        await self.ready.wait()
        while True:
            await asyncio.sleep(1.0)
            self._refresh_status()
            if not self.ready.is_set():
                continue  # a rebalance: the symbols held may be another replica's by now
            try:
                async with self._state_lock:  # what it closes is published before a rebalance moves the symbol
                    closed = self.builder.tick_clock()
                    stale = self.reconciler.sweep()  # a source that went quiet ages without ticks
                    await self._emit(closed, stale, [])
            except Exception:
                log.exception("candle clock failed")

    async def stop(self) -> None:
        await self._cancel_restore()
        self._stopping = True  # no feed starts from here (an assignment or a universe change arriving late)
        await asyncio.gather(*self._follows, return_exceptions=True)
        async with self._feeds_lock:
            await self._stop_connectors()
        for t in [*self._tasks, *self._gap_tasks]:
            t.cancel()
        for t in [*self._tasks, *self._gap_tasks]:
            with suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        for closable in (self.rest, self.marketcaps):
            if closable is not None:
                with suppress(Exception):
                    await closable.aclose()
