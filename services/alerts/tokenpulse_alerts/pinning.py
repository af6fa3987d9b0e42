"""Webhook connections go to the addresses the SSRF guard checked, never to a second DNS answer.

:func:`pinned` says, for the duration of one request, which addresses a host name may be reached at
(those :func:`tokenpulse_shared.netguard.check_target` resolved and checked); :class:`PinnedBackend`,
httpcore's network layer under the webhook client, connects only to those and refuses a host without
any. The URL keeps its host name, so the ``Host`` header, TLS SNI and the certificate check are on the
name, and httpcore pools connections per name: one host's verified TLS connection never carries
another host's request, as it could if the URL named the address.
"""

from __future__ import annotations

import contextvars
import ssl
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import httpcore
import httpx

_PINS: contextvars.ContextVar[Mapping[str, tuple[str, ...]]] = contextvars.ContextVar(
    "webhook_pins", default=MappingProxyType({})
)


@contextmanager
def pinned(host: str, addresses: Iterable[str]) -> Iterator[None]:
    """Within this block (this task), ``host`` is reached only at ``addresses``."""
    token = _PINS.set({**_PINS.get(), host.lower(): tuple(addresses)})
    try:
        yield
    finally:
        _PINS.reset(token)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to a pinned address of the host asked for, trying them in order; never resolves a name."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = _PINS.get().get(host.lower())
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no checked address: webhook hosts are resolved only by the guard")
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are not sent over unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose network layer is a :class:`PinnedBackend`."""

    def __init__(
        self,
        backend: httpcore.AsyncNetworkBackend | None = None,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0),
    ) -> None:
        super().__init__(limits=limits)
        # httpx takes no network backend (encode/httpx#3180): its pool is replaced by one built the same way
        # with httpcore's public API, whose network layer connects only to pinned addresses
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(backend),
        )
