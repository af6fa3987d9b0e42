"""``/v1/tokens`` over a whole universe: sort, filter and keyset pages over the rows held in memory.

A page ends at a row; its cursor holds that row's sort value and symbol (the key the list is ordered by)
and a fingerprint of the query, so the next page starts right after it however the rows moved in between,
and a cursor sent with another sort or filter is refused rather than silently skipping rows. Rows without
a value for the sort field (no grade yet, no market cap) come last in both directions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from tokenpulse_gateway.cursors import TokenCursor, decode, encode
from tokenpulse_gateway.errors import ApiError

SORT_FIELDS = ("symbol", "market_cap", "volume_24h", "change_24h", "trader_grade", "investor_grade")
SORTS = ", ".join(f"{f}, -{f}" for f in SORT_FIELDS)
MAX_Q = 50

SortKey = tuple[int, float, str]
"""(1 when the value is missing, the value (negated when descending), symbol)"""


@dataclass(frozen=True)
class TokenQuery:
    """One ``/v1/tokens`` request's sort and filters, checked."""

    field: str = "symbol"
    descending: bool = False
    q: str | None = None
    min_trader_grade: float | None = None
    signal: Literal["bullish", "bearish"] | None = None

    @classmethod
    def parse(
        cls, sort: str, q: str | None, min_trader_grade: float | None, signal: Literal["bullish", "bearish"] | None
    ) -> TokenQuery:
        field = sort.removeprefix("-")
        if field not in SORT_FIELDS:
            raise ApiError(400, "invalid_sort", f"sort must be one of {SORTS} (a leading - for descending)")
        text = q.strip().casefold() if q is not None else None
        if text is not None and (len(text) > MAX_Q or not text.isprintable()):
            raise ApiError(400, "invalid_query", f"q: at most {MAX_Q} printable characters")
        return cls(field, sort.startswith("-"), text or None, min_trader_grade, signal)

    @property
    def fingerprint(self) -> str:
        text = repr((self.field, self.descending, self.q, self.min_trader_grade, self.signal))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def keep(self, row: dict[str, Any]) -> bool:
        if self.q is not None and self.q not in row["symbol"].casefold() and self.q not in row["name"].casefold():
            return False
        if self.min_trader_grade is not None and (row["trader_grade"] or -1.0) < self.min_trader_grade:
            return False
        return self.signal is None or (row["signal"] or {}).get("direction") == self.signal

    def key(self, value: float | None, symbol: str) -> SortKey:
        if value is None:
            return (1, 0.0, symbol)
        return (0, -value if self.descending else value, symbol)

    def key_of(self) -> Callable[[dict[str, Any]], SortKey]:
        if self.field == "symbol":
            return lambda row: (0, 0.0, row["symbol"])
        name = self.field
        return lambda row: self.key(row[name], row["symbol"])


def rank(rows: list[dict[str, Any]], query: TokenQuery) -> list[dict[str, Any]]:
    """``rows`` (each with every sort field) in the order of ``query``'s sort, unfiltered."""
    ranked = sorted(rows, key=query.key_of())
    if query.field == "symbol" and query.descending:
        ranked.reverse()
    return ranked


def page(ranked: list[dict[str, Any]], query: TokenQuery, limit: int, cursor: str | None) -> dict[str, Any]:
    """One page of ``ranked`` (rows in the order of ``query``'s sort: :func:`rank`), filtered by ``query``."""
    key = query.key_of()
    chosen = [r for r in ranked if query.keep(r)]
    if cursor:
        after = decode(TokenCursor, cursor)
        if after.f != query.fingerprint:
            raise ApiError(400, "invalid_cursor", "this cursor belongs to another sort or filter; start without it")
        chosen = [r for r in chosen if _after(query, key(r), after)]
    shown = chosen[:limit]
    nxt = None
    if len(chosen) > limit:
        last = shown[-1]
        value = None if query.field == "symbol" else last[query.field]
        nxt = encode(TokenCursor(v=value, symbol=last["symbol"], f=query.fingerprint))
    return {"data": [{k: v for k, v in r.items() if not k.startswith("_")} for r in shown], "next_cursor": nxt}


def _after(query: TokenQuery, row_key: SortKey, cursor: TokenCursor) -> bool:
    if query.field == "symbol":
        return row_key[2] < cursor.symbol if query.descending else row_key[2] > cursor.symbol
    return row_key > query.key(cursor.v, cursor.symbol)
