"""API keys: stored as their SHA-256 hash, one row per version (revocation writes a new one)."""

from __future__ import annotations

import time
from typing import Any

from tokenpulse_shared.store import Store

KEY_COLUMNS = ["key_hash", "key_id", "name", "email", "tier", "created_at", "revoked", "version"]


class KeyQueries:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def write(
        self, key_hash: str, key_id: str, name: str, email: str | None, tier: str, created_ms: int, revoked: bool
    ) -> None:
        row = [key_hash, key_id, name, email, tier, created_ms, int(revoked), time.time_ns()]
        await self.store.insert("api_keys", [[v] for v in row], KEY_COLUMNS, interactive=True)

    async def by_id(self, key_id: str) -> tuple[Any, ...] | None:
        """(hash, name, email, tier, created ms, revoked) of the key ``key_id``."""
        rows = await self.store.query(
            "SELECT key_hash, name, email, tier, toUnixTimestamp64Milli(created_at), revoked "
            "FROM api_keys FINAL WHERE key_id = {k:String}",
            {"k": key_id},
        )
        return rows[0] if rows else None

    async def by_hash(self, key_hash: str) -> tuple[Any, ...] | None:
        """(key id, name, tier, revoked) of the key whose hash is ``key_hash``."""
        rows = await self.store.query(
            "SELECT key_id, name, tier, revoked FROM api_keys FINAL WHERE key_hash = {h:String}",
            {"h": key_hash},
        )
        return rows[0] if rows else None
