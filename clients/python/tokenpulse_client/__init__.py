"""Python client for the Tokenpulse API: ``Client`` and ``AsyncClient``, typed answers, transparent pages,
429 retries, ETag reuse, typed errors and the live stream. The MCP server is ``tokenpulse_client.mcp_server``."""

from tokenpulse_client._core import NO_RETRY, RetryPolicy
from tokenpulse_client._version import __version__
from tokenpulse_client.async_client import AsyncClient
from tokenpulse_client.client import Client
from tokenpulse_client.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    InvalidParametersError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TokenpulseError,
    TransportError,
)
from tokenpulse_client.models import AlertChannel, AlertCondition
from tokenpulse_client.pagination import AsyncPages, Pages

__all__ = [
    "NO_RETRY",
    "AlertChannel",
    "AlertCondition",
    "ApiError",
    "AsyncClient",
    "AsyncPages",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "InvalidParametersError",
    "NotFoundError",
    "Pages",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "TokenpulseError",
    "TransportError",
    "__version__",
]
