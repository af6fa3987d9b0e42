"""Alert rules API: ``POST/GET/DELETE /v1/alerts`` and the delivery log ``GET /v1/alerts/events``.

A rule belongs to the API key that created it. Creating or deleting a rule
publishes an ``AlertRuleEvent`` on the compacted ``tokenpulse.alert-rules.v1``
(Kafka is the source of truth the alerts service rebuilds from; a deletion is
followed by a tombstone) and writes the ``alert_rules`` table, which serves
the reads here (so a rule is visible to its owner as soon as it is created).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from tokenpulse_shared.channels import validate_channel
from tokenpulse_shared.events import AlertChannel, AlertCondition, AlertRuleEvent, new_event_id
from tokenpulse_shared.netguard import TargetRefused
from tokenpulse_shared.rule_table import UnreadableRule, decode_row, save, save_row
from tokenpulse_shared.topics import ALERT_RULES

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.cursors import FiringCursor, RuleCursor, decode, encode
from tokenpulse_gateway.deps import (
    Authed,
    BusDep,
    QueriesDep,
    RuleLocksDep,
    StoreDep,
    SymbolsDep,
    WebhooksDep,
    tier_for,
)
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.keys import ApiKey
from tokenpulse_gateway.queries.alerts import AlertQueries

router = APIRouter(tags=["alerts"], route_class=JsonBodyRoute)

RULE_EXAMPLE: dict[str, Any] = {
    "symbol": "BTC",
    "name": "BTC breaks 100k",
    "condition": {"kind": "price_above", "value": 100000},
    "channels": [{"type": "webhook", "target": "https://example.com/hooks/tokenpulse"}],
    "cooldown_s": 3600,
}


class RuleRequest(BaseModel):
    """A new rule. Every part is bounded by its model: the condition's nesting and checks
    (:class:`AlertCondition`), at most 10 channels of at most 2048 characters, a name of 200."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [RULE_EXAMPLE]})

    symbol: str = Field(min_length=1, max_length=15)
    condition: AlertCondition
    channels: list[AlertChannel] = Field(
        default_factory=list, max_length=10, description="where to notify; none = the delivery log and /v1/stream only"
    )
    cooldown_s: int = Field(300, ge=0, le=86400 * 30)
    name: str = Field("", max_length=200)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def rule_view(rule: AlertRuleEvent) -> dict[str, Any]:
    return {
        "id": rule.rule_id,
        "symbol": rule.symbol,
        "name": rule.name,
        "condition": rule.condition.model_dump(exclude_none=True),
        "description": rule.condition.describe(),
        "channels": [c.model_dump() for c in rule.channels],
        "cooldown_s": rule.cooldown_s,
        "created_at": _iso(rule.created_at),
        "readable": True,
    }


def unreadable_view(rule: UnreadableRule) -> dict[str, Any]:
    """What is known of a stored rule that cannot be read back: enough for its owner to delete it."""
    return {
        "id": rule.rule_id,
        "symbol": rule.symbol,
        "created_at": _iso(rule.created_at),
        "readable": False,
        "error": f"this rule cannot be read back and never fires ({rule.reason[:300]}); delete it",
    }


def view(rule: AlertRuleEvent | UnreadableRule) -> dict[str, Any]:
    return unreadable_view(rule) if isinstance(rule, UnreadableRule) else rule_view(rule)


def firing_view(row: tuple[Any, ...]) -> dict[str, Any]:
    firing_id, rule_id, symbol, ts_ms, price, message, status, deliveries = row
    return {
        "id": firing_id,
        "rule_id": rule_id,
        "symbol": symbol,
        "ts": _iso(datetime.fromtimestamp(ts_ms / 1000, UTC)),
        "price": price,
        "message": message,
        "status": status,
        "deliveries": json.loads(deliveries or "[]"),
    }


async def owned(alerts: AlertQueries, key: ApiKey, rule_id: str) -> AlertRuleEvent | UnreadableRule:
    row = await alerts.rule(key.key_id, rule_id)
    if row is None:
        raise ApiError(404, "unknown_rule", f"no alert rule {rule_id!r} among yours; see GET /v1/alerts")
    return decode_row(row)


