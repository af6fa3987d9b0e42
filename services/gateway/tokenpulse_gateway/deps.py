"""Request dependencies shared by the gateway's routers: API-key authentication, limits, admin token."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.security import APIKeyHeader

from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.keys import ApiKey
from tokenpulse_gateway.limits import LimiterUnavailable, Verdict
from tokenpulse_gateway.tiers import Tier, effective_tier

LIMITER_DOWN = "the request-limit store (Redis) is unavailable; retry shortly"


def tier_for(request: Request, record: ApiKey) -> Tier:
    s = request.app.state.settings
    return effective_tier(record.tier, s.free_limit_per_minute, s.free_limit_per_month, s.max_rules_per_key)


def client_address(request: Request) -> str:
    """The client's address: the TCP peer, or what a trusted proxy says it is (TOKENPULSE_TRUSTED_PROXIES)."""
    return request.client.host if request.client else "unknown"


async def _throttle_key_guessing(request: Request, failed: bool) -> None:
    """429 for an address that sent too many wrong keys this minute: before the store is asked for another
    key (``failed=False``), or when this wrong key spends the allowance (``failed=True``)."""
    limiter = request.app.state.limiter
    ip = client_address(request)
    try:
        wait = await (limiter.hit_auth_failure(ip) if failed else limiter.auth_throttled(ip))
    except LimiterUnavailable as exc:
        raise ApiError(503, "limiter_unavailable", LIMITER_DOWN, headers={"Retry-After": "5"}) from exc
    if wait:
        raise ApiError(
            429,
            "too_many_wrong_keys",
            f"too many unknown or revoked keys (or wrong admin tokens) from this address; retry in {wait} s "
            "with a valid one",
            headers={"Retry-After": str(wait)},
        )


async def _authenticate(request: Request, key: str | None) -> ApiKey:
    if not key:
        raise ApiError(401, "missing_api_key", "send your key in X-API-Key; get one with POST /v1/keys")
    keys = request.app.state.keys
    known, record = keys.cached(key)
    if not known:  # only the store can tell: not for an address that is guessing
        await _throttle_key_guessing(request, failed=False)
        record = await keys.lookup(key)
    if record is None or record.revoked:
        await _throttle_key_guessing(request, failed=True)
        raise ApiError(401, "invalid_api_key", "unknown or revoked API key; get one with POST /v1/keys")
    try:
        verdict: Verdict = await request.app.state.limiter.hit(record.key_id, tier_for(request, record))
    except LimiterUnavailable as exc:
        raise ApiError(503, "limiter_unavailable", LIMITER_DOWN, headers={"Retry-After": "5"}) from exc
    if not verdict.allowed:
        what = "monthly quota used up" if verdict.scope == "month" else "per-minute request limit reached"
        raise ApiError(
            429,
            "rate_limited",
            f"{what}; retry in {verdict.retry_after_s} s (see GET /v1/usage; higher tiers have higher limits)",
            headers=verdict.headers(),
        )
    request.state.ratelimit = verdict
    return record


def _header_key(x_api_key: str | None, authorization: str | None) -> str | None:
    if x_api_key:
        return x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


API_KEY = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKey",
    description="your API key (or `Authorization: Bearer <key>`); get one with `POST /v1/keys`",
    auto_error=False,
)
"""documents the key in OpenAPI (a security scheme); the headers themselves are read in :func:`require_key`"""


def _request_key(request: Request) -> str | None:
    # read straight from the headers: a declared Header() parameter is validated by FastAPI on every
    # request, which was a tenth of a hot read's time
    headers = request.headers
    return _header_key(headers.get("x-api-key"), headers.get("authorization"))


async def require_key(request: Request) -> ApiKey:
    """Every /v1 path but POST /v1/keys needs a valid key (X-API-Key or Authorization: Bearer)."""
    return await _authenticate(request, _request_key(request))


async def require_key_or_query(
    request: Request,
    _: Annotated[str | None, Depends(API_KEY)],
    api_key: Annotated[
        str | None, Query(description="the key as a query parameter, for browsers' EventSource (cannot send headers)")
    ] = None,
) -> ApiKey:
    """The stream also takes ``?api_key=`` because a browser's EventSource cannot set headers."""
    return await _authenticate(request, _request_key(request) or api_key)


async def require_admin(
    request: Request,
    x_admin_token: Annotated[str | None, Header(description="the admin token (or `Authorization: Bearer`)")] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    expected: str | None = request.app.state.settings.admin_token
    if not expected:
        raise ApiError(403, "admin_disabled", "the admin API is off: set TOKENPULSE_ADMIN_TOKEN on the gateway")
    token = _header_key(x_admin_token, authorization)
    if not token:
        raise ApiError(401, "missing_admin_token", "send the admin token in X-Admin-Token or Authorization: Bearer")
    await _throttle_key_guessing(request, failed=False)  # guessing the admin token counts as guessing keys
    if not hmac.compare_digest(token.encode(), expected.encode()):
        await _throttle_key_guessing(request, failed=True)
        raise ApiError(403, "invalid_admin_token", "wrong admin token")


Authed = Annotated[ApiKey, Depends(require_key)]
StreamAuthed = Annotated[ApiKey, Depends(require_key_or_query)]
Admin = Annotated[None, Depends(require_admin)]
