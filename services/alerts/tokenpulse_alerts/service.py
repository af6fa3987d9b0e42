"""The alerts service: user rules evaluated on prices, grades and signals; notifications delivered once.

State and where it comes from at start:

* **rules** — Kafka: the compacted ``tokenpulse.alert-rules.v1`` is read whole
  (``Bus.read_log``), then followed live by a tail subscription (every replica
  holds every rule; a rule version not newer than one applied is ignored, so
  the overlap of the two reads is harmless).
  Embedded mode reads the gateway's ``alert_rules`` table instead (the
  in-process bus keeps no log).
* **firing log** — the service's own ``tokenpulse.alerts.v1`` of the last
  ``LOG_DAYS`` days (embedded: the ``alert_firings`` table): which firing ids
  exist (so a replayed trigger is never notified twice), which are still
  pending (their deliveries resume), and each rule's last firing (cooldowns
  survive restarts).

A rule or firing record that cannot be read at start is quarantined, never a
reason not to start: logged, dead-lettered, counted in ``/readyz``
(docs/reliability.md, "Unreadable records quarantined at start").

Prices, grades and signals are consumed in the service's consumer group, keyed
by symbol. Each firing is published ``pending`` *before* the consumer commits
the triggering event, delivered in the background (bounded concurrency), and
published again with its outcome. A crash between a receiver accepting a
message and the outcome being published can repeat that one message after the
restart; ``X-Tokenpulse-Delivery`` (the firing id) lets a webhook drop it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from opentelemetry import trace
from pydantic import ValidationError
from tokenpulse_shared import rule_table
from tokenpulse_shared.batches import PriceBatch, price_row_id
from tokenpulse_shared.bus import Bus, Delivery, RawMessage, Rejected
from tokenpulse_shared.bus.base import dead_letter_for
from tokenpulse_shared.events import (
    AlertChannel,
    AlertFiredEvent,
    AlertRuleEvent,
    DeadLetterEvent,
    GradeEvent,
    PriceEvent,
    SignalEvent,
    content_digest,
    trusted,
)
from tokenpulse_shared.service import ASGIApp, Context, StoreAccess
from tokenpulse_shared.store import Store
from tokenpulse_shared.telemetry import DEAD_LETTERS
from tokenpulse_shared.topics import ALERT_RULES, ALERTS, DEAD_LETTER, GRADES, PRICES, PRICES_V2, SIGNALS, Topic

from tokenpulse_alerts.delivery import Message, Notifier
from tokenpulse_alerts.rules import Hit, RuleBook, firing_event_id, firing_id

E = TypeVar("E")
log = logging.getLogger(__name__)
_tracer = trace.get_tracer("tokenpulse.alerts")

LOG_DAYS = 7
_Target = tuple[str, str, str]  # owner, channel type, channel target
MAX_IN_FLIGHT = 200


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _firing_from_row(r: tuple[Any, ...]) -> AlertFiredEvent:
    return AlertFiredEvent(
        firing_id=r[0],
        rule_id=r[1],
        owner=r[2],
        symbol=r[3],
        ts=r[4].replace(tzinfo=UTC) if r[4].tzinfo is None else r[4],
        price=r[5],
        message=r[6],
        trigger_event_id=r[7],
        status=r[8],
        deliveries=json.loads(r[9] or "[]"),
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<row>'}: {e['msg']}" for e in exc.errors()[:5])
    return f"{type(exc).__name__}: {exc}"


class AlertsService:
    name = "alerts"
    store_access = StoreAccess.NONE  # rules and firings come from their topics (embedded: from the store)

    def __init__(self, seen_capacity: int = 1_000_000) -> None:
        self.ctx: Context | None = None
        self.book = RuleBook()
        self.notifier: Notifier | None = None
        self.firings: OrderedDict[str, str] = OrderedDict()  # firing id -> status
        self.seen_capacity = seen_capacity
        self.ready = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.evaluated = 0
        self.fired = 0
        self.quarantined = {"rules": 0, "firings": 0}  # records that could not be read at start
        self.quarantine: list[DeadLetterEvent] = []  # their dead letters, until restore publishes them

    # ---- lifecycle ------------------------------------------------------------------------------
    def http_app(self) -> ASGIApp | None:
        return None

    def register(self, ctx: Context) -> None:
        self.ctx = ctx
        ctx.settings.require_signing_key()
        # the past of the rules topic is read once by read_log at start; from then on it is followed
        # (replaying it whole through a broadcast too cost as much as the prices at 100,000 rules)
        ctx.bus.subscribe(ALERT_RULES, self.name, self.on_rules, delivery=Delivery.TAIL)
        ctx.bus.subscribe(PRICES, self.name, self.on_prices)
        # a price row's id is its v1 event's: a firing's trigger_event_id is the same either way
        ctx.bus.subscribe(PRICES_V2, self.name, self.on_price_rows)
        ctx.bus.subscribe(GRADES, self.name, self.on_grades)
        ctx.bus.subscribe(SIGNALS, self.name, self.on_signals)
        # what other replicas fire from now on (the past comes from read_log at start): after a
        # rebalance, a redelivered trigger another replica already notified is recognised. Its own
        # firings a replica knows already: they are dropped undecoded (as costly as the prices otherwise)
        ctx.bus.subscribe(ALERTS, self.name, self.on_log, delivery=Delivery.TAIL_OTHERS)

    async def start(self, ctx: Context) -> None:
        self.notifier = Notifier(ctx.settings)
        pending = await self.restore(ctx)
        ctx.status["alert_rules"] = str(len(self.book))
        self.ready.set()
        for fired in pending:
            rule = self.book.rules.get(fired.rule_id)
            if rule is not None:
                await self._spawn(fired, rule, {})
        log.info(
            "alerts ready: %s, %d firings in the log, %d resumed", self.book.describe(), len(self.firings), len(pending)
        )

    async def stop(self) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=10)
        if self.notifier is not None:
            await self.notifier.close()

    async def restore(self, ctx: Context) -> list[AlertFiredEvent]:
        """Rebuild rules and the firing log; a record that cannot be read is quarantined, never fatal."""
        since_ms = int((datetime.now(UTC).timestamp() - LOG_DAYS * 86400) * 1000)
        if ctx.store is not None:
            rules, log_events = await self._read_store(ctx.store, since_ms)
        else:
            rules, log_events = await self._read_topics(ctx.bus, since_ms)
        if self.quarantine:  # one publish for them all: a broker may hold many
            await ctx.bus.publish(DEAD_LETTER, self.quarantine)
            self.quarantine = []
        ctx.status["quarantined_rules"] = self.quarantined["rules"]
        ctx.status["quarantined_firings"] = self.quarantined["firings"]
        for i, rule in enumerate(rules):
            self.book.apply(rule)
            if i % 2000 == 1999:
                await asyncio.sleep(0)  # let the consumers' heartbeats run during a large restore
        latest: dict[str, AlertFiredEvent] = {}
        for fired in log_events:
            if not fired.firing_id:
                continue
            prior = latest.get(fired.firing_id)
            if prior is None or prior.status == "pending":
                latest[fired.firing_id] = fired
            ts = fired.ts.timestamp()
            if ts > self.book.last_fired.get(fired.rule_id, float("-inf")):
                self.book.last_fired[fired.rule_id] = ts
        for fid, fired in latest.items():
            if self.firings.get(fid, "pending") == "pending":
                self._remember(fid, fired.status)
        return [f for f in latest.values() if f.status == "pending"]

    async def _read_store(self, store: Store, since_ms: int) -> tuple[list[AlertRuleEvent], list[AlertFiredEvent]]:
        """Embedded mode: the gateway's ``alert_rules`` table and the writer's ``alert_firings``."""
        rules: list[AlertRuleEvent] = []
        for row in await store.query(f"SELECT {rule_table.COLUMNS} FROM alert_rules FINAL WHERE deleted = 0"):
            rule = rule_table.decode_row(row)
            if isinstance(rule, rule_table.UnreadableRule):
                self._quarantine("rules", ALERT_RULES, rule.rule_id, rule.reason, rule.raw())
            else:
                rules.append(rule)
        fired_rows = await store.query(
            "SELECT firing_id, rule_id, owner, symbol, ts, price, message, trigger_event_id, status, deliveries "
            "FROM alert_firings FINAL WHERE ts >= fromUnixTimestamp64Milli({since:Int64})",
            {"since": since_ms},
        )
        log_events = []
        for r in fired_rows:
            try:
                log_events.append(_firing_from_row(r))
            except (ValueError, TypeError, RecursionError) as exc:  # a ValidationError is a ValueError
                raw = RawMessage(value=json.dumps(r, default=str).encode(), key=str(r[1]))
                self._quarantine("firings", ALERTS, str(r[0]), _reason(exc), raw)
        return rules, log_events

    async def _read_topics(self, bus: Bus, since_ms: int) -> tuple[list[AlertRuleEvent], list[AlertFiredEvent]]:
        """Distributed mode: the compacted rules topic whole, the service's own firing log since ``since_ms``."""
        bad_rules: list[Rejected] = []
        events = await bus.read_log(ALERT_RULES, rejected=bad_rules)
        rules = [e for e in events if isinstance(e, AlertRuleEvent)]
        deleted = {r.rule_id for r in rules if r.deleted}  # rule ids are never reused: a deletion is final
        for bad in bad_rules:
            if bad.message.key not in deleted:
                self._quarantine("rules", ALERT_RULES, bad.message.key or "?", bad.reason, bad.message)
        bad_firings: list[Rejected] = []
        events = await bus.read_log(ALERTS, since_ms=since_ms, rejected=bad_firings)
        for bad in bad_firings:
            self._quarantine("firings", ALERTS, bad.message.key or "?", bad.reason, bad.message)
        return rules, [e for e in events if isinstance(e, AlertFiredEvent)]

    def _quarantine(self, kind: str, topic: Topic, record_id: str, reason: str, raw: RawMessage) -> None:
        """A record that cannot be read at start: one log line, a dead letter (published by ``restore``), a
        count in ``/readyz``."""
        self.quarantined[kind] += 1
        log.warning("quarantined %s %s: %s", kind[:-1], record_id, reason[:300])
        dead = dead_letter_for(topic, self.name, f"quarantined at start: {reason}", raw=raw)
        # the same record quarantined again at the next start is the same dead letter
        dead = dead.model_copy(update={"event_id": "quarantine-" + content_digest(topic.name, record_id, raw.value)})
        DEAD_LETTERS.labels(self.name, topic.name).inc()
        self.quarantine.append(dead)

    def _remember(self, fid: str, status: str) -> None:
        self.firings[fid] = status
        self.firings.move_to_end(fid)
        while len(self.firings) > self.seen_capacity:
            self.firings.popitem(last=False)

    # ---- inputs ---------------------------------------------------------------------------------
    async def on_rules(self, rules: list[AlertRuleEvent]) -> None:
        applied = [rule.rule_id for rule in rules if self.book.apply(rule)]
        if applied:
            more = f" and {len(applied) - 5} more" if len(applied) > 5 else ""
            log.info("rules updated: %s%s; %d active", ", ".join(applied[:5]), more, len(self.book))
        if self.ctx is not None:
            self.ctx.status["alert_rules"] = str(len(self.book))

    async def on_log(self, fired: list[AlertFiredEvent]) -> None:
        for f in fired:
            if not f.firing_id:
                continue
            if self.firings.get(f.firing_id, "pending") == "pending":
                self._remember(f.firing_id, f.status)
            ts = f.ts.timestamp()
            if ts > self.book.last_fired.get(f.rule_id, float("-inf")):
                self.book.last_fired[f.rule_id] = ts

    async def on_prices(self, prices: list[PriceEvent]) -> None:
        hits = await self._hits(prices, self.book.on_price)
        self.evaluated += len(prices)
        await self._fire(hits)

    async def on_price_rows(self, batches: list[PriceBatch]) -> None:
        """Prices of v2 batches, row by row from the columns (each row's ``prev_price`` decides its crossings):
        no event object per row, and a row's id is made only for a row that fires a rule."""
        await self.ready.wait()
        on_row = self.book.on_price_row
        hits: list[Hit] = []
        for b in batches:
            for sym, ts_us, price, sources, stale, prev in zip(
                b.symbol, b.ts_us, b.price, b.sources, b.stale, b.prev_price, strict=True
            ):
                row_id = partial(price_row_id, sym, ts_us, price, sources, stale, prev)
                hits.extend(on_row(sym, ts_us / 1_000_000, price, prev, row_id))
            self.evaluated += len(b)
        await self._fire(hits)

    async def on_grades(self, grades: list[GradeEvent]) -> None:
        await self._fire(await self._hits(grades, self.book.on_grade))

    async def on_signals(self, signals: list[SignalEvent]) -> None:
        await self._fire(await self._hits(signals, self.book.on_signal))

    async def _hits(self, events: Sequence[E], on_event: Callable[[E], list[Hit]]) -> list[Hit]:
        """What the rule book makes of a batch, once the rules are loaded."""
        await self.ready.wait()
        hits: list[Hit] = []
        for event in events:
            hits.extend(on_event(event))
        return hits

    # ---- firing and delivery --------------------------------------------------------------------
    async def _fire(self, hits: list[Hit]) -> None:
        assert self.ctx is not None
        new: list[tuple[AlertFiredEvent, AlertRuleEvent]] = []
        now = datetime.now(UTC)
        for hit in hits:
            fid = firing_id(hit.rule.rule_id, hit.trigger_event_id)
            if fid in self.firings:
                continue  # this trigger was handled before (redelivery or replay after a restart)
            rule = hit.rule
            name = f" ({rule.name})" if rule.name else ""
            # built from validated values (a rule, a price event): no second validation on the hot path
            fired = trusted(
                AlertFiredEvent,
                {
                    "event_id": firing_event_id(fid, "pending" if rule.channels else "no_channels"),
                    "schema_version": AlertFiredEvent.SCHEMA_VERSION,
                    "produced_at": now,
                    "firing_id": fid,
                    "rule_id": rule.rule_id,
                    "owner": rule.owner,
                    "symbol": rule.symbol,
                    "ts": datetime.fromtimestamp(hit.ts, UTC),
                    "price": hit.price,
                    "message": f"{rule.symbol} {hit.detail}{name}",
                    "trigger_event_id": hit.trigger_event_id,
                    "status": "pending" if rule.channels else "no_channels",
                    "deliveries": [],
                },
            )
            self._remember(fid, fired.status)
            new.append((fired, rule))
        if not new:
            return
        self.fired += len(new)
        # the firing is on the log before the trigger is committed: a crash after this point resumes it
        await self.ctx.bus.publish(ALERTS, [f for f, _ in new])
        groups: dict[_Target, list[tuple[AlertFiredEvent, AlertRuleEvent]]] = defaultdict(list)
        for fired, rule in new:
            for channel in rule.channels:
                groups[(rule.owner, channel.type, channel.target)].append((fired, rule))
        # many rules of one owner firing at once on one target: one summary message instead of a flood
        limit = self.ctx.settings.alerts.alerts_summary_after
        summaries: dict[_Target, asyncio.Task[dict[str, Any]]] = {}
        for key, items in groups.items():
            if len(items) > limit:
                channel = next(c for c in items[0][1].channels if (c.type, c.target) == key[1:])
                summaries[key] = asyncio.create_task(self._notify(channel, self._summary(items)))
        for fired, rule in new:
            if rule.channels:
                await self._spawn(fired, rule, summaries)

    async def _spawn(
        self, fired: AlertFiredEvent, rule: AlertRuleEvent, summaries: dict[_Target, asyncio.Task[dict[str, Any]]]
    ) -> None:
        # bounded: when receivers are slow, consumption waits here instead of memory growing
        await self.slots.acquire()
        task = asyncio.create_task(self._deliver(fired, rule, summaries))
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed: %r", task.exception())

    async def _notify(self, channel: AlertChannel, msg: Message) -> dict[str, Any]:
        assert self.notifier is not None
        return await self.notifier.deliver(channel, msg)

    async def _deliver(
        self, fired: AlertFiredEvent, rule: AlertRuleEvent, summaries: dict[_Target, asyncio.Task[dict[str, Any]]]
    ) -> None:
        assert self.ctx is not None
        records = []
        # the task inherited the context of the batch that fired it: this span is a child of that handling
        with _tracer.start_as_current_span(
            "alert deliver",
            attributes={
                "tokenpulse.firing_id": fired.firing_id,
                "tokenpulse.rule_id": rule.rule_id,
                "tokenpulse.channels": len(rule.channels),
            },
        ) as span:
            for channel in rule.channels:
                summary = summaries.get((rule.owner, channel.type, channel.target))
                if summary is not None:
                    records.append(dict(await asyncio.shield(summary)))
                else:
                    records.append(await self._notify(channel, self._message(fired, rule)))
            span.set_attribute("tokenpulse.delivery.statuses", sorted({str(r["status"]) for r in records}))
        statuses = {r["status"] for r in records}
        status = "delivered" if statuses == {"delivered"} else "failed" if statuses == {"failed"} else "partial"
        final = AlertFiredEvent.model_validate(
            fired.model_dump()
            | {
                "status": status,
                "deliveries": records,
                "event_id": firing_event_id(fired.firing_id, status),
                "produced_at": datetime.now(UTC),
            }
        )
        self._remember(fired.firing_id, status)
        await self.ctx.bus.publish(ALERTS, [final])

    def _payload(self, fired: AlertFiredEvent, rule: AlertRuleEvent) -> dict[str, object]:
        return {
            "firing_id": fired.firing_id,
            "rule_id": rule.rule_id,
            "rule_name": rule.name,
            "symbol": fired.symbol,
            "condition": rule.condition.model_dump(exclude_none=True),
            "message": fired.message,
            "price": fired.price,
            "ts": _iso(fired.ts),
        }

    def _message(self, fired: AlertFiredEvent, rule: AlertRuleEvent) -> Message:
        when = _iso(fired.ts)
        return Message(
            title=f"Tokenpulse alert: {fired.symbol}",
            body=f"{fired.message} at {when}",
            payload={"type": "alert", "alerts": [self._payload(fired, rule)]},
            firing_ids=[fired.firing_id],
            owner=rule.owner,
        )

    def _summary(self, items: list[tuple[AlertFiredEvent, AlertRuleEvent]]) -> Message:
        lines = [f"• {f.message} at {_iso(f.ts)}" for f, _ in items[:50]]
        if len(items) > 50:
            lines.append(f"… and {len(items) - 50} more")
        return Message(
            title=f"Tokenpulse: {len(items)} alerts fired",
            body="\n".join(lines),
            payload={"type": "summary", "alerts": [self._payload(f, r) for f, r in items]},
            firing_ids=[f.firing_id for f, _ in items],
            owner=items[0][1].owner,
        )

    def stats(self) -> dict[str, float]:
        return {"evaluated": self.evaluated, "fired": self.fired, "in_flight": len(self.tasks), "at": time.time()}
