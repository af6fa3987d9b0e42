"""One pure-ASGI middleware for every answer: security headers, rate-limit headers, and the
request size and time limits (pure ASGI so it neither buffers the event stream nor slows hot reads)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenpulse_gateway.errors import ApiError, error_body

API_CSP = "default-src 'none'; frame-ancestors 'none'"
DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
STREAMING = ("/v1/stream",)
NO_CSP = ("/docs", "/redoc")  # FastAPI's interactive docs load their own assets


def csp_for(path: str) -> bytes | None:
    if path.startswith(NO_CSP):
        return None
    if path == "/dashboard" or path.startswith("/static/"):
        return DASHBOARD_CSP.encode()
    return API_CSP.encode()


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, timeout_s: float, body_timeout_s: float = 15.0) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.timeout_s = timeout_s
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        state: dict[str, Any] = scope.setdefault("state", {})
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [h for h in COMMON if h[0] not in present]
                csp = csp_for(path)
                if csp and b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", csp))
                verdict = state.get("ratelimit")
                if verdict is not None and b"x-ratelimit-limit" not in present:
                    headers += [(k.lower().encode(), v.encode()) for k, v in verdict.headers().items()]
                message = {**message, "headers": headers}
            await send(message)

        if _has_body(scope):  # read whole here, within its limits, however it is framed
            try:
                self._refuse_declared_excess(scope)
                receive = await self._read_body(receive)
            except ApiError as exc:  # the rest of the body is never read: the connection closes after the answer
                await self._error(send_with_headers, exc.status, exc.code, exc.message, close=True)
                return
            except _ClientGone:
                return

        try:
            async with asyncio.timeout(None if path.startswith(STREAMING) else self.timeout_s):
                await self.app(scope, receive, send_with_headers)
        except TimeoutError:
            if started:
                raise
            msg = f"the request took longer than {self.timeout_s:g} s; narrow it (fewer rows, a shorter range)"
            await self._error(send_with_headers, 504, "timeout", msg)

    def _refuse_declared_excess(self, scope: Scope) -> None:
        """413 at once for a Content-Length above the limit, before any of the body is read."""
        length = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if length.isdigit() and int(length) > self.max_body:
            raise ApiError(413, "payload_too_large", f"request body larger than {self.max_body} bytes")

    async def _read_body(self, receive: Receive) -> Receive:
        """The request's body, read within ``max_body`` bytes (413) and ``body_timeout_s`` (408), handed
        to the application as one message: the limit holds for Content-Length, chunked and lying framing
        alike, and an application never sees a partial body."""
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _ClientGone
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        raise ApiError(413, "payload_too_large", f"request body larger than {self.max_body} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise ApiError(
                408, "request_timeout", f"the request body did not arrive within {self.body_timeout_s:g} s"
            ) from None
        body: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal body
            if body is None:
                return await receive()  # after the body: the disconnect, whenever it comes
            message, body = body, None
            return message

        return replay

    @staticmethod
    async def _error(send: Send, status: int, code: str, message: str, close: bool = False) -> None:
        body = json.dumps(error_body(code, message)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _ClientGone(Exception):
    """The client went away while sending its body: there is no one to answer."""


def _has_body(scope: Scope) -> bool:
    """Whether the request frames a body: a Content-Length above 0, or a Transfer-Encoding (chunked)."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b"0 ") != b""):
            return True
    return False
