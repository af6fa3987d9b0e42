"""The API's methods, declared once for both clients.

Each method is an :class:`Endpoint` over a function of :mod:`tokenpulse_client._routes`, whose signature and
documentation it takes and whose request (one answer, rows across pages, or the live stream) it runs on the
client it is read from: :class:`Client` sends it and returns the answer, :class:`AsyncClient` returns an
awaitable (lists and the stream: async iterators). A request-spec layer under two thin transports, as
httpx-based SDKs are built, so a resource is added in one place and the two clients cannot drift apart.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

import httpx

from tokenpulse_client import _routes as r
from tokenpulse_client._core import (
    DEFAULT_BASE_URL,
    MAX_PAGE_SIZE,
    Call,
    EtagCache,
    Listing,
    RetryPolicy,
    Spec,
    StreamCursor,
    answer_body,
    api_key_from,
    headers_for,
)

if TYPE_CHECKING:
    from tokenpulse_client.async_client import AsyncClient
    from tokenpulse_client.client import Client

P = ParamSpec("P")
H = TypeVar("H", httpx.Client, httpx.AsyncClient)
SR = TypeVar("SR")
M = TypeVar("M")
AR = TypeVar("AR")


class Endpoint(Generic[P, SR, AR]):
    """A method of both clients over ``route``: read from a client, it runs the route's request there (the
    sync client gives an ``SR``, the async one an ``AR``); read from the class, it stands for the method (its
    name, documentation and signature with ``self``)."""

    def __init__(self, route: Callable[P, Spec[SR, AR]]) -> None:
        self.route = route
        functools.update_wrapper(self, route)
        own = inspect.signature(route).replace(return_annotation=inspect.Signature.empty)
        first = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self.__signature__ = own.replace(parameters=[first, *own.parameters.values()])
        self.bound_signature = own

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, client: None, owner: type) -> Endpoint[P, SR, AR]: ...
    @overload
    def __get__(self, client: Client, owner: type) -> Callable[P, SR]: ...
    @overload
    def __get__(self, client: AsyncClient, owner: type) -> Callable[P, AR]: ...
    def __get__(self, client: BaseClient[Any] | None, owner: type) -> Any:
        return self if client is None else self.bind(client)

    def bind(self, client: BaseClient[Any]) -> Callable[..., Any]:
        """The method of ``client``, kept on it for next time."""
        route, run = self.route, client._run

        @functools.wraps(route)
        def method(*args: Any, **kwargs: Any) -> Any:
            return run(route(*args, **kwargs))

        method.__signature__ = self.bound_signature  # type: ignore[attr-defined]
        client.__dict__[self.name] = method
        return method

    def __call__(self, client: Any, /, *args: Any, **kwargs: Any) -> Any:
        return getattr(client, self.name)(*args, **kwargs)


class BaseClient(Generic[H]):
    """A Tokenpulse API client.

    ``Client(base_url, api_key)``; without ``api_key`` the key is read from ``TOKENPULSE_API_KEY`` (a client
    without a key can still :meth:`create_key`). ``retry`` says when a 429/503 is waited out and retried,
    ``page_size`` how many rows each page request asks for, ``etag_cache_size`` how many answers are kept
    for ``If-None-Match`` (0: none). Pass ``http_client`` to use an httpx client of your own (proxies,
    transports, event hooks); it must carry the base URL, and it is not closed by the client.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        page_size: int = MAX_PAGE_SIZE,
        etag_cache_size: int = 256,
        http_client: H | None = None,
    ) -> None:
        self.api_key = api_key_from(api_key)
        self.retry = retry or RetryPolicy()
        self.page_size = max(1, min(page_size, MAX_PAGE_SIZE))
        self.etags = EtagCache(etag_cache_size)
        self._owned = http_client is None
        self._http: H = http_client or self._pool(base_url=base_url, timeout=timeout)

    _pool: Callable[..., H]
    """the httpx client class of the connection pool the client opens when not given one (and closes)"""

    def _request(self, call: Call[Any]) -> httpx.Request:
        """The request for ``call``, conditional (``If-None-Match``) when a GET's answer is kept."""
        request = self._http.build_request(
            call.method, call.path, params=call.query(), json=call.body, headers=headers_for(self.api_key)
        )
        if call.method == "GET":
            request.headers.update(self.etags.conditional_headers(str(request.url)))
        return request

    def _decode(self, call: Call[M], request: httpx.Request, response: httpx.Response) -> M:
        """The final answer to ``request``, decoded (a 304: the kept body); raises an error answer's typed error."""
        body = answer_body(response.status_code, response.headers, response.content, str(request.url), self.etags)
        return call.decode(body)

    def _run(self, spec: Spec[Any, Any]) -> Any:
        """A route's request run here, by its kind: one answer, rows across pages, or the live stream."""
        if isinstance(spec, Call):
            return self._send(spec)
        if isinstance(spec, Listing):
            return self._pages(spec)
        if isinstance(spec, StreamCursor):
            return self._stream(spec)
        raise TypeError(f"not a request: {spec!r}")

    def _send(self, call: Call[Any]) -> Any:
        raise NotImplementedError

    def _pages(self, listing: Listing[Any]) -> Any:
        raise NotImplementedError

    def _stream(self, cursor: StreamCursor) -> Any:
        raise NotImplementedError

    create_key = Endpoint(r.create_key)
    usage = Endpoint(r.usage)
    tokens = Endpoint(r.tokens)
    token = Endpoint(r.token)
    candles = Endpoint(r.candles)
    indicators = Endpoint(r.indicators)
    grades = Endpoint(r.grades)
    signals = Endpoint(r.signals)
    levels = Endpoint(r.levels)
    predictions = Endpoint(r.predictions)
    track_record = Endpoint(r.track_record)
    cycles_btc = Endpoint(r.cycles_btc)
    quant = Endpoint(r.quant)
    correlation = Endpoint(r.correlation)
    market = Endpoint(r.market)
    indices = Endpoint(r.indices)
    index = Endpoint(r.index)
    scenarios = Endpoint(r.scenarios)
    report = Endpoint(r.report)
    create_alert = Endpoint(r.create_alert)
    alerts = Endpoint(r.alerts)
    alert = Endpoint(r.alert)
    delete_alert = Endpoint(r.delete_alert)
    alert_events = Endpoint(r.alert_events)
    stream = Endpoint(r.stream)
