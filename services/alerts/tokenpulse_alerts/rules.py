"""Rule evaluation: an index of rules per token, and edge-triggered firing.

Cost per event does not grow with the rules of other tokens, nor with the
price rules a move does not cross:

* a plain ``price_above`` / ``price_below`` rule sits in a sorted list of levels
  per token; a move from ``p0`` to ``p1`` finds the crossed levels by bisection
  (``O(log n + crossed)``). ``p0`` is the event's ``prev_price`` when ingest
  sends it, so a crossing is decided from the event alone — the same answer
  after a restart or a redelivery;
* every other rule (percent change, grades, signals, combinations) is kept in
  the token's list of *compound* rules and re-evaluated on that token's events
  only. Its leaves are three-valued (unknown until their input has been seen),
  and the rule fires when the whole condition turns from false to true.

A firing is identified by ``firing_id(rule, triggering event)``: replaying the
same trigger produces the same id, which the service uses to notify once.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedKeyList
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


@dataclass
class TokenState:
    """What the evaluator knows of one token: latest price and its recent history, grades, signal."""

    price: float | None = None
    ts: float | None = None
    times: deque[float] = field(default_factory=deque)
    prices: deque[float] = field(default_factory=deque)
    trader: float | None = None
    investor: float | None = None
    trader_delta: float | None = None
    investor_delta: float | None = None
    signal: str | None = None

    def add_price(self, ts: float, price: float) -> None:
        self.price, self.ts = price, ts
        if self.times and ts - self.times[-1] < 1.0:  # keep at most one sample per second
            if ts >= self.times[-1]:
                self.prices[-1] = price
            return
        self.times.append(ts)
        self.prices.append(price)
        horizon = ts - MAX_WINDOW_S - 60
        while self.times and self.times[0] < horizon:
            self.times.popleft()
            self.prices.popleft()

    def price_at(self, ts: float) -> float | None:
        """The last price at or before ``ts`` (None when the history does not reach back that far)."""
        if not self.times or self.times[0] > ts:
            return None
        i = bisect_right(self.times, ts) - 1
        return self.prices[i]

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


def _level(item: tuple[float, str]) -> float:
    return item[0]


class RuleBook:
    """All active rules, indexed per token, with the state edge-triggering needs."""

    def __init__(self) -> None:
        self.rules: dict[str, AlertRuleEvent] = {}
        self.versions: dict[str, float] = {}  # rule id -> produced_at of the newest event applied (deletions too)
        self.above: dict[str, SortedKeyList] = {}
        self.below: dict[str, SortedKeyList] = {}
        self.compound: dict[str, dict[str, AlertRuleEvent]] = {}
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
        """Apply a rule event unless a newer one for the same rule was applied already."""
        at = event.produced_at.timestamp()
        if at < self.versions.get(event.rule_id, float("-inf")):
            return False
        self.versions[event.rule_id] = at
        self._remove(event.rule_id)
        if not event.deleted:
            self._add(event)
        return True

    def _add(self, rule: AlertRuleEvent) -> None:
        self.rules[rule.rule_id] = rule
        kind, value = rule.condition.kind, rule.condition.value
        if kind in ("price_above", "price_below") and value is not None:
            book = self.above if kind == "price_above" else self.below
            book.setdefault(rule.symbol, SortedKeyList(key=_level)).add((value, rule.rule_id))
        else:
            self.compound.setdefault(rule.symbol, {})[rule.rule_id] = rule
            self.inputs[rule.rule_id] = inputs_of(rule.condition)
            self.was[rule.rule_id] = evaluate(rule.condition, self.token(rule.symbol))

    def _remove(self, rule_id: str) -> None:
        old = self.rules.pop(rule_id, None)
        if old is None:
            return
        kind, value = old.condition.kind, old.condition.value
        if kind in ("price_above", "price_below") and value is not None:
            book = self.above if kind == "price_above" else self.below
            levels = book.get(old.symbol)
            if levels is not None:
                levels.discard((value, rule_id))
        else:
            self.compound.get(old.symbol, {}).pop(rule_id, None)
            self.was.pop(rule_id, None)
            self.inputs.pop(rule_id, None)

    # ---- events -------------------------------------------------------------------------------
    def on_price(self, ev: PriceEvent) -> list[Hit]:
        st = self.token(ev.symbol)
        ts = ev.ts.timestamp()
        if st.ts is not None and ts < st.ts:
            return []  # older than what this token's state already holds (redelivery, late copy)
        p0 = ev.prev_price if ev.prev_price is not None else st.price
        p1 = ev.price
        st.add_price(ts, p1)
        hits: list[Hit] = []
        if p0 is not None and p1 != p0:
            if p1 > p0 and ev.symbol in self.above:  # levels in [p0, p1): price went from <= level to > level
                for level, rule_id in self.above[ev.symbol].irange_key(p0, p1, inclusive=(True, False)):
                    hits.append(Hit(self.rules[rule_id], ev.event_id, ts, p1, f"crossed above {level:g} (now {p1:g})"))
            if p1 < p0 and ev.symbol in self.below:  # levels in (p1, p0]: from >= level to < level
                for level, rule_id in self.below[ev.symbol].irange_key(p1, p0, inclusive=(False, True)):
                    hits.append(Hit(self.rules[rule_id], ev.event_id, ts, p1, f"crossed below {level:g} (now {p1:g})"))
        hits.extend(self._compound(ev.symbol, "price", ev.event_id, ts, p1))
        return self._cooled(hits)

    def on_grade(self, ev: GradeEvent) -> list[Hit]:
        st = self.token(ev.symbol)
        if ev.trader_grade is not None:
            st.trader_delta = None if st.trader is None else ev.trader_grade - st.trader
            st.trader = ev.trader_grade
        if ev.investor_grade is not None:
            st.investor_delta = None if st.investor is None else ev.investor_grade - st.investor
            st.investor = ev.investor_grade
        return self._cooled(self._compound(ev.symbol, "grade", ev.event_id, ev.ts.timestamp(), st.price))

    def on_signal(self, ev: SignalEvent) -> list[Hit]:
        st = self.token(ev.symbol)
        st.signal = ev.direction.value
        # each signal is an event of its own: a rule on signals may fire again on the next one
        for rule_id in self.compound.get(ev.symbol, {}):
            if "signal" in self.inputs[rule_id] and self.was.get(rule_id) is True:
                self.was[rule_id] = False
        return self._cooled(self._compound(ev.symbol, "signal", ev.event_id, ev.ts.timestamp(), st.price))

    def _compound(self, symbol: str, stream: str, event_id: str, ts: float, price: float | None) -> list[Hit]:
        rules = self.compound.get(symbol)
        if not rules:
            return []
        st = self.tokens[symbol]
        hits = []
        for rule in rules.values():
            if stream not in self.inputs[rule.rule_id]:
                continue
            now = evaluate(rule.condition, st)
            before = self.was.get(rule.rule_id)
            self.was[rule.rule_id] = now
            if now is True and before is False:
                hits.append(Hit(rule, event_id, ts, price, rule.condition.describe()))
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
            "compound": sum(len(v) for v in self.compound.values()),
        }