@router.post(
    "/v1/alerts",
    status_code=201,
    summary="Create an alert rule",
    responses=ex.responses("alert_created", 201, 401, 403, 404, 422, 429),
)
async def create_rule(
    request: Request,
    key: Authed,
    body: RuleRequest,
    bus: BusDep,
    store: StoreDep,
    webhooks: WebhooksDep,
    queries: QueriesDep,
    symbols: SymbolsDep,
    locks: RuleLocksDep,
) -> dict[str, Any]:
    """Rule syntax (docs/alerts.md): `condition.kind` is one of `price_above`, `price_below`
    (`value`), `change_above`, `change_below` (`value` percent, `window` 5m|15m|1h|4h|24h),
    `trader_grade_above`/`_below`, `investor_grade_above`/`_below` (`value` 0..100), `grade_change`
    (`grade`, `value` points), `signal` (`direction` bullish|bearish|any), or `all`/`any` with a list.
    A rule fires when its condition turns true, then waits `cooldown_s`."""
    symbol = await symbols.resolve(body.symbol)
    for channel in body.channels:
        try:
            await asyncio.to_thread(validate_channel, channel, webhooks.allowlist)
        except (TargetRefused, ValueError) as exc:
            raise ApiError(422, "invalid_channel", str(exc)) from exc
    async with locks.of(key.key_id):  # the count check and the insert of one key's rules do not interleave
        limit = tier_for(request, key).max_alert_rules
        if await queries.alerts.rule_count(key.key_id) >= limit:
            raise ApiError(
                403, "rule_limit", f"your tier allows {limit} alert rules; delete one or upgrade the key's tier"
            )
        rule = AlertRuleEvent(
            rule_id="rule_" + secrets.token_hex(8),
            owner=key.key_id,
            symbol=symbol,
            condition=body.condition,
            channels=body.channels,
            cooldown_s=body.cooldown_s,
            name=body.name,
        )
        await save(store, rule)
    await bus.publish(ALERT_RULES, [rule])
    out = rule_view(rule)
    if any(c.type == "webhook" for c in rule.channels):
        out["webhook_secret"] = webhooks.secret_for(key.key_id)
    return out


@router.get("/v1/alerts", summary="Your alert rules", responses=ex.responses("alert_rules", 200, 400, 401, 429))
async def list_rules(
    key: Authed,
    queries: QueriesDep,
    symbol: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    after = decode(RuleCursor, cursor).rule_id if cursor else ""
    rows = await queries.alerts.rules(key.key_id, symbol.upper() if symbol else None, after, limit + 1)
    data = [view(decode_row(r)) for r in rows[:limit]]
    nxt = encode(RuleCursor(rule_id=rows[limit - 1][0])) if len(rows) > limit else None
    return {"data": data, "next_cursor": nxt}


@router.get(
    "/v1/alerts/events",
    summary="Fired alerts and their deliveries (newest first)",
    responses=ex.responses("alert_events", 200, 400, 401, 422, 429),
)
async def events(
    key: Authed,
    queries: QueriesDep,
    rule_id: str | None = None,
    status: Literal["pending", "delivered", "failed", "partial", "no_channels"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    before = decode(FiringCursor, cursor) if cursor else None
    rows = await queries.alerts.firings(
        key.key_id, rule_id, status, (before.ts, before.id) if before else None, limit + 1
    )
    data = [firing_view(r) for r in rows[:limit]]
    nxt = None
    if len(rows) > limit:
        nxt = encode(FiringCursor(ts=int(rows[limit - 1][3]), id=rows[limit - 1][0]))
    return {"data": data, "next_cursor": nxt}


@router.get(
    "/v1/alerts/{rule_id}",
    summary="One of your alert rules",
    responses=ex.responses("alert_rule", 200, 401, 404, 429),
)
async def get_rule(key: Authed, rule_id: str, queries: QueriesDep) -> dict[str, Any]:
    return view(await owned(queries.alerts, key, rule_id))


@router.delete(
    "/v1/alerts/{rule_id}",
    summary="Delete one of your alert rules",
    responses=ex.responses("alert_deleted", 200, 401, 404, 429),
)
async def delete_rule(key: Authed, rule_id: str, bus: BusDep, store: StoreDep, queries: QueriesDep) -> dict[str, Any]:
    rule = await owned(queries.alerts, key, rule_id)
    if isinstance(rule, UnreadableRule):  # no event can describe it: the row is marked, the topic's key deleted
        await save_row(store, rule.rule_id, rule.owner, rule.symbol, rule.payload, rule.created_at, True)
    else:
        gone = AlertRuleEvent.model_validate(
            rule.model_dump() | {"deleted": True, "event_id": new_event_id(), "produced_at": datetime.now(UTC)}
        )
        await save(store, gone)
        await bus.publish(ALERT_RULES, [gone])
    await bus.publish_tombstone(ALERT_RULES, rule.rule_id)
    return {"id": rule.rule_id, "deleted": True}
