"""``GET /v1/usage``: the calling key's tier, limits and use."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.deps import Authed, LimiterDep, TiersDep, limited

router = APIRouter(route_class=JsonBodyRoute)


@router.get("/v1/usage", tags=["keys"], responses=ex.success("usage"))
async def usage(key: Authed, limiter: LimiterDep, tiers: TiersDep) -> dict[str, Any]:
    """Your key's tier, limits and use (this call counts as one request)."""
    windows = await limited(limiter.usage(key.key_id, tiers.named(key.tier)))
    return {
        "key_id": key.key_id,
        "name": key.name,
        "tier": tiers.view(key.tier),
        "usage": {name: w.__dict__ for name, w in windows.items()},
        "shared": limiter.shared,
    }
