"""The MCP tools of :mod:`tokenpulse_client.mcp_server` served over streamable HTTP, for ``/mcp``.

The server is the official ``mcp`` SDK's, built by the same ``build_server`` as ``tokenpulse mcp`` (stdio), in
**stateless** mode with **JSON answers**: each MCP message is one POST answered by one JSON body. So any
replica can answer any request (no session to pin to one), nothing is kept per client between requests, no
stream stays open, and the gateway's body limit and request deadline hold as for any API request.

Each request's tools call this same app's REST API in-process, as the caller (see ``routes/mcp.py``): the
client they use is the one :data:`CALLER` holds for the request being served.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from contextvars import ContextVar

from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send
from tokenpulse_client import AsyncClient
from tokenpulse_client.mcp_server import build_server

CALLER: ContextVar[AsyncClient] = ContextVar("tokenpulse_mcp_caller")
"""the SDK client of the request being served: the tools' calls carry its key (the MCP server's tasks start
from the request's task, so they see the request's value)"""


class McpTools:
    """The MCP server, its session manager's lifetime (:meth:`start`/:meth:`stop`), and the MCP requests
    each key has in flight on this replica."""

    def __init__(self, max_body_bytes: int) -> None:
        self.server = build_server(CALLER.get)
        self.app: ASGIApp = self.server.streamable_http_app(
            streamable_http_path="/mcp",
            stateless_http=True,
            json_response=True,
            max_request_body_size=max_body_bytes,
            # DNS-rebinding protection guards unauthenticated local servers; every request here needs an API
            # key, and the default (localhost only) would refuse the gateway's real host names
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        # the SDK logs each stateless request's end and each tool error (already the agent's answer) at INFO
        logging.getLogger("mcp").setLevel(logging.WARNING)
        self.in_flight: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.running = False

    async def start(self) -> None:
        """Run the session manager (its task group serves every request) in a task of its own, until
        :meth:`stop`: the runtime starts and stops the services, not an ASGI lifespan."""
        started = asyncio.Event()

        async def run() -> None:
            async with self.server.session_manager.run():
                self.running = True
                started.set()
                try:
                    await self._stop.wait()
                finally:
                    self.running = False

        self._task = asyncio.create_task(run(), name="mcp-session-manager")
        ready = asyncio.create_task(started.wait())
        await asyncio.wait([self._task, ready], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._task.done():  # it failed to start: say why now
            self._task.result()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def claim(self, key_id: str, cap: int) -> bool:
        """Count one more MCP request of ``key_id`` in flight; False (nothing counted) at ``cap``."""
        if self.in_flight[key_id] >= cap:
            return False
        self.in_flight[key_id] += 1
        return True

    def release(self, key_id: str) -> None:
        self.in_flight[key_id] -= 1
        if self.in_flight[key_id] <= 0:
            del self.in_flight[key_id]

    async def serve(self, client: AsyncClient, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one MCP request; its tools call the API through ``client``."""
        token = CALLER.set(client)
        try:
            await self.app(scope, receive, send)
        finally:
            CALLER.reset(token)
