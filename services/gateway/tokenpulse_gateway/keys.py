"""API keys: issued once, stored only as a SHA-256 hash, checked on every ``/v1`` call.

Keys are 256-bit random tokens, so a fast hash is enough (no dictionary to
guess from); the plain key is shown to its owner once and never stored.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from tokenpulse_shared.store import Store

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
    def __init__(self, store: Store, cache_ttl_s: float = 30.0) -> None:
        self.store = store
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    async def create(self, name: str, email: str | None, tier: str = "free") -> tuple[str, ApiKey]:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(hash_key(key), secrets.token_hex(8), name, tier)
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        await self.store.insert(
            "api_keys",
            [[record.key_hash], [record.key_id], [name], [email], [tier], [now_ms], [0], [time.time_ns()]],
            ["key_hash", "key_id", "name", "email", "tier", "created_at", "revoked", "version"],
            interactive=True,
        )
        self._cache[record.key_hash] = (time.monotonic(), record)
        return key, record

    async def lookup(self, key: str) -> ApiKey | None:
        digest = hash_key(key)
        cached = self._cache.get(digest)
        if cached and time.monotonic() - cached[0] < self.cache_ttl_s:
            return cached[1]
        rows = await self.store.query(
            "SELECT key_id, name, tier, revoked FROM api_keys FINAL WHERE key_hash = {h:String}",
            {"h": digest},
        )
        record = ApiKey(digest, rows[0][0], rows[0][1], rows[0][2], bool(rows[0][3])) if rows else None
        self._cache[digest] = (time.monotonic(), record)
        return record
