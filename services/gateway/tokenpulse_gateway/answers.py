"""Pre-serialised JSON answers with their ETag, and the cache of history pages.

Hot answers (``/v1/tokens``, ``/v1/tokens/{symbol}``) are serialised once per version of
the live state, not once per request; history pages (candles, indicators) are kept for at
most ``TOKENPULSE_HISTORY_CACHE_TTL_S`` and dropped at once when the bus brings a new candle
(or indicator) of that token and interval.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response


@dataclass(frozen=True, slots=True)
class Encoded:
    """A JSON body as bytes, and its strong ETag."""

    body: bytes
    etag: str


def encode(body: Any) -> Encoded:
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Encoded(data, '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"')


class JsonAnswer(Response):
    """A JSON answer whose headers are built directly (no per-request header normalisation)."""

    media_type = "application/json"

    def __init__(self, status_code: int, body: bytes, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = raw_headers


def answer(request: Request, enc: Encoded, max_age: int) -> Response:
    """``enc`` with its ETag and Cache-Control; an empty 304 when the client already has it."""
    tag = enc.etag.encode()
    cache = f"private, max-age={max_age}".encode()
    match = request.headers.get("if-none-match")
    if match and (enc.etag in [t.strip().removeprefix("W/") for t in match.split(",")] or match.strip() == "*"):
        return JsonAnswer(304, b"", [(b"etag", tag), (b"cache-control", cache)])
    headers = [
        (b"etag", tag),
        (b"cache-control", cache),
        (b"content-length", str(len(enc.body)).encode()),
        (b"content-type", b"application/json"),
    ]
    return JsonAnswer(200, enc.body, headers)


class PageCache:
    """History pages by query, each for at most ``ttl_s`` and at most ``max_bytes`` of bodies in all
    (least recently used dropped first); :meth:`invalidate` drops a token's pages of one interval."""

    def __init__(self, ttl_s: float, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.size = 0
        self._pages: OrderedDict[tuple[Any, ...], tuple[float, Encoded]] = OrderedDict()
        self._stale_at: dict[tuple[str, str, str], float] = {}
        """when (kind, symbol, interval) last had news: a page read before that is not kept"""

    def get(self, key: tuple[Any, ...]) -> Encoded | None:
        """``key`` is (kind, symbol, interval, ...): the first three say which bus events make it stale."""
        hit = self._pages.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit[0] >= self.ttl_s:
            self._drop(key)
            return None
        self._pages.move_to_end(key)
        return hit[1]

    def put(self, key: tuple[Any, ...], enc: Encoded, made_at: float) -> None:
        """Keep ``enc``, computed from what the store held at ``made_at`` (monotonic, taken before the query)."""
        if self.ttl_s <= 0 or len(enc.body) > self.max_bytes // 4 or self._stale_at.get(key[:3], -1.0) >= made_at:
            return
        self._drop(key)
        self._pages[key] = (made_at, enc)
        self.size += len(enc.body)
        while self.size > self.max_bytes:
            self._drop(next(iter(self._pages)))

    def invalidate(self, kind: str, pairs: set[tuple[str, str]]) -> None:
        """Drop the ``kind`` pages of these (symbol, interval) pairs."""
        now = time.monotonic()
        for symbol, interval in pairs:
            self._stale_at[(kind, symbol, interval)] = now
        for key in [k for k in self._pages if k[0] == kind and (k[1], k[2]) in pairs]:
            self._drop(key)

    def _drop(self, key: tuple[Any, ...]) -> None:
        hit = self._pages.pop(key, None)
        if hit is not None:
            self.size -= len(hit[1].body)
