"""The contract's error format: ``{"error": {"code": str, "message": str}}``, 4xx for client mistakes; and the
request boundary: a request id for every request, and one log line (never a traceback) for an unexpected error."""

from __future__ import annotations

import re
import secrets

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tokenpulse_shared.telemetry import REQUEST_ID

log = structlog.get_logger(__name__)

REQUEST_ID_HEADER = b"x-request-id"
# a client's id is kept when it is this shape (ASCII, no spaces or quotes, short); anything else gets a new one
WELL_FORMED_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path"))
            parts.append(f"{loc or 'request'}: {err.get('msg')}")
        return JSONResponse(error_body("invalid_request", "; ".join(parts)), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not JSON at all (e.g. not UTF-8): the contract's 422
            return JSONResponse(error_body("invalid_request", "request body: not valid UTF-8 JSON"), 422)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)

    @app.exception_handler(404)
    async def _not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body("not_found", f"no route {request.url.path}"), 404)


def request_id(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when well formed, else a new random one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and WELL_FORMED_ID.fullmatch(value):
            return value.decode("ascii")
    return secrets.token_hex(8)


def route_of(scope: Scope) -> str:
    """The matched route's template (``/v1/candles/{symbol}``), else the path."""
    return str(getattr(scope.get("route"), "path", None) or scope.get("path", ""))


class RequestBoundary:
    """Outermost middleware. Gives every request an id (echoed as ``X-Request-ID``, bound to every log line of
    the request) and answers an exception the app let through with the contract's 500, logged as one line.
    It does not re-raise: Starlette's and uvicorn's handlers would log the same error again as a traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), (REQUEST_ID_HEADER, rid.encode())]}
            await send(message)

        bound = REQUEST_ID.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.error(
                "unhandled error", exc_info=exc, method=scope.get("method"), route=route_of(scope), request_id=rid
            )
            if not started:  # else the answer is cut short: the client sees a broken response
                await internal_error(rid)(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(bound)


def internal_error(rid: str) -> JSONResponse:
    message = f"internal error (request id {rid}); it has been logged, quote the id when you report it"
    return JSONResponse(error_body("internal", message), 500)
