"""Page cursors: opaque to clients, inside a small typed model as base64url JSON.

Every list endpoint pages with one of the models below, and every cursor a client sends back is decoded
here: at most ``MAX_CURSOR_CHARS``, strict base64url, then the model in pydantic's strict mode (no extra
keys, no coercion: a boolean, a float, a string or a nested value where an int belongs is refused, and ints
are bounded), so whatever a client forges is a 400, never a value the store or the code cannot take.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from tokenpulse_shared.events import SYMBOL_PATTERN

from tokenpulse_gateway.errors import ApiError

MAX_CURSOR_CHARS = 600
"""the longest cursor that can be issued: a firing's time and a 64-character id all of JSON escapes (552)"""

STORE_MIN_MS = -2_208_988_800_000
"""1900-01-01T00:00:00Z, the first instant the store's ``DateTime64(3)`` columns hold"""
STORE_MAX_MS = 10_413_791_999_999
"""2299-12-31T23:59:59.999Z, the last one"""

RowMs = Annotated[int, Field(ge=0, le=STORE_MAX_MS)]
"""a stored row's time (Unix milliseconds): what a cursor may point at"""

BAD_CURSOR = "cursor is not one this API issued; start without it"


class Cursor(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class TimeCursor(Cursor):
    """History pages (candles, indicators, grades, signals): after this row time."""

    ts: RowMs


class TokenCursor(Cursor):
    """``/v1/tokens``: after the row with this sort value and symbol, for the query whose fingerprint is ``f``."""

    v: float | None = Field(allow_inf_nan=False)
    symbol: str = Field(pattern=SYMBOL_PATTERN)
    f: str = Field(pattern=r"^[0-9a-f]{12}$")


class RuleCursor(Cursor):
    """``/v1/alerts``: after this rule id."""

    rule_id: str = Field(min_length=1, max_length=64)


class FiringCursor(Cursor):
    """``/v1/alerts/events`` (newest first): before this firing time and id."""

    ts: RowMs
    id: str = Field(max_length=64)


C = TypeVar("C", bound=Cursor)


def encode(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(cursor.model_dump_json().encode()).decode().rstrip("=")


def decode(kind: type[C], text: str) -> C:
    """The cursor a client sent back, or a 400 ``invalid_cursor``."""
    if len(text) > MAX_CURSOR_CHARS:
        raise ApiError(400, "invalid_cursor", BAD_CURSOR)
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        return kind.model_validate_json(raw)
    except (ValueError, binascii.Error) as exc:  # pydantic's ValidationError is a ValueError
        raise ApiError(400, "invalid_cursor", BAD_CURSOR) from exc
