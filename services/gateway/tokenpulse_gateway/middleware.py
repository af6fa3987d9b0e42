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
    def __init__(self, app: ASGIApp, max_body_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.timeout_s = timeout_s

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

        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._error(send_with_headers, 413, "payload_too_large", self._too_large())
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise ApiError(413, "payload_too_large", self._too_large())
            return message

        try:
            async with asyncio.timeout(None if path.startswith(STREAMING) else self.timeout_s):
                await self.app(scope, limited_receive, send_with_headers)
        except TimeoutError:
            if started:
                raise
            msg = f"the request took longer than {self.timeout_s:g} s; narrow it (fewer rows, a shorter range)"
            await self._error(send_with_headers, 504, "timeout", msg)
        except ApiError as exc:  # the body limit, when no exception handler inside answered it
            if started:
                raise
            await self._error(send_with_headers, exc.status, exc.code, exc.message)

    def _too_large(self) -> str:
        return f"request body larger than {self.max_body} bytes"

    @staticmethod
    async def _error(send: Send, status: int, code: str, message: str) -> None:
        body = json.dumps(error_body(code, message)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
