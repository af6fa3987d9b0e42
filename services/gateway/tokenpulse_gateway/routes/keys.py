"""API keys: a free key for anyone (``POST /v1/keys``), keys of any tier and revocation for the admin."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, EmailStr, Field

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.deps import Admin, KeysDep, LimiterDep, TiersDep, client_address, limited
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.keys import ApiKey
from tokenpulse_gateway.tiers import TierName, Tiers

router = APIRouter(route_class=JsonBodyRoute)
admin = APIRouter(route_class=JsonBodyRoute, tags=["admin"])
"""the admin's routes (listed after the public ones in the API document)"""


class KeyRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["my trading bot"])
    email: EmailStr | None = Field(None, examples=["me@example.com"])


class AdminKeyRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["Acme Research"])
    email: EmailStr | None = Field(None, examples=["ops@acme.example"])
    tier: TierName = Field("pro", description="free, pro or enterprise")


def issued(key: str, record: ApiKey, tiers: Tiers) -> dict[str, Any]:
    """The answer that shows a new key, the only time it is ever shown."""
    return {
        "key": key,
        "key_id": record.key_id,
        "tier": record.tier,
        "limits": tiers.view(record.tier),
        "note": "store this key now: it is shown only once",
    }


@router.post("/v1/keys", status_code=201, tags=["keys"], responses=ex.responses("create_key", 201, 422, 429))
async def create_key(
    request: Request, body: KeyRequest, keys: KeysDep, limiter: LimiterDep, tiers: TiersDep
) -> dict[str, Any]:
    """A free key, shown once (only its SHA-256 hash is stored). Limited per client IP and hour."""
    wait = await limited(limiter.hit_issue(client_address(request)))
    if wait:
        raise ApiError(
            429,
            "too_many_keys",
            f"this address created {limiter.issue_per_hour} keys in the last hour; "
            f"retry in {wait} s or reuse a key you have",
            headers={"Retry-After": str(wait)},
        )
    return issued(*await keys.create(body.name, body.email), tiers)


NO_ADMIN: dict[int | str, dict[str, Any]] = {
    401: {"description": "no admin token"},
    403: {"description": "wrong admin token, or the admin API is off"},
}


@admin.post("/v1/admin/keys", status_code=201, responses={**ex.success("admin_key", 201), **NO_ADMIN})
async def admin_create_key(_: Admin, body: AdminKeyRequest, keys: KeysDep, tiers: TiersDep) -> dict[str, Any]:
    """Issue a key of any tier (admin token in `X-Admin-Token` or `Authorization: Bearer`)."""
    return issued(*await keys.create(body.name, body.email, body.tier), tiers)


@admin.get(
    "/v1/admin/keys/{key_id}",
    responses={**ex.success("admin_key_record"), 404: {"description": "no such key"}},
)
async def admin_get_key(_: Admin, key_id: str, keys: KeysDep) -> dict[str, Any]:
    """A key's record (never the key itself: only its hash is stored)."""
    found = await keys.get(key_id)
    if found is None:
        raise ApiError(404, "unknown_key", f"no key with id {key_id}")
    return {k: v for k, v in found.items() if not k.startswith("_")}


@admin.delete(
    "/v1/admin/keys/{key_id}",
    responses={**ex.success("admin_key_revoked"), 404: {"description": "no such key"}},
)
async def admin_revoke_key(_: Admin, key_id: str, keys: KeysDep) -> dict[str, Any]:
    """Revoke a key: refused at once by this replica, by the others within `TOKENPULSE_KEY_CACHE_TTL_S`."""
    if not await keys.revoke(key_id):
        raise ApiError(404, "unknown_key", f"no key with id {key_id}")
    return {"key_id": key_id, "revoked": True}
