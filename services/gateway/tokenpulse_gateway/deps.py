"""What a route may ask for, as typed dependencies: who calls (the API key, its tier, the admin) and the
gateway's parts (store, queries, key store, limiter, live state, stream hub, caches).

A route declares what it uses in its signature (``key: Authed, queries: QueriesDep``). The routes that answer
from memory (tokens, a token, history pages) declare only the key and take their parts with
:func:`~tokenpulse_gateway.state.state_of`: FastAPI solves every declared dependency on every request, which
would cost those reads a good part of their time.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Query, Request
from fastapi.security import APIKeyHeader
from tokenpulse_shared.bus import Bus
from tokenpulse_shared.service import Context
from tokenpulse_shared.store import Store

from tokenpulse_gateway.analytics.cycles import Halving
from tokenpulse_gateway.caches import Caches, KnownSymbols
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.keys import ApiKey, KeyStore
from tokenpulse_gateway.limits import KeyLimiter, LimiterUnavailable, Verdict
from tokenpulse_gateway.live import StreamHub
from tokenpulse_gateway.market_data import MarketAnalytics
from tokenpulse_gateway.queries import Queries
from tokenpulse_gateway.state import GatewayState, KeyLocks, Webhooks, state_of
from tokenpulse_gateway.tiers import Tier, Tiers

LIMITER_DOWN = "the request-limit store (Redis) is unavailable; retry shortly"
T = TypeVar("T")


async def limited(call: Awaitable[T]) -> T:
    """The limiter's answer, or a 503 when its store (Redis) does not answer."""
    try:
        return await call
    except LimiterUnavailable as exc:
        raise ApiError(503, "limiter_unavailable", LIMITER_DOWN, headers={"Retry-After": "5"}) from exc


def tier_for(request: Request, record: ApiKey) -> Tier:
    return state_of(request).tiers.named(record.tier)


def client_address(request: Request) -> str:
    """The client's address: the TCP peer, or what a trusted proxy says it is (TOKENPULSE_TRUSTED_PROXIES)."""
    return request.client.host if request.client else "unknown"


async def _throttle_key_guessing(request: Request, failed: bool) -> None:
    """429 for an address that sent too many wrong keys this minute: before the store is asked for another
    key (``failed=False``), or when this wrong key spends the allowance (``failed=True``)."""
    limiter = state_of(request).limiter
    ip = client_address(request)
    wait = await limited(limiter.hit_auth_failure(ip) if failed else limiter.auth_throttled(ip))
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
    state = state_of(request)
    known, record = state.keys.cached(key)
    if not known:  # only the store can tell: not for an address that is guessing
        await _throttle_key_guessing(request, failed=False)
        record = await state.keys.lookup(key)
    if record is None or record.revoked:
        await _throttle_key_guessing(request, failed=True)
        raise ApiError(401, "invalid_api_key", "unknown or revoked API key; get one with POST /v1/keys")
    verdict: Verdict = await limited(state.limiter.hit(record.key_id, state.tiers.named(record.tier)))
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


def request_key(request: Request) -> str | None:
    # read straight from the headers: a declared Header() parameter is validated by FastAPI on every
    # request, which was a tenth of a hot read's time
    headers = request.headers
    return _header_key(headers.get("x-api-key"), headers.get("authorization"))


async def require_key(request: Request) -> ApiKey:
    """Every /v1 path but POST /v1/keys needs a valid key (X-API-Key or Authorization: Bearer)."""
    return await _authenticate(request, request_key(request))


async def require_key_or_query(
    request: Request,
    _: Annotated[str | None, Depends(API_KEY)],
    api_key: Annotated[
        str | None, Query(description="the key as a query parameter, for browsers' EventSource (cannot send headers)")
    ] = None,
) -> ApiKey:
    """The stream also takes ``?api_key=`` because a browser's EventSource cannot set headers."""
    return await _authenticate(request, request_key(request) or api_key)


async def require_admin(
    request: Request,
    x_admin_token: Annotated[str | None, Header(description="the admin token (or `Authorization: Bearer`)")] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    expected = state_of(request).admin_token
    if not expected:
        raise ApiError(403, "admin_disabled", "the admin API is off: set TOKENPULSE_ADMIN_TOKEN on the gateway")
    token = _header_key(x_admin_token, authorization)
    if not token:
        raise ApiError(401, "missing_admin_token", "send the admin token in X-Admin-Token or Authorization: Bearer")
    await _throttle_key_guessing(request, failed=False)  # guessing the admin token counts as guessing keys
    if not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
        await _throttle_key_guessing(request, failed=True)
        raise ApiError(403, "invalid_admin_token", "wrong admin token")


Authed = Annotated[ApiKey, Depends(require_key)]
StreamAuthed = Annotated[ApiKey, Depends(require_key_or_query)]
Admin = Annotated[None, Depends(require_admin)]


def _state_part(name: str) -> Any:
    """A dependency on the app state's attribute ``name`` (typed by the alias that declares it)."""
    assert name in GatewayState.__annotations__, f"the gateway state has no {name}"

    async def part(request: Request) -> Any:  # async: FastAPI would run a plain function in a thread
        return getattr(state_of(request), name)

    part.__name__ = part.__qualname__ = f"state_{name}"
    return Depends(part)


ContextDep = Annotated[Context, _state_part("ctx")]
BusDep = Annotated[Bus, _state_part("bus")]
StoreDep = Annotated[Store, _state_part("store")]
QueriesDep = Annotated[Queries, _state_part("queries")]
KeysDep = Annotated[KeyStore, _state_part("keys")]
LimiterDep = Annotated[KeyLimiter, _state_part("limiter")]
TiersDep = Annotated[Tiers, _state_part("tiers")]
HubDep = Annotated[StreamHub, _state_part("hub")]
SymbolsDep = Annotated[KnownSymbols, _state_part("symbols")]
CachesDep = Annotated[Caches, _state_part("caches")]
HalvingsDep = Annotated[list[Halving], _state_part("halvings")]
RuleLocksDep = Annotated[KeyLocks, _state_part("rule_locks")]
WebhooksDep = Annotated[Webhooks, _state_part("webhooks")]


async def market_analytics(request: Request) -> MarketAnalytics:
    state = state_of(request)
    return MarketAnalytics(state.queries.analytics, state.caches.market)


MarketDep = Annotated[MarketAnalytics, Depends(market_analytics)]
