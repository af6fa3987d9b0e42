"""The ``alert_rules`` table: how the gateway writes a rule, and how the gateway (its rule API) and the
alerts service (embedded mode's source of rules) read it back.

A stored rule is read by the function that reads a rule message on ``tokenpulse.alert-rules.v1``
(:func:`~tokenpulse_shared.bus.base.decode_message`), so the table and the topic accept exactly the same
records. A row that cannot be read (left by an older version, or damaged) is an :class:`UnreadableRule`
with the reason, never an exception: its owner still sees and deletes it, the alerts service quarantines it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tokenpulse_shared.bus.base import RawMessage, decode_message
from tokenpulse_shared.events import AlertRuleEvent
from tokenpulse_shared.store import Store
from tokenpulse_shared.topics import ALERT_RULES

COLUMNS = "rule_id, owner, symbol, created_at, rule"  # the order decode_row reads


@dataclass(frozen=True)
class UnreadableRule:
    """A stored rule that does not read back as an :class:`AlertRuleEvent`: what its columns still say."""

    rule_id: str
    owner: str
    symbol: str
    created_at: datetime
    reason: str
    payload: str

    def raw(self) -> RawMessage:
        """The record as a wire message keyed by its rule id (what a dead letter carries)."""
        return RawMessage(value=self.payload.encode(), key=self.rule_id)


def decode_row(row: tuple[Any, ...]) -> AlertRuleEvent | UnreadableRule:
    """A row selected with :data:`COLUMNS`: the rule, or what is known of it and why it cannot be read."""
    rule_id, owner, symbol, created_at, text = row
    try:
        rule = decode_message(ALERT_RULES, RawMessage(value=text.encode()))
    except ValueError as exc:
        at = created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at
        return UnreadableRule(rule_id, owner, symbol, at, str(exc), text)
    assert isinstance(rule, AlertRuleEvent)
    return rule


async def save(store: Store, rule: AlertRuleEvent) -> None:
    await save_row(store, rule.rule_id, rule.owner, rule.symbol, rule.model_dump_json(), rule.created_at, rule.deleted)


async def save_row(
    store: Store, rule_id: str, owner: str, symbol: str, text: str, created_at: datetime, deleted: bool
) -> None:
    """Write one version of a rule's row (the newest version of a rule id wins)."""
    await store.insert(
        "alert_rules",
        [[rule_id], [owner], [symbol], [text], [created_at], [int(deleted)], [time.time_ns()]],
        ["rule_id", "owner", "symbol", "rule", "created_at", "deleted", "version"],
        interactive=True,
    )
