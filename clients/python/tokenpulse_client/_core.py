"""What the sync and async clients share: a request as data (:class:`Call`), the retry decision, the ETag
cache and the decoding of an answer. Only the sending (and sleeping) differs between the two clients."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent
from pydantic import TypeAdapter

from tokenpulse_client._version import __version__
from tokenpulse_client.errors import ApiError, TransportError, error_from, retry_after_s
from tokenpulse_client.models import ApiModel, Page, StreamEvent
from tokenpulse_client.pagination import AsyncPages, Pages

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
USER_AGENT = f"tokenpulse-client/{__version__}"
MAX_PAGE_SIZE = 1000  # the API's largest `limit`

M = TypeVar("M")
T = TypeVar("T", bound=ApiModel)
SR = TypeVar("SR", covariant=True)
AR = TypeVar("AR", covariant=True)


@dataclass(frozen=True)
class RetryPolicy:
    """When the client waits and tries again by itself.

    A ``429`` (over a limit) or ``503`` (a dependency of the server is down) that carries ``Retry-After`` is
    retried after that many seconds, at most ``max_retries`` times; a ``Retry-After`` longer than
    ``max_wait_s`` (the month's limit, say) is raised at once as a :class:`~tokenpulse_client.RateLimitError`
    rather than slept on. ``max_reconnects`` bounds how often :meth:`Client.stream` reconnects in a row
    without receiving an event."""

    max_retries: int = 3
    max_wait_s: float = 60.0
    max_reconnects: int = 5
    reconnect_backoff_s: float = 0.5

    def wait_before_retry(self, status: int, headers: Mapping[str, str], attempt: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None when the answer is final."""
        if status not in (429, 503) or attempt >= self.max_retries:
            return None
        wait = retry_after_s(headers)
        if wait is None or wait > self.max_wait_s:
            return None
        return wait

    def reconnect_delay(self, failures: int) -> float:
        """Exponential backoff between stream reconnects, capped at 10 s."""
        return float(min(10.0, self.reconnect_backoff_s * 2 ** max(0, failures - 1)))


NO_RETRY = RetryPolicy(max_retries=0, max_reconnects=0)


class Spec(Generic[SR, AR]):
    """What a route of :mod:`tokenpulse_client._routes` returns: a request that the sync client turns into an
    ``SR`` and the async client into an ``AR``."""


@dataclass(frozen=True)
class Call(Spec[M, Coroutine[Any, Any, M]]):
    """One API request and the type its answer decodes to."""

    method: str
    path: str
    answer: Any  # a pydantic model class, or a typing form for a TypeAdapter
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None

    def query(self) -> dict[str, Any]:
        return {k: to_param(v) for k, v in self.params.items() if v is not None}

    def decode(self, body: bytes) -> M:
        return adapter(self.answer).validate_json(body)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class TextCall(Call[str]):
    """A request whose answer is text (a Markdown report), not JSON."""

    def decode(self, body: bytes) -> str:
        return body.decode("utf-8")


@dataclass(frozen=True)
class Listing(Spec[Pages[T], AsyncPages[T]]):
    """A list endpoint: its path and filters, the type of its rows, and how many rows to fetch (None: all)."""

    path: str
    item: type[T]
    params: dict[str, Any]
    limit: int | None

    def page(self, cursor: str | None, size: int) -> Call[Page[T]]:
        """The request for one page of ``size`` rows from ``cursor`` on."""
        answer = Page[self.item]  # type: ignore[name-defined]  # a page type made at run time, per row type
        return Call("GET", self.path, answer, {**self.params, "limit": size, "cursor": cursor})


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def adapter(tp: Any) -> TypeAdapter[Any]:
    """A cached TypeAdapter: building one per answer would cost more than validating it."""
    found = _ADAPTERS.get(tp)
    if found is None:
        found = _ADAPTERS[tp] = TypeAdapter(tp)
    return found


def segment(value: str) -> str:
    """A path segment, escaped so that a symbol or id cannot reach another path."""
    return quote(str(value), safe="")


def to_param(value: Any) -> Any:
    """A query value as the API reads it: ISO-8601 UTC times, lower-case booleans, lists as repeats."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [to_param(v) for v in value]
    return value


def api_key_from(api_key: str | None) -> str | None:
    return api_key if api_key is not None else os.environ.get("TOKENPULSE_API_KEY") or None


def headers_for(api_key: str | None) -> dict[str, str]:
    out = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if api_key:
        out["X-API-Key"] = api_key
    return out


class EtagCache:
    """The bodies of answers that carried an ``ETag``, by URL (least recently used dropped first): the next
    request for the same URL sends ``If-None-Match``, and a ``304`` reuses the body kept here."""

    def __init__(self, max_entries: int = 256, max_body_bytes: int = 4 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_body_bytes = max_body_bytes
        self._entries: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self.hits = 0
        """answers served from here after a 304"""

    def conditional_headers(self, url: str) -> dict[str, str]:
        hit = self._entries.get(url)
        return {"If-None-Match": hit[0]} if hit else {}

    def remember(self, url: str, headers: Mapping[str, str], body: bytes) -> None:
        tag = headers.get("etag")
        if not tag or self.max_entries <= 0 or len(body) > self.max_body_bytes:
            return
        self._entries[url] = (tag, body)
        self._entries.move_to_end(url)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def body_of_304(self, url: str) -> bytes | None:
        hit = self._entries.get(url)
        if hit is None:
            return None
        self._entries.move_to_end(url)
        self.hits += 1
        return hit[1]


def transport_error(call: Call[Any], exc: Exception) -> TransportError:
    return TransportError(f"{call.method} {call.path}: {exc}")


def answer_body(status: int, headers: Mapping[str, str], body: bytes, url: str, cache: EtagCache | None) -> bytes:
    """The body to decode for a final answer; raises the typed error of an error answer."""
    if status == 304 and cache is not None:
        kept = cache.body_of_304(url)
        if kept is not None:
            return kept
    if 200 <= status < 300:
        if cache is not None:
            cache.remember(url, headers, body)
        return body
    raise error_from(status, body, headers)


def stream_pause(policy: RetryPolicy, error: Exception | None, failures: int) -> float:
    """Seconds to wait before reopening the stream after ``failures`` attempts in a row that brought no
    event (``error`` None: the server ended the stream); raises when the policy says to give up."""
    if isinstance(error, ApiError):
        wait = policy.wait_before_retry(error.status, retry_headers(error), failures - 1)
        if wait is None:
            raise error
        return wait
    if failures > policy.max_reconnects:
        why = f"{type(error).__name__}: {error}" if error else "the server closed it"
        raise TransportError(f"the stream failed {failures} times in a row ({why})") from error
    return 0.0 if failures == 0 else policy.reconnect_delay(failures)


def retry_headers(error: ApiError) -> dict[str, str]:
    """An error's ``Retry-After`` as a header again, for :meth:`RetryPolicy.wait_before_retry`."""
    return {} if error.retry_after is None else {"retry-after": str(error.retry_after)}


@dataclass
class StreamCursor(Spec[Iterator[StreamEvent], AsyncIterator[StreamEvent]]):
    """Where a live stream stands: its filters, the last event id received (a reconnect resumes after it
    with ``Last-Event-ID``) and how many connections in a row brought no event."""

    params: dict[str, str]
    last_event_id: int | None
    read_timeout_s: float
    failures: int = 0
    received: bool = False

    def request(self, api_key: str | None) -> dict[str, Any]:
        """The keyword arguments of the stream's ``GET``: query, headers and timeout."""
        headers = {**headers_for(api_key), "Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        return {"params": self.params, "headers": headers, "timeout": httpx.Timeout(30.0, read=self.read_timeout_s)}

    def saw(self, event: StreamEvent) -> None:
        self.received = True
        if event.id is not None:
            self.last_event_id = event.id

    def pause(self, policy: RetryPolicy, error: Exception | None) -> float:
        """Seconds to wait before reopening the stream after a connection ended with ``error`` (None: the
        server ended it); raises when the policy says to give up."""
        self.failures = 0 if self.received else self.failures + 1
        self.received = False
        return stream_pause(policy, error, self.failures)


def stream_event(sse: ServerSentEvent) -> StreamEvent:
    return StreamEvent(id=int(sse.id) if sse.id else None, event=sse.event, data=sse_data(sse.data))


def sse_data(raw: str) -> dict[str, Any]:
    """An event's ``data`` as JSON (an object); anything else is kept under ``"text"``."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {"text": raw}
    return value if isinstance(value, dict) else {"value": value}
