"""What every query module shares: time conversions and the time-range conditions of history reads."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=4096)
def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO 8601 UTC; cached because the token list formats every token's time at each
    refresh, and most are the same as at the last one."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def time_filters(
    where: list[str], params: dict[str, Any], start_ms: int | None, end_ms: int | None, after_ms: int | None
) -> None:
    """Add the time-range and keyset-cursor conditions on ``ts`` shared by every history query."""
    for name, op, value in (("start", ">=", start_ms), ("end", "<", end_ms), ("after", ">", after_ms)):
        if value is not None:
            where.append(f"ts {op} fromUnixTimestamp64Milli({{{name}:Int64}}, 'UTC')")
            params[name] = value
