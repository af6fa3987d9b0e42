"""The alerts service (v0): rules from the compacted rules topic, evaluated on reference prices.

Rules are rebuilt from ``tokenpulse.alert-rules.v1`` at every start: the
compacted topic is read whole by every instance (a broadcast subscription, no
committed offsets), so Kafka is the source of truth and any replica can start
cold. Prices are consumed in the shared group, partitioned by symbol, so with
several replicas each evaluates the rules of the symbols it was assigned. v0 evaluates ``price_above`` /
``price_below`` crossings with a cooldown and publishes fired alerts on
``tokenpulse.alerts.v1``; delivery channels come with issue #7.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from tokenpulse_shared.events import AlertCondition, AlertFiredEvent, AlertRuleEvent, PriceEvent
from tokenpulse_shared.service import Context
from tokenpulse_shared.topics import ALERT_RULES, ALERTS, PRICES

log = logging.getLogger(__name__)


def holds(condition: AlertCondition, price: float) -> bool:
    if condition.kind == "price_above":
        return condition.value is not None and price > condition.value
    if condition.kind == "price_below":
        return condition.value is not None and price < condition.value
    if condition.kind == "all":
        return all(holds(c, price) for c in condition.all or [])
    if condition.kind == "any":
        return any(holds(c, price) for c in condition.any or [])
    return False


class AlertsService:
    name = "alerts"

    def __init__(self, seen_capacity: int = 100_000) -> None:
        self.ctx: Context | None = None
        self.rules: dict[str, AlertRuleEvent] = {}
        self.state: dict[str, bool] = {}
        self.last_fired: dict[str, float] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_capacity = seen_capacity

    def register(self, ctx: Context) -> None:
        self.ctx = ctx
        ctx.bus.subscribe(ALERT_RULES, self.name, self.on_rules, broadcast=True)
        ctx.bus.subscribe(PRICES, self.name, self.on_prices)

    async def on_rules(self, rules: list[AlertRuleEvent]) -> None:
        for rule in rules:
            if rule.deleted:
                self.rules.pop(rule.rule_id, None)
                self.state.pop(rule.rule_id, None)
            else:
                self.rules[rule.rule_id] = rule

    def _first_time(self, event_id: str) -> bool:
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        if len(self._seen) > self._seen_capacity:
            self._seen.popitem(last=False)
        return True

    async def on_prices(self, prices: list[PriceEvent]) -> None:
        assert self.ctx is not None
        fired = []
        for price in prices:
            if not self._first_time(price.event_id):
                continue
            for rule in self.rules.values():
                if rule.symbol != price.symbol:
                    continue
                now_holds = holds(rule.condition, price.price)
                was = self.state.get(rule.rule_id)
                self.state[rule.rule_id] = now_holds
                if not now_holds or was is not False:
                    continue  # fire on the transition into the condition only
                ts = price.ts.timestamp()
                if ts - self.last_fired.get(rule.rule_id, float("-inf")) < rule.cooldown_s:
                    continue
                self.last_fired[rule.rule_id] = ts
                fired.append(
                    AlertFiredEvent(
                        rule_id=rule.rule_id,
                        owner=rule.owner,
                        symbol=rule.symbol,
                        ts=price.ts,
                        price=price.price,
                        message=f"{rule.symbol} {rule.condition.kind} {rule.condition.value}: now {price.price:g}",
                    )
                )
        if fired:
            await self.ctx.bus.publish(ALERTS, fired)

    async def start(self, ctx: Context) -> None:
        return None

    async def stop(self) -> None:
        return None
