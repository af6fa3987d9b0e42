"""API tiers: what a key of each tier may do (request limits and features).

``tier_of(name)`` is the one place other services read a tier from (e.g. the alerts
API caps a caller's rules at ``tier_of(key.tier).max_alert_rules``). Free keys come
from ``POST /v1/keys``; the other tiers are issued by an admin (``POST /v1/admin/keys``).
The free tier's request limits and rule count can be changed in settings
(``TOKENPULSE_FREE_LIMIT_PER_MINUTE`` / ``_PER_MONTH``, ``TOKENPULSE_MAX_RULES_PER_KEY``), see
:func:`effective_tier`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Literal

TierName = Literal["free", "pro", "enterprise"]


@dataclass(frozen=True)
class Tier:
    name: str
    per_minute: int
    """requests per moving minute"""
    per_month: int
    """requests per 30-day window"""
    max_alert_rules: int
    """alert rules one key may have at a time"""
    intraday: bool
    """intraday (shorter than 1d) signals in /v1/signals and the stream; daily signals are for everyone"""
    max_streams: int
    """``/v1/stream`` connections one key may hold open at once on one gateway replica"""
    max_mcp_calls: int
    """``/mcp`` requests one key may have in flight at once on one gateway replica"""


# streams: a free key gets a dashboard tab and a script; pro a few services; enterprise a fleet of them;
# MCP calls in flight: an agent calling a few tools at once, more agents per key on the higher tiers
TIERS: dict[str, Tier] = {
    "free": Tier(
        "free", per_minute=60, per_month=10_000, max_alert_rules=10, intraday=False, max_streams=2, max_mcp_calls=4
    ),
    "pro": Tier(
        "pro", per_minute=500, per_month=500_000, max_alert_rules=100, intraday=True, max_streams=10, max_mcp_calls=16
    ),
    "enterprise": Tier(
        "enterprise",
        per_minute=5_000,
        per_month=50_000_000,
        max_alert_rules=10_000,
        intraday=True,
        max_streams=100,
        max_mcp_calls=64,
    ),
}
TIER_NAMES: tuple[str, ...] = tuple(TIERS)


def tier_of(name: str) -> Tier:
    """The tier called ``name`` (case-insensitive); ``ValueError`` naming the valid tiers otherwise."""
    try:
        return TIERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown tier {name!r}; choose one of {', '.join(TIER_NAMES)}") from None


@lru_cache(maxsize=256)
def effective_tier(
    name: str, free_per_minute: int | None = None, free_per_month: int | None = None, free_rules: int | None = None
) -> Tier:
    """``tier_of`` with the deployment's free-tier limits applied (settings override the defaults)."""
    tier = tier_of(name)
    if tier.name == "free":
        tier = replace(
            tier,
            per_minute=free_per_minute or tier.per_minute,
            per_month=free_per_month or tier.per_month,
            max_alert_rules=free_rules or tier.max_alert_rules,
        )
    return tier


@dataclass(frozen=True)
class Tiers:
    """This deployment's tiers: the defaults, with the free tier's limits from settings where set."""

    free_per_minute: int | None = None
    free_per_month: int | None = None
    free_rules: int | None = None

    def named(self, name: str) -> Tier:
        return effective_tier(name, self.free_per_minute, self.free_per_month, self.free_rules)

    def view(self, name: str) -> dict[str, Any]:
        """What an answer shows of the tier ``name`` (key creation, ``/v1/usage``)."""
        t = self.named(name)
        return {
            "name": t.name,
            "per_minute": t.per_minute,
            "per_month": t.per_month,
            "max_alert_rules": t.max_alert_rules,
            "intraday": t.intraday,
            "max_streams": t.max_streams,
        }
