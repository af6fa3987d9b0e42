"""Typed errors: every API error answer becomes an :class:`ApiError` subclass carrying its ``code`` and ``message``.

The API answers errors as ``{"error": {"code": str, "message": str}}``; ``code`` is stable and meant for
programs (``unknown_symbol``, ``rate_limited``, ``tier_required`` …), ``message`` for people.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


class TokenpulseError(Exception):
    """Base of every error this client raises."""


class TransportError(TokenpulseError):
    """The server could not be reached, or the connection broke (after the client's own retries)."""


class ApiError(TokenpulseError):
    """An error answer from the API."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after


class BadRequestError(ApiError):
    """400: bad input (a bad symbol, time, range or cursor)."""


class AuthenticationError(ApiError):
    """401: missing, unknown or revoked key."""


class PermissionDeniedError(ApiError):
    """403: not in your tier (e.g. intraday signals on the free tier), or over your alert-rule count."""


class NotFoundError(ApiError):
    """404: unknown symbol, rule or route."""


class InvalidParametersError(ApiError):
    """422: invalid parameters (a bad interval or limit), or too little history for an answer."""


class RateLimitError(ApiError):
    """429: over a limit, still after the client's bounded retries; ``retry_after`` says how long to wait."""


class ServerError(ApiError):
    """5xx: the server failed (``request_id`` identifies the request in its logs)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: InvalidParametersError,
    429: RateLimitError,
}


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (the API sends whole seconds), or None when absent or not a number."""
    raw = headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def error_from(status: int, body: bytes, headers: Mapping[str, str]) -> ApiError:
    """The typed error of an error answer; a body not in the API's shape (a proxy's page) keeps its first line."""
    code, message = f"http_{status}", body.decode(errors="replace").strip().partition("\n")[0][:300]
    try:
        err = json.loads(body)["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        pass
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    return cls(
        status,
        code,
        message or f"HTTP {status}",
        request_id=headers.get("x-request-id"),
        retry_after=retry_after_s(headers),
    )
