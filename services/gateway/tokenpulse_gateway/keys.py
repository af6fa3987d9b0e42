"""API keys: issued once, stored only as a SHA-256 hash, checked on every ``/v1`` call.

Keys are 256-bit random tokens, so a fast hash is enough (no dictionary to
guess from); the plain key is shown to its owner once and never stored.

Revocation writes a new version of the row (``revoked = 1``). The replica that
revokes drops the key from its cache at once; other replicas trust their cached
lookup for at most ``key_cache_ttl_s`` (``TOKENPULSE_KEY_CACHE_TTL_S``, 30 s by
default), so a revoked key is refused everywhere within that time.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cachetools import TTLCache
from tokenpulse_shared.store import Store

from tokenpulse_gateway.queries.keys import KeyQueries

KEY_PREFIX = "tp_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    key_hash: str
    key_id: str
    name: str
    tier: str
    revoked: bool = False


class KeyStore:
    """Keys by hash, with two bounded caches (cachetools' TTL caches, least recently used out first):
    known keys (revoked ones too) for ``cache_ttl_s``, unknown ones for ``miss_ttl_s``. Kept apart, a
    flood of wrong keys cannot push the known ones out, nor grow memory past ``cache_size``."""

    def __init__(
        self, store: Store, cache_ttl_s: float = 30.0, cache_size: int = 10_000, miss_ttl_s: float = 5.0
    ) -> None:
        self.rows = KeyQueries(store)
        self.cache_ttl_s = cache_ttl_s
        self._known: TTLCache[str, ApiKey] = TTLCache(cache_size, cache_ttl_s)
        self._unknown: TTLCache[str, bool] = TTLCache(max(1, cache_size // 10), miss_ttl_s)

    async def create(self, name: str, email: str | None, tier: str = "free") -> tuple[str, ApiKey]:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(hash_key(key), secrets.token_hex(8), name, tier)
        await self._write(record, email, int(datetime.now(UTC).timestamp() * 1000))
        self._remember(record)
        return key, record

    async def _write(self, record: ApiKey, email: str | None, created_ms: int) -> None:
        r = record
        await self.rows.write(r.key_hash, r.key_id, r.name, email, r.tier, created_ms, r.revoked)

    async def get(self, key_id: str) -> dict[str, Any] | None:
        """A key's public record by its id (never the key or its hash)."""
        row = await self.rows.by_id(key_id)
        if row is None:
            return None
        h, name, email, tier, created_ms, revoked = row
        return {
            "key_id": key_id,
            "name": name,
            "email": email,
            "tier": tier,
            "created_at": datetime.fromtimestamp(created_ms / 1000, UTC).isoformat().replace("+00:00", "Z"),
            "revoked": bool(revoked),
            "_hash": h,
            "_created_ms": created_ms,
        }

    async def revoke(self, key_id: str) -> bool:
        """Revoke ``key_id``; False when there is no such key. Refused at once by this replica."""
        found = await self.get(key_id)
        if found is None:
            return False
        record = ApiKey(found["_hash"], key_id, found["name"], found["tier"], revoked=True)
        if not found["revoked"]:
            await self._write(record, found["email"], found["_created_ms"])
        self._remember(record)
        return True

    def _remember(self, record: ApiKey) -> None:
        self._unknown.pop(record.key_hash, None)
        self._known[record.key_hash] = record

    def cached(self, key: str) -> tuple[bool, ApiKey | None]:
        """``(True, record)`` when this replica knows the answer for ``key`` without the store (``record``
        None: known to be wrong); ``(False, None)`` when only the store can tell."""
        return self._cached(hash_key(key))

    def _cached(self, digest: str) -> tuple[bool, ApiKey | None]:
        record = self._known.get(digest)
        if record is not None:
            return True, record
        return digest in self._unknown, None

    async def lookup(self, key: str) -> ApiKey | None:
        digest = hash_key(key)
        known, record = self._cached(digest)
        if known:
            return record
        row = await self.rows.by_hash(digest)
        if row is None:
            self._unknown[digest] = True
            return None
        record = ApiKey(digest, row[0], row[1], row[2], bool(row[3]))
        self._remember(record)
        return record
