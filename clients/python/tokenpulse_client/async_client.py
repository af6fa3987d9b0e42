"""The asynchronous client: the same methods as :class:`~tokenpulse_client.Client`, awaitable (lists and the
stream are async iterators), over a transport of its own. Both declare their methods in
:class:`~tokenpulse_client._api.BaseClient`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

import httpx
from httpx_sse import aconnect_sse

from tokenpulse_client import models as m
from tokenpulse_client._api import BaseClient
from tokenpulse_client._core import Call, Listing, StreamCursor, stream_event, transport_error
from tokenpulse_client.errors import ApiError, error_from
from tokenpulse_client.pagination import AsyncPages

M = TypeVar("M")
T = TypeVar("T", bound=m.ApiModel)


class AsyncClient(BaseClient[httpx.AsyncClient]):
    __doc__ = BaseClient.__doc__

    _pool = httpx.AsyncClient

    async def _send(self, call: Call[M]) -> M:
        request = self._request(call)
        response = await self._transmit(call, request)
        for attempt in range(self.retry.max_retries):
            wait = self.retry.wait_before_retry(response.status_code, response.headers, attempt)
            if wait is None:
                break
            await asyncio.sleep(wait)
            response = await self._transmit(call, request)
        return self._decode(call, request, response)

    async def _transmit(self, call: Call[M], request: httpx.Request) -> httpx.Response:
        try:
            return await self._http.send(request)
        except httpx.TransportError as exc:
            raise transport_error(call, exc) from exc

    def _pages(self, listing: Listing[T]) -> AsyncPages[T]:
        async def fetch(cursor: str | None, size: int) -> m.Page[T]:
            return await self._send(listing.page(cursor, size))

        return AsyncPages(fetch, listing.item, listing.limit, self.page_size)

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _stream(self, cursor: StreamCursor) -> AsyncIterator[m.StreamEvent]:
        while True:
            error = None
            events = self._stream_once(cursor)
            try:
                async for event in events:
                    cursor.saw(event)
                    yield event
            except (httpx.TransportError, ApiError) as exc:
                error = exc
            finally:
                await events.aclose()
            await asyncio.sleep(cursor.pause(self.retry, error))

    async def _stream_once(self, cursor: StreamCursor) -> AsyncGenerator[m.StreamEvent, None]:
        async with aconnect_sse(self._http, "GET", "/v1/stream", **cursor.request(self.api_key)) as source:
            response = source.response
            if response.status_code != 200:
                raise error_from(response.status_code, await response.aread(), response.headers)
            async for sse in source.aiter_sse():
                if sse.event != "hello":
                    yield stream_event(sse)
