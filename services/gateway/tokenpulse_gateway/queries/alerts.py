"""Alert rules and their firings, as their owner (an API key) reads them."""

from __future__ import annotations

from typing import Any

from tokenpulse_shared.rule_table import COLUMNS
from tokenpulse_shared.store import Store


class AlertQueries:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def rule(self, owner: str, rule_id: str) -> tuple[Any, ...] | None:
        """The stored row of one of ``owner``'s rules (``rule_table.COLUMNS``), None when it has none such."""
        rows = await self.store.query(
            f"SELECT {COLUMNS} FROM alert_rules FINAL "
            "WHERE rule_id = {r:String} AND owner = {o:String} AND deleted = 0",
            {"r": rule_id, "o": owner},
        )
        return rows[0] if rows else None

    async def rule_count(self, owner: str) -> int:
        rows = await self.store.query(
            "SELECT count() FROM alert_rules FINAL WHERE owner = {o:String} AND deleted = 0", {"o": owner}
        )
        return int(rows[0][0])

    async def rules(self, owner: str, symbol: str | None, after: str, limit: int) -> list[tuple[Any, ...]]:
        """``owner``'s rules by id after ``after``, of one symbol or all."""
        return await self.store.query(
            f"SELECT {COLUMNS} FROM alert_rules FINAL WHERE owner = {{o:String}} AND deleted = 0 "
            "AND rule_id > {a:String} AND ({s:Nullable(String)} IS NULL OR symbol = {s:Nullable(String)}) "
            "ORDER BY rule_id LIMIT {n:UInt32}",
            {"o": owner, "a": after, "s": symbol, "n": limit},
        )

    async def firings(
        self, owner: str, rule_id: str | None, status: str | None, before: tuple[int, str] | None, limit: int
    ) -> list[tuple[Any, ...]]:
        """``owner``'s firings, newest first, before (time ms, firing id) when given."""
        return await self.store.query(
            "SELECT firing_id, rule_id, symbol, toUnixTimestamp64Milli(ts) AS t, price, message, status, deliveries "
            "FROM alert_firings FINAL WHERE owner = {o:String} "
            "AND ({r:Nullable(String)} IS NULL OR rule_id = {r:Nullable(String)}) "
            "AND ({st:Nullable(String)} IS NULL OR status = {st:Nullable(String)}) "
            "AND ({bt:Nullable(Int64)} IS NULL OR (t, firing_id) < ({bt:Nullable(Int64)}, {bf:String})) "
            "ORDER BY t DESC, firing_id DESC LIMIT {n:UInt32}",
            {
                "o": owner,
                "r": rule_id,
                "st": status,
                "bt": before[0] if before else None,
                "bf": before[1] if before else "",
                "n": limit,
            },
        )
