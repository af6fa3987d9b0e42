"""``POST /mcp``: the MCP tools over streamable HTTP, for AI agents (see :mod:`tokenpulse_gateway.mcp`).

A guard in front of the MCP server: the API key as ``/v1`` takes it (401 without a valid one, the wrong-key
allowance, and the MCP request counts against the key's limits, 429 over them), a cap on the MCP requests one
key has in flight, and the API's nesting limit on the body; all in the API's error shape. The tools then call
the REST API of this same app in-process (the SDK's ``AsyncClient`` over ``httpx.ASGITransport``) with the
caller's key and address, so each call they make is authenticated, limited and counted as the same REST call.
"""

from __future__ import annotations

import httpx
from fastapi import APIRouter
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send
from tokenpulse_client import NO_RETRY, AsyncClient

from tokenpulse_gateway.bodies import check_body
from tokenpulse_gateway.deps import request_key, require_key
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.state import state_of

# the in-process API's origin: any name serves, the requests never leave the process
INTERNAL_BASE = "http://gateway.internal"


class McpEndpoint:
    """The ASGI app of ``/mcp`` (a class, so Starlette passes it the raw request rather than a Request)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if request.method != "POST":  # stateless: no session to end (DELETE), no server stream to open (GET)
            raise ApiError(
                405, "method_not_allowed", "/mcp takes MCP messages as POST (stateless)", headers={"Allow": "POST"}
            )
        state = state_of(request)
        if not state.mcp.running:
            raise ApiError(503, "mcp_unavailable", "the MCP server is starting or stopping; retry shortly")
        key = await require_key(request)
        cap = state.tiers.named(key.tier).max_mcp_calls
        if not state.mcp.claim(key.key_id, cap):
            raise ApiError(
                429,
                "too_many_mcp_calls",
                f"this key already has {cap} MCP requests in flight, its tier's limit; wait for one to finish",
                headers={"Retry-After": "1"},
            )
        try:
            body = await request.body()
            check_body(body)
            async with self._http(scope) as http:
                # no retries: an agent is told how long to wait rather than kept waiting on the server
                client = AsyncClient(
                    INTERNAL_BASE, request_key(request), retry=NO_RETRY, etag_cache_size=0, http_client=http
                )
                await state.mcp.serve(client, scope, _replay(body, receive), send)
        finally:
            state.mcp.release(key.key_id)

    @staticmethod
    def _http(scope: Scope) -> httpx.AsyncClient:
        """The in-process HTTP client of this request: the app itself as the transport, the caller's address
        and request id."""
        peer = scope.get("client") or ("127.0.0.1", 0)
        return httpx.AsyncClient(
            base_url=INTERNAL_BASE,
            transport=httpx.ASGITransport(app=scope["app"], client=(peer[0], peer[1])),
            trust_env=False,
            headers={"X-Request-ID": scope.get("state", {}).get("request_id", "")},
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` (already read) once, then whatever the client sends next."""
    pending: Message | None = {"type": "http.request", "body": body, "more_body": False}

    async def replay() -> Message:
        nonlocal pending
        if pending is None:
            return await receive()
        message, pending = pending, None
        return message

    return replay


router = APIRouter()
router.routes.append(Route("/mcp", McpEndpoint(), include_in_schema=False))
