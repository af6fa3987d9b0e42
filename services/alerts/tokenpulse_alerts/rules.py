"""Rule evaluation: an index of rules per token, and edge-triggered firing.

Cost per event does not grow with the rules of other tokens, nor with the
price rules a move does not cross:

* a plain ``price_above`` / ``price_below`` rule sits in a sorted list of levels
  per token; a move from ``p0`` to ``p1`` finds the crossed levels by bisection
  (``O(log n + crossed)``). ``p0`` is the event's ``prev_price`` when ingest
  sends it, so a crossing is decided from the event alone — the same answer
  after a restart or a redelivery;
* a plain percent-change rule sits in a sorted list of thresholds per token and
  window; the change itself "crosses" them, found by bisection the same way;
* every other rule (grades, signals, combinations) is kept in the token's list
  of *compound* rules and re-evaluated on that token's grade or signal events;
  on a price event only the combinations whose price levels were crossed (or
  that read a percent change) are. Leaves are three-valued (unknown until
  their input has been seen), and a rule fires when its whole condition turns
  from false to true.

A firing is identified by ``firing_id(rule, triggering event)``: replaying the
same trigger produces the same id, which the service uses to notify once.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tokenpulse_shared.events import (
    CHANGE_WINDOWS_S,
    AlertCondition,
    AlertRuleEvent,
    GradeEvent,
    PriceEvent,
    SignalEvent,
)

MAX_WINDOW_S = max(CHANGE_WINDOWS_S.values())


def firing_id(rule_id: str, trigger_event_id: str) -> str:
    return hashlib.sha256(f"{rule_id}|{trigger_event_id}".encode()).hexdigest()[:32]


def firing_event_id(fid: str, status: str) -> str:
    """The event id of a firing's event: the firing, then its delivery outcome, each once. Deterministic,
    so a firing (or an outcome) published again after a restart is the same event, counted once."""
    return f"fire-{fid}-{status}"


@dataclass
class TokenState:
    """What the evaluator knows of one token: latest price and its recent history, grades, signal."""

    price: float | None = None
    ts: float | None = None
    # one sample per second over the longest window: lists with a moving start (``head``), trimmed in
    # halves; bisection on a deque indexed it O(n) per probe, half of an event's evaluation cost
    times: list[float] = field(default_factory=list)
    prices: list[float] = field(default_factory=list)
    head: int = 0
    trader: float | None = None
    investor: float | None = None
    trader_delta: float | None = None
    investor_delta: float | None = None
    signal: str | None = None

    def add_price(self, ts: float, price: float) -> None:
        self.price, self.ts = price, ts
        times = self.times
        if len(times) > self.head and ts - times[-1] < 1.0:  # keep at most one sample per second
            if ts >= times[-1]:
                self.prices[-1] = price
            return
        times.append(ts)
        self.prices.append(price)
        horizon = ts - MAX_WINDOW_S - 60
        head = self.head
        while head < len(times) and times[head] < horizon:
            head += 1
        if head > 1024 and head * 2 > len(times):
            del times[:head], self.prices[:head]
            head = 0
        self.head = head

    def price_at(self, ts: float) -> float | None:
        """The last price at or before ``ts`` (None when the history does not reach back that far)."""
        times = self.times
        if len(times) <= self.head or times[self.head] > ts:
            return None
        return self.prices[bisect_right(times, ts, self.head) - 1]

    def change_pct(self, window: str) -> float | None:
        if self.price is None or self.ts is None:
            return None
        ref = self.price_at(self.ts - CHANGE_WINDOWS_S[window])
        return None if not ref else (self.price / ref - 1.0) * 100.0


def evaluate(cond: AlertCondition, st: TokenState) -> bool | None:
    """Three-valued: None when an input the condition needs has not been seen yet."""
    k = cond.kind
    if k == "all":
        values = [evaluate(c, st) for c in cond.all or []]
        return False if False in values else (None if None in values else True)
    if k == "any":
        values = [evaluate(c, st) for c in cond.any or []]
        return True if True in values else (None if None in values else False)
    v = cond.value
    if k == "price_above" or k == "price_below":
        if st.price is None or v is None:
            return None
        return st.price > v if k == "price_above" else st.price < v
    if k == "change_above" or k == "change_below":
        change = st.change_pct(cond.window or "1h")
        if change is None or v is None:
            return None
        return change >= v if k == "change_above" else change <= -v
    if k == "signal":
        return st.signal is not None and (cond.direction == "any" or st.signal == cond.direction)
    if k == "grade_change":
        delta = st.trader_delta if cond.grade == "trader" else st.investor_delta
        return delta is not None and v is not None and abs(delta) >= v  # no move seen yet: has not moved
    grade = st.trader if k.startswith("trader") else st.investor
    if grade is None or v is None:
        return None
    return grade > v if k.endswith("_above") else grade < v


def inputs_of(cond: AlertCondition) -> set[str]:
    """Which streams can change the condition: 'price', 'grade', 'signal'."""
    if cond.kind in ("all", "any"):
        out: set[str] = set()
        for c in getattr(cond, cond.kind) or []:
            out |= inputs_of(c)
        return out
    if cond.kind == "signal":
        return {"signal"}
    if "grade" in cond.kind:
        return {"grade"}
    return {"price"}


@dataclass(frozen=True)
class Hit:
    rule: AlertRuleEvent
    trigger_event_id: str
    ts: float
    price: float | None
    detail: str


class _Trigger:
    """The event a rule fires on: its time and price, and its id, made once and only when asked for."""

    __slots__ = ("_id", "_make_id", "price", "ts")

    def __init__(self, make_id: Callable[[], str], ts: float = 0.0, price: float | None = None) -> None:
        self._make_id, self._id = make_id, ""
        self.ts, self.price = ts, price

    @classmethod
    def of(cls, event_id: str) -> _Trigger:
        return cls(lambda: event_id)

    def event_id(self) -> str:
        if not self._id:
            self._id = self._make_id()
        return self._id


class Levels:
    """Rule ids sorted by a number (a price level, a change threshold): two parallel lists and bisection.
    (sortedcontainers' ``irange_key`` cost three times as much per lookup; a token holds ~10^4 levels,
    so an insertion's memmove is cheap.)"""

    __slots__ = ("ids", "keys")

    def __init__(self) -> None:
        self.keys: list[float] = []
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: float, rule_id: str) -> None:
        i = bisect_right(self.keys, key)
        self.keys.insert(i, key)
        self.ids.insert(i, rule_id)

    def discard(self, key: float, rule_id: str) -> None:
        i = bisect_left(self.keys, key)
        while i < len(self.keys) and self.keys[i] == key:
            if self.ids[i] == rule_id:
                del self.keys[i], self.ids[i]
                return
            i += 1

    def between(self, lo: float, hi: float, lo_closed: bool, hi_closed: bool) -> list[tuple[float, str]]:
        keys = self.keys
        i = bisect_left(keys, lo) if lo_closed else bisect_right(keys, lo)
        j = bisect_right(keys, hi) if hi_closed else bisect_left(keys, hi)
        return list(zip(keys[i:j], self.ids[i:j], strict=True)) if i < j else []


