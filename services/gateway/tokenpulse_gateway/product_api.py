"""The API product: admin-issued keys, ``GET /v1/usage``, and the live ``GET /v1/stream``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from opentelemetry import trace
from pydantic import BaseModel, EmailStr, Field
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.deps import LIMITER_DOWN, Admin, Authed, StreamAuthed, tier_for
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.keys import KeyStore
from tokenpulse_gateway.limits import KeyLimiter, LimiterUnavailable
from tokenpulse_gateway.live import STREAM_TYPES, StreamEvent, StreamHub
from tokenpulse_gateway.tiers import TierName, effective_tier

SYMBOL_LIST = re.compile(r"^[A-Z0-9]{1,20}$")
INT64_MAX = 2**63 - 1
# an event id as the stream sends it: ASCII digits only (str.isdigit also takes '²' and other scripts' digits)
EVENT_ID = re.compile(r"[0-9]{1,19}")


def resume_id(last_event_id: str | None, since: int | None) -> int | None:
    """Where a stream resumes: ``Last-Event-ID`` (as a browser resends it) over ``?since=``."""
    if not last_event_id:
        return since
    value = last_event_id.strip()
    if not EVENT_ID.fullmatch(value) or int(value) > INT64_MAX:
        raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must be an id this stream sent")
    return int(value)


class AdminKeyRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["Acme Research"])
    email: EmailStr | None = Field(None, examples=["ops@acme.example"])
    tier: TierName = Field("pro", description="free, pro or enterprise")


def tier_body(name: str, settings: Any) -> dict[str, Any]:
    t = effective_tier(name, settings.free_limit_per_minute, settings.free_limit_per_month, settings.max_rules_per_key)
    return {
        "name": t.name,
        "per_minute": t.per_minute,
        "per_month": t.per_month,
        "max_alert_rules": t.max_alert_rules,
        "intraday": t.intraday,
        "max_streams": t.max_streams,
    }


def make_router(keys: KeyStore, limiter: KeyLimiter, hub: StreamHub, settings: Any) -> APIRouter:
    router = APIRouter(route_class=JsonBodyRoute)

    @router.post(
        "/v1/admin/keys",
        status_code=201,
        tags=["admin"],
        responses={
            201: {
                "content": {
                    "application/json": {
                        "example": {
                            "key": "tp_Xq3...",
                            "key_id": "9f2c41d07a5be613",
                            "tier": "pro",
                            "limits": {"name": "pro", "per_minute": 500, "per_month": 500000},
                            "note": "store this key now: it is shown only once",
                        }
                    }
                }
            },
            401: {"description": "no admin token"},
            403: {"description": "wrong admin token, or the admin API is off"},
        },
    )
    async def admin_create_key(_: Admin, body: AdminKeyRequest) -> dict[str, Any]:
        """Issue a key of any tier (admin token in `X-Admin-Token` or `Authorization: Bearer`)."""
        key, record = await keys.create(body.name, body.email, body.tier)
        return {
            "key": key,
            "key_id": record.key_id,
            "tier": record.tier,
            "limits": tier_body(record.tier, settings),
            "note": "store this key now: it is shown only once",
        }

    @router.get(
        "/v1/admin/keys/{key_id}",
        tags=["admin"],
        responses={
            200: {
                "content": {
                    "application/json": {
                        "example": {
                            "key_id": "9f2c41d07a5be613",
                            "name": "Acme Research",
                            "email": "ops@acme.example",
                            "tier": "pro",
                            "created_at": "2026-11-22T01:00:00Z",
                            "revoked": False,
                        }
                    }
                }
            },
            404: {"description": "no such key"},
        },
    )
    async def admin_get_key(_: Admin, key_id: str) -> dict[str, Any]:
        """A key's record (never the key itself: only its hash is stored)."""
        found = await keys.get(key_id)
        if found is None:
            raise ApiError(404, "unknown_key", f"no key with id {key_id}")
        return {k: v for k, v in found.items() if not k.startswith("_")}

    @router.delete(
        "/v1/admin/keys/{key_id}",
        tags=["admin"],
        responses={
            200: {"content": {"application/json": {"example": {"key_id": "9f2c41d07a5be613", "revoked": True}}}},
            404: {"description": "no such key"},
        },
    )
    async def admin_revoke_key(_: Admin, key_id: str) -> dict[str, Any]:
        """Revoke a key: refused at once by this replica, by the others within `TOKENPULSE_KEY_CACHE_TTL_S`."""
        if not await keys.revoke(key_id):
            raise ApiError(404, "unknown_key", f"no key with id {key_id}")
        return {"key_id": key_id, "revoked": True}

    @router.get(
        "/v1/usage",
        tags=["keys"],
        responses={
            200: {
                "content": {
                    "application/json": {
                        "example": {
                            "key_id": "9f2c41d07a5be613",
                            "name": "my app",
                            "tier": {
                                "name": "free",
                                "per_minute": 60,
                                "per_month": 10000,
                                "max_alert_rules": 10,
                                "intraday": False,
                                "max_streams": 2,
                            },
                            "usage": {
                                "minute": {"limit": 60, "used": 3, "remaining": 57, "reset_s": 41},
                                "month": {"limit": 10000, "used": 1250, "remaining": 8750, "reset_s": 1728000},
                            },
                            "shared": True,
                        }
                    }
                }
            }
        },
    )
    async def usage(request: Request, key: Authed) -> dict[str, Any]:
        """Your key's tier, limits and use (this call counts as one request)."""
        try:
            windows = await limiter.usage(key.key_id, tier_for(request, key))
        except LimiterUnavailable as exc:
            raise ApiError(503, "limiter_unavailable", LIMITER_DOWN, headers={"Retry-After": "5"}) from exc
        return {
            "key_id": key.key_id,
            "name": key.name,
            "tier": tier_body(key.tier, settings),
            "usage": {name: w.__dict__ for name, w in windows.items()},
            "shared": limiter.shared,
        }

    @router.get(
        "/v1/stream",
        tags=["stream"],
        response_class=EventSourceResponse,
        responses={
            200: {
                "content": {
                    "text/event-stream": {
                        "example": 'id: 1763773200123\nevent: price\ndata: {"symbol":"BTC","price":97012.5,'
                        '"ts":"2026-11-22T01:00:00Z"}\n\n: ping\n\n'
                    }
                },
                "description": "server-sent events",
            },
            **ex.responses("stream", 400, 401, 422, 429),
        },
    )
    async def stream(
        request: Request,
        key: StreamAuthed,
        symbols: Annotated[str | None, Query(description="comma-separated symbols, e.g. BTC,ETH (default all)")] = None,
        types: Annotated[str | None, Query(description="comma-separated: price, signal, alert (default all)")] = None,
        last_event_id: Annotated[str | None, Header(description="resume after this event id")] = None,
        since: Annotated[
            int | None, Query(ge=0, le=INT64_MAX, description="resume after this event id (as Last-Event-ID)")
        ] = None,
    ) -> EventSourceResponse:
        """Live prices, signals and your alerts as server-sent events, with heartbeats (`: ping` comments)
        and resumption: send the last `id` you saw as `Last-Event-ID` (browsers do on reconnect) to get
        what you missed from the recent-events buffer (a `gap` event first if some of it has already left the
        buffer). A browser's EventSource may pass `?api_key=`."""
        wanted_symbols = {s.strip().upper() for s in (symbols or "").split(",") if s.strip()} or None
        if wanted_symbols and not all(SYMBOL_LIST.fullmatch(s) for s in wanted_symbols):
            raise ApiError(400, "invalid_symbol", "symbols are upper-case base assets such as BTC,ETH")
        wanted_types = {t.strip().lower() for t in (types or "").split(",") if t.strip()} or set(STREAM_TYPES)
        if not wanted_types <= set(STREAM_TYPES):
            bad = ", ".join(sorted(wanted_types - set(STREAM_TYPES)))
            raise ApiError(422, "invalid_request", f"types: unknown {bad}; choose from {', '.join(STREAM_TYPES)}")
        resume = resume_id(last_event_id, since)
        tier = tier_for(request, key)
        intraday = tier.intraday

        def match(ev: StreamEvent) -> bool:
            if ev.type not in wanted_types or (wanted_symbols and ev.symbol not in wanted_symbols):
                return False
            if ev.type == "alert":
                return ev.owner == key.key_id
            return not (ev.type == "signal" and not intraday and ev.interval != "1d")

        async def events() -> AsyncIterator[dict[str, Any]]:
            q = hub.subscribe()
            sent = resume or 0
            try:
                yield {"event": "hello", "data": f'{{"key_id":"{key.key_id}","last_id":{hub.last_id}}}'}
                if resume is not None:
                    if resume < hub.evicted_id:  # older than the buffer: say so, then send what is left
                        yield {"event": "gap", "data": f'{{"resumed_after":{resume},"missed_up_to":{hub.evicted_id}}}'}
                    for ev in hub.since(resume):
                        if match(ev):
                            sent = ev.id
                            yield {"id": str(ev.id), "event": ev.type, "data": ev.data}
                while True:
                    ev_or_end = await q.get()
                    if ev_or_end is None:  # fell behind: end, the client resumes by id
                        return
                    if ev_or_end.id > sent and match(ev_or_end):
                        sent = ev_or_end.id
                        span = _stream_span(ev_or_end)
                        try:
                            yield {"id": str(ev_or_end.id), "event": ev_or_end.type, "data": ev_or_end.data}
                        finally:
                            if span is not None:
                                span.end()
            finally:
                hub.unsubscribe(q)

        if not hub.claim_stream(key.key_id, tier.max_streams):
            raise ApiError(
                429,
                "too_many_streams",
                f"this key already has {tier.max_streams} open streams, the {tier.name} tier's limit; "
                "close one (or upgrade the key's tier)",
                headers={"Retry-After": "5"},
            )
        return _ClaimedStream(
            events(),
            release=lambda: hub.release_stream(key.key_id),
            ping=settings.stream_heartbeat_s,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            send_timeout=30,
        )

    return router


class _ClaimedStream(EventSourceResponse):
    """The event stream of a claimed slot: the slot is released when the response ends, however it ends."""

    def __init__(self, *args: Any, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


_tracer = trace.get_tracer("tokenpulse.gateway.stream")


def _stream_span(ev: StreamEvent) -> trace.Span | None:
    """A span per signal/alert sent to a stream client, child of the span that handled the bus event, so the
    trace of a tick ends at the client. (The stream's HTTP request is not traced: its URL may carry a key.)"""
    if ev.origin is None or not ev.origin.is_valid:
        return None
    return _tracer.start_span(
        f"stream send {ev.type}",
        context=trace.set_span_in_context(trace.NonRecordingSpan(ev.origin)),
        kind=trace.SpanKind.PRODUCER,
        attributes={"tokenpulse.stream.event": ev.type, "tokenpulse.stream.id": ev.id, "tokenpulse.symbol": ev.symbol},
    )
