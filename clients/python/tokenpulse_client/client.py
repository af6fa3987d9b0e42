"""The synchronous client: its transport (sending, retrying, paging, streaming) under the methods that
:class:`~tokenpulse_client._api.BaseClient` declares once for both clients."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from contextlib import closing
from typing import TypeVar

import httpx
from httpx_sse import connect_sse

from tokenpulse_client import models as m
from tokenpulse_client._api import BaseClient
from tokenpulse_client._core import Call, Listing, StreamCursor, stream_event, transport_error
from tokenpulse_client.errors import ApiError, error_from
from tokenpulse_client.pagination import Pages

M = TypeVar("M")
T = TypeVar("T", bound=m.ApiModel)


class Client(BaseClient[httpx.Client]):
    __doc__ = BaseClient.__doc__

    _pool = httpx.Client

    def _send(self, call: Call[M]) -> M:
        request = self._request(call)
        response = self._transmit(call, request)
        for attempt in range(self.retry.max_retries):
            wait = self.retry.wait_before_retry(response.status_code, response.headers, attempt)
            if wait is None:
                break
            time.sleep(wait)
            response = self._transmit(call, request)
        return self._decode(call, request, response)

    def _transmit(self, call: Call[M], request: httpx.Request) -> httpx.Response:
        try:
            return self._http.send(request)
        except httpx.TransportError as exc:
            raise transport_error(call, exc) from exc

    def _pages(self, listing: Listing[T]) -> Pages[T]:
        return Pages(
            lambda cursor, size: self._send(listing.page(cursor, size)), listing.item, listing.limit, self.page_size
        )

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stream(self, cursor: StreamCursor) -> Iterator[m.StreamEvent]:
        while True:
            error = None
            try:
                with closing(self._stream_once(cursor)) as events:
                    for event in events:
                        cursor.saw(event)
                        yield event
            except (httpx.TransportError, ApiError) as exc:
                error = exc
            time.sleep(cursor.pause(self.retry, error))

    def _stream_once(self, cursor: StreamCursor) -> Generator[m.StreamEvent, None, None]:
        with connect_sse(self._http, "GET", "/v1/stream", **cursor.request(self.api_key)) as source:
            response = source.response
            if response.status_code != 200:
                raise error_from(response.status_code, response.read(), response.headers)
            for sse in source.iter_sse():
                if sse.event != "hello":
                    yield stream_event(sse)
