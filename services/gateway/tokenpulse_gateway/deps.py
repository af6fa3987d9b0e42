"""Request dependencies shared by the gateway's routers: API-key authentication and limits."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.keys import ApiKey


async def require_key(
    request: Request,
    x_api_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> ApiKey:
    """Every /v1 path but POST /v1/keys needs a valid key (X-API-Key or Authorization: Bearer)."""
    key = x_api_key
    if not key and authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    if not key:
        raise ApiError(401, "missing_api_key", "send your key in X-API-Key; get one with POST /v1/keys")
    record = await request.app.state.keys.lookup(key)
    if record is None or record.revoked:
        raise ApiError(401, "invalid_api_key", "unknown or revoked API key; get one with POST /v1/keys")
    verdict = await request.app.state.limiter.hit(record.key_id)
    if not verdict.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"request limit reached; retry in {verdict.retry_after_s} s",
            headers={"Retry-After": str(verdict.retry_after_s)},
        )
    return record


Authed = Annotated[ApiKey, Depends(require_key)]
