"""HTTP metrics for Prometheus as one pure-ASGI middleware, and the ``/metrics`` endpoint.

The series are those of prometheus-fastapi-instrumentator's defaults, which the gateway
used before (the Grafana dashboard reads them): ``http_requests_total`` (handler, status
class such as ``2xx``, method), ``http_request_size_bytes`` and ``http_response_size_bytes``
(handler), ``http_request_duration_highr_seconds`` (no labels, many buckets) and
``http_request_duration_seconds`` (handler, method; few buckets). ``handler`` is the route
template (``/v1/tokens/{symbol}``), ``none`` when no route matched.

Why not the instrumentator itself: it found the route by matching the path against every
route again on each request and built a Request and a Response per request, about a fifth
of a hot read's time. Here the route comes from the scope Starlette's router already
filled in (``scope["route"]``) and the labelled children are looked up once per label set.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, Summary, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HIGHR_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10, 30, 60)

REQUESTS = Counter(
    "http_requests_total", "Total number of requests by method, status and handler.", ("method", "status", "handler")
)
REQUEST_SIZE = Summary("http_request_size_bytes", "Content length of incoming requests by handler.", ("handler",))
RESPONSE_SIZE = Summary("http_response_size_bytes", "Content length of outgoing responses by handler.", ("handler",))
LATENCY_HIGHR = Histogram(
    "http_request_duration_highr_seconds",
    "Latency with many buckets but no API specific labels. Made for more accurate percentile calculations.",
    buckets=HIGHR_BUCKETS,
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Latency with only few buckets by handler. Made to be only used if aggregation by handler is important.",
    ("method", "handler"),
    buckets=(0.1, 0.5, 1),
)


class _Children:
    """The labelled metric children of one (method, status class, handler), looked up once."""

    __slots__ = ("latency", "req_size", "requests", "resp_size")

    def __init__(self, method: str, status: str, handler: str) -> None:
        self.requests = REQUESTS.labels(method, status, handler)
        self.req_size = REQUEST_SIZE.labels(handler)
        self.resp_size = RESPONSE_SIZE.labels(handler)
        self.latency = LATENCY.labels(method, handler)


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""other methods count as ``other``: a client cannot grow the label set"""
_children: dict[tuple[str, str, str], _Children] = {}


def _content_length(headers: Any) -> int:
    for k, v in headers:
        if k == b"content-length":
            return int(v) if v.isdigit() else 0
    return 0


class HttpMetrics:
    def __init__(self, app: ASGIApp, excluded: tuple[str, ...] = ("/metrics",)) -> None:
        self.app = app
        self.excluded = excluded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.excluded:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        resp_len = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, resp_len
            if message["type"] == "http.response.start":
                status = message["status"]
                resp_len = _content_length(message.get("headers", ()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            duration = time.perf_counter() - start
            route = scope.get("route")
            handler = getattr(route, "path", None) or "none"
            method = scope["method"] if scope["method"] in METHODS else "other"
            label = (method, f"{status // 100}xx", handler)
            children = _children.get(label)
            if children is None:
                children = _children[label] = _Children(*label)
            children.requests.inc()
            children.req_size.observe(_content_length(scope["headers"]))
            children.resp_size.observe(resp_len)
            children.latency.observe(duration)
            LATENCY_HIGHR.observe(duration)


async def metrics_endpoint(_: Request) -> Response:
    """Prometheus exposition of every metric of this process."""
    return Response(generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