def price_levels(cond: AlertCondition) -> list[float] | None:
    """The price levels of a condition's price leaves; None when a percent-change leaf makes it depend
    on every price (such a combination is re-evaluated on every price of its token)."""
    if cond.kind in ("all", "any"):
        out: list[float] = []
        for c in getattr(cond, cond.kind) or []:
            sub = price_levels(c)
            if sub is None:
                return None
            out += sub
        return out
    if cond.kind.startswith("change_"):
        return None
    if cond.kind in ("price_above", "price_below") and cond.value is not None:
        return [cond.value]
    return []


class RuleBook:
    """All active rules, indexed per token, with the state edge-triggering needs.

    Indexes (per token): sorted levels of plain price rules (``above``/``below``); sorted thresholds
    of plain percent-change rules per window (``up``/``down``, crossed by the change itself); the
    price levels of combinations (``guards``): on a price event a combination can only change value
    when one of its levels is crossed, so only those are re-evaluated (``every`` holds the few whose
    percent-change leaves make them depend on each price).
    """

    def __init__(self) -> None:
        self.rules: dict[str, AlertRuleEvent] = {}
        self.versions: dict[str, float] = {}  # rule id -> produced_at of the newest event applied (deletions too)
        self.above: dict[str, Levels] = {}
        self.below: dict[str, Levels] = {}
        self.up: dict[tuple[str, str], Levels] = {}
        self.down: dict[tuple[str, str], Levels] = {}
        self.changes: dict[tuple[str, str], float | None] = {}  # last change per (token, window)
        self.compound: dict[str, dict[str, AlertRuleEvent]] = {}
        self.guards: dict[str, Levels] = {}
        self.every: dict[str, dict[str, AlertRuleEvent]] = {}
        self.was: dict[str, bool | None] = {}
        self.inputs: dict[str, set[str]] = {}
        self.tokens: dict[str, TokenState] = {}
        self.last_fired: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.rules)

    def token(self, symbol: str) -> TokenState:
        st = self.tokens.get(symbol)
        if st is None:
            st = self.tokens[symbol] = TokenState()
        return st

    # ---- rule changes -------------------------------------------------------------------------
    def apply(self, event: AlertRuleEvent) -> bool:
        """Apply a rule event unless it or a newer one for the same rule was applied already (replays are no-ops)."""
        at = event.produced_at.timestamp()
        if at <= self.versions.get(event.rule_id, float("-inf")):
            return False
        self.versions[event.rule_id] = at
        self._remove(event.rule_id)
        if not event.deleted:
            self._add(event)
        return True

    def _slot(self, rule: AlertRuleEvent) -> tuple[dict[Any, Levels], Any, float] | None:
        """Where a plain (single-check) price or change rule is indexed, and under which number."""
        c = rule.condition
        if c.value is None:
            return None
        if c.kind == "price_above":
            return self.above, rule.symbol, c.value
        if c.kind == "price_below":
            return self.below, rule.symbol, c.value
        if c.kind == "change_above":
            return self.up, (rule.symbol, c.window), c.value
        if c.kind == "change_below":
            return self.down, (rule.symbol, c.window), -c.value
        return None

    def _add(self, rule: AlertRuleEvent) -> None:
        self.rules[rule.rule_id] = rule
        slot = self._slot(rule)
        if slot is not None:
            book, key, number = slot
            book.setdefault(key, Levels()).add(number, rule.rule_id)
            if key not in self.changes and isinstance(key, tuple):
                self.changes[key] = self.token(rule.symbol).change_pct(key[1])
            return
        self.compound.setdefault(rule.symbol, {})[rule.rule_id] = rule
        self.inputs[rule.rule_id] = inputs_of(rule.condition)
        self.was[rule.rule_id] = evaluate(rule.condition, self.token(rule.symbol))
        if "price" in self.inputs[rule.rule_id]:
            levels = price_levels(rule.condition)
            if levels is None:
                self.every.setdefault(rule.symbol, {})[rule.rule_id] = rule
            else:
                guards = self.guards.setdefault(rule.symbol, Levels())
                for level in levels:
                    guards.add(level, rule.rule_id)

    def _remove(self, rule_id: str) -> None:
        old = self.rules.pop(rule_id, None)
        if old is None:
            return
        slot = self._slot(old)
        if slot is not None:
            book, key, number = slot
            if key in book:
                book[key].discard(number, rule_id)
            return
        self.compound.get(old.symbol, {}).pop(rule_id, None)
        self.every.get(old.symbol, {}).pop(rule_id, None)
        for level in price_levels(old.condition) or []:
            if old.symbol in self.guards:
                self.guards[old.symbol].discard(level, rule_id)
        self.was.pop(rule_id, None)
        self.inputs.pop(rule_id, None)

    # ---- events -------------------------------------------------------------------------------
    def on_price(self, ev: PriceEvent) -> list[Hit]:
        return self.on_price_row(ev.symbol, ev.ts.timestamp(), ev.price, ev.prev_price, lambda: ev.event_id)

    def on_price_row(
        self, sym: str, ts: float, p1: float, prev_price: float | None, event_id: Callable[[], str]
    ) -> list[Hit]:
        """One price (``ts`` in epoch seconds); ``event_id`` gives the price's identity, asked for only when a
        rule fires (a v2 row's id is a digest of its content, too costly to make for every row)."""
        st = self.token(sym)
        if st.ts is not None and ts < st.ts:
            return []  # older than what this token's state already holds (redelivery, late copy)
        before = st.price
        p0 = prev_price if prev_price is not None else before
        st.add_price(ts, p1)
        trigger = _Trigger(event_id, ts, p1)
        hits: list[Hit] = []
        if p0 is not None and p1 != p0:
            if p1 > p0 and sym in self.above:  # levels in [p0, p1): price went from <= level to > level
                hits += self._crossed(self.above[sym].between(p0, p1, True, False), trigger, partial(_above, p1))
            if p1 < p0 and sym in self.below:  # levels in (p1, p0]: from >= level to < level
                hits += self._crossed(self.below[sym].between(p1, p0, False, True), trigger, partial(_below, p1))
        for window in CHANGE_WINDOWS_S:
            key = (sym, window)
            if key not in self.changes:
                continue
            prev, cur = self.changes[key], st.change_pct(window)
            self.changes[key] = cur
            if prev is None or cur is None or prev == cur:
                continue
            if cur > prev and key in self.up:  # thresholds in (prev, cur]: change went from < v to >= v
                hits += self._crossed(self.up[key].between(prev, cur, False, True), trigger, partial(_up, window, cur))
            if cur < prev and key in self.down:  # -v in [cur, prev): change went from > -v to <= -v
                falls = self.down[key].between(cur, prev, True, False)
                hits += self._crossed(falls, trigger, partial(_down, window, cur))
        if sym in self.compound:
            if before is None:  # first price of the token: every combination reading prices is evaluated once
                candidates: Iterable[str] = [r for r in self.compound[sym] if "price" in self.inputs[r]]
            else:
                lo, hi = min(before, p1), max(before, p1)
                crossed = {r for _, r in self.guards[sym].between(lo, hi, True, True)} if sym in self.guards else set()
                candidates = crossed | set(self.every.get(sym, ()))
            hits.extend(self._cooled(self._evaluate(sym, candidates, trigger, ts, p1)))
        return hits

    def _crossed(
        self, crossed: Iterable[tuple[float, str]], trigger: _Trigger, reason: Callable[[float], str]
    ) -> list[Hit]:
        """Hits of the rules whose level was crossed, past their cooldown: checked before a hit is built, as
        in a choppy market most crossings are inside it."""
        hits = []
        rules, last_fired, ts = self.rules, self.last_fired, trigger.ts
        for level, rule_id in crossed:
            rule = rules[rule_id]
            last = last_fired.get(rule_id)
            if last is None or ts - last >= rule.cooldown_s:
                last_fired[rule_id] = ts
                hits.append(Hit(rule, trigger.event_id(), ts, trigger.price, reason(level)))
        return hits

    def on_grade(self, ev: GradeEvent) -> list[Hit]:
        st = self.token(ev.symbol)
        if ev.trader_grade is not None:
            st.trader_delta = None if st.trader is None else ev.trader_grade - st.trader
            st.trader = ev.trader_grade
        if ev.investor_grade is not None:
            st.investor_delta = None if st.investor is None else ev.investor_grade - st.investor
            st.investor = ev.investor_grade
        return self._cooled(self._compound(ev.symbol, "grade", _Trigger.of(ev.event_id), ev.ts.timestamp(), st.price))

    def on_signal(self, ev: SignalEvent) -> list[Hit]:
        if ev.interval != "1d":
            return []  # rules see a token's daily signal (every tier's); intraday ones are an API feature
        st = self.token(ev.symbol)
        if ev.retracted:  # withdrawn by a recomputation: no latest signal until the next one
            if st.signal == ev.direction.value:
                st.signal = None
            return []
        st.signal = ev.direction.value
        # each signal is an event of its own: a rule on signals may fire again on the next one
        for rule_id in self.compound.get(ev.symbol, {}):
            if "signal" in self.inputs[rule_id] and self.was.get(rule_id) is True:
                self.was[rule_id] = False
        return self._cooled(self._compound(ev.symbol, "signal", _Trigger.of(ev.event_id), ev.ts.timestamp(), st.price))

    def _compound(self, symbol: str, stream: str, trigger: _Trigger, ts: float, price: float | None) -> list[Hit]:
        rules = self.compound.get(symbol)
        if not rules:
            return []
        return self._evaluate(symbol, [r for r in rules if stream in self.inputs[r]], trigger, ts, price)

    def _evaluate(
        self, symbol: str, rule_ids: Iterable[str], trigger: _Trigger, ts: float, price: float | None
    ) -> list[Hit]:
        st = self.tokens[symbol]
        hits = []
        for rule_id in rule_ids:
            rule = self.rules[rule_id]
            now = evaluate(rule.condition, st)
            before = self.was.get(rule_id)
            self.was[rule_id] = now
            if now is True and before is False:
                hits.append(Hit(rule, trigger.event_id(), ts, price, rule.condition.describe()))
        return hits

    def _cooled(self, hits: list[Hit]) -> list[Hit]:
        out = []
        for hit in hits:
            last = self.last_fired.get(hit.rule.rule_id)
            if last is not None and hit.ts - last < hit.rule.cooldown_s:
                continue
            self.last_fired[hit.rule.rule_id] = hit.ts
            out.append(hit)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "rules": len(self.rules),
            "price_levels": sum(len(v) for v in self.above.values()) + sum(len(v) for v in self.below.values()),
            "change_thresholds": sum(len(v) for v in self.up.values()) + sum(len(v) for v in self.down.values()),
            "compound": sum(len(v) for v in self.compound.values()),
        }


def _above(now: float, level: float) -> str:
    return f"crossed above {level:g} (now {now:g})"


def _below(now: float, level: float) -> str:
    return f"crossed below {level:g} (now {now:g})"


def _up(window: str, cur: float, v: float) -> str:
    return f"up {cur:.2f}% in {window} (≥ {v:g}%)"


def _down(window: str, cur: float, v: float) -> str:
    return f"down {-cur:.2f}% in {window} (≥ {-v:g}%)"
