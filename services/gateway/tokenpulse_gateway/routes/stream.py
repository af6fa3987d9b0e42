"""``GET /v1/stream``: live prices, signals and the caller's alerts as server-sent events, resumable by id."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from opentelemetry import trace
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.deps import HubDep, StreamAuthed, TiersDep
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.keys import ApiKey
from tokenpulse_gateway.live import STREAM_TYPES, StreamEvent, StreamHub

SYMBOL_LIST = re.compile(r"^[A-Z0-9]{1,20}$")
INT64_MAX = 2**63 - 1
# an event id as the stream sends it: ASCII digits only (str.isdigit also takes '²' and other scripts' digits)
EVENT_ID = re.compile(r"[0-9]{1,19}")

router = APIRouter(route_class=JsonBodyRoute)


def resume_id(last_event_id: str | None, since: int | None) -> int | None:
    """Where a stream resumes: ``Last-Event-ID`` (as a browser resends it) over ``?since=``."""
    if not last_event_id:
        return since
    value = last_event_id.strip()
    if not EVENT_ID.fullmatch(value) or int(value) > INT64_MAX:
        raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must be an id this stream sent")
    return int(value)


def wanted_symbols(symbols: str | None) -> set[str] | None:
    """The symbols of ``?symbols=`` (None: all), or a 400."""
    wanted = {s.strip().upper() for s in (symbols or "").split(",") if s.strip()} or None
    if wanted and not all(SYMBOL_LIST.fullmatch(s) for s in wanted):
        raise ApiError(400, "invalid_symbol", "symbols are upper-case base assets such as BTC,ETH")
    return wanted


def wanted_types(types: str | None) -> set[str]:
    """The event types of ``?types=`` (default all), or a 422."""
    wanted = {t.strip().lower() for t in (types or "").split(",") if t.strip()} or set(STREAM_TYPES)
    if not wanted <= set(STREAM_TYPES):
        bad = ", ".join(sorted(wanted - set(STREAM_TYPES)))
        raise ApiError(422, "invalid_request", f"types: unknown {bad}; choose from {', '.join(STREAM_TYPES)}")
    return wanted


def event_filter(
    key: ApiKey, intraday: bool, symbols: set[str] | None, types: set[str]
) -> Callable[[StreamEvent], bool]:
    """Whether the stream of ``key`` sends an event: of a wanted type and symbol, an alert only to its owner,
    an intraday signal only to a tier with ``intraday``."""

    def match(ev: StreamEvent) -> bool:
        if ev.type not in types or (symbols and ev.symbol not in symbols):
            return False
        if ev.type == "alert":
            return ev.owner == key.key_id
        return not (ev.type == "signal" and not intraday and ev.interval != "1d")

    return match


async def events(
    hub: StreamHub,
    key: ApiKey,
    resume: int | None,
    match: Callable[[StreamEvent], bool],
    symbols: set[str] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """A hello, what was missed since ``resume`` (after a ``gap`` event if part of it has left the buffer),
    then live events until the client falls behind."""
    q = hub.subscribe(symbols)  # only the wanted symbols' events wake this stream (1,000 tokens: ~1,000 prices/s)
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


@router.get(
    "/v1/stream",
    tags=["stream"],
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {"example": ex.STREAM}}, "description": "server-sent events"},
        **ex.responses("stream", 400, 401, 422, 429),
    },
)
async def stream(
    key: StreamAuthed,
    hub: HubDep,
    tiers: TiersDep,
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
    wanted = wanted_symbols(symbols)
    kinds = wanted_types(types)
    resume = resume_id(last_event_id, since)
    tier = tiers.named(key.tier)
    match = event_filter(key, tier.intraday, wanted, kinds)
    if not hub.claim_stream(key.key_id, tier.max_streams):
        raise ApiError(
            429,
            "too_many_streams",
            f"this key already has {tier.max_streams} open streams, the {tier.name} tier's limit; "
            "close one (or upgrade the key's tier)",
            headers={"Retry-After": "5"},
        )
    return _ClaimedStream(
        events(hub, key, resume, match, wanted),
        release=lambda: hub.release_stream(key.key_id),
        ping=hub.heartbeat_s,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        send_timeout=30,
    )


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
