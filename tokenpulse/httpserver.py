"""The uvicorn server's connection limits: a deadline for a request's head, idle keep-alive, proxies.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``) but gives a client that is
sending a request's line and headers unlimited time: a header line every few seconds holds a
connection (and its memory) for ever, and a connection that sends nothing at all is never closed.
:class:`HeadDeadlineProtocol` is uvicorn's own h11 protocol with one timer more: whenever the
connection waits for a request (on connect, after each answer), the whole head must arrive within
``header_timeout_s``, else the connection is closed. The body has its own deadline in the gateway's
middleware, which reads it before the application does.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from tokenpulse_shared.settings import Settings
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose next request head is not complete in time."""

    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._serving():
            self._cancel_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._serving():  # waiting for the next request (or for the rest of an unread body)
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _serving(self) -> bool:
        """A request's head has arrived and its answer is not complete yet."""
        return self.cycle is not None and not self.cycle.response_complete

    def _await_head(self) -> None:
        if self._head_deadline is None and not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self._serving() and not self.transport.is_closing():
            self.transport.close()


def protocol_with_deadline(header_timeout_s: float) -> type[HeadDeadlineProtocol]:
    """:class:`HeadDeadlineProtocol` with this deadline (uvicorn instantiates the class it is given)."""
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"header_timeout_s": header_timeout_s})


def server_config(app: Any, settings: Settings, port: int) -> uvicorn.Config:
    """uvicorn's configuration: deadlines, and forwarded headers believed only from the trusted proxies."""
    trusted = settings.http.trusted_proxies
    return uvicorn.Config(
        app,
        host=settings.http.host,
        port=port,
        http=protocol_with_deadline(settings.http.http_header_timeout_s),
        timeout_keep_alive=settings.http.http_keepalive_s,
        # uvicorn believes X-Forwarded-For from loopback by default: anyone on the host could pose as anyone
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or [],
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=10,  # open /v1/stream connections must not hold the shutdown
    )
