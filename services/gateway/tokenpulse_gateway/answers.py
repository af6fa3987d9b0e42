"""JSON answers made from bytes serialised once, with a strong ETag: a 304 when the client has them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response


# a list answer's shape, for the API document (no docstring: it would become the schema's description)
class Page(BaseModel):
    data: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Encoded:
    """A JSON body as bytes, and its strong ETag."""

    body: bytes
    etag: str


def encode(body: Any) -> Encoded:
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Encoded(data, '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"')


def answer(request: Request, enc: Encoded, max_age: int) -> Response:
    """``enc`` with its ETag and Cache-Control; an empty 304 when the client already has it."""
    headers = {"etag": enc.etag, "cache-control": f"private, max-age={max_age}"}
    match = request.headers.get("if-none-match")
    if match and (enc.etag in [t.strip().removeprefix("W/") for t in match.split(",")] or match.strip() == "*"):
        return Response(status_code=304, headers=headers)
    return Response(enc.body, headers=headers, media_type="application/json")
