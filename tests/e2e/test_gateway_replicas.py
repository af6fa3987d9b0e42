"""Two ``tokenpulse run gateway`` processes (replicas) over the real Kafka broker and one real Redis: one key's
per-minute limit is shared by both, and neither process logs the key."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from tokenpulse_gateway.keys import ApiKey, KeyStore, hash_key
from tokenpulse_shared.store import Store

from testkit.procs import Proc, free_port, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]
LIMIT = 10


async def seed_key(data_dir: Path, key: str, key_id: str) -> None:
    """Each replica has its own embedded engine here (a shared ClickHouse in production): same key in both."""
    store = await Store(f"chdb://{(data_dir / 'clickhouse').resolve()}").open()
    try:
        await KeyStore(store)._write(
            ApiKey(hash_key(key), key_id, "replicas", "free"), None, int(datetime.now(UTC).timestamp() * 1000)
        )
    finally:
        await store.close()


def test_two_gateway_processes_share_one_rate_limit(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    key, key_id = f"tp_e2e{uuid.uuid4().hex}", uuid.uuid4().hex[:16]
    prefix = f"e2e-rl-{uuid.uuid4().hex[:8]}"
    procs, bases = [], []
    for name in ("a", "b"):
        asyncio.run(seed_key(tmp_path / name, key, key_id))
        port = free_port()
        env = {
            "TOKENPULSE_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "TOKENPULSE_CONSUMER_GROUP_PREFIX": f"{prefix}-{name}",
            "TOKENPULSE_DATA_DIR": str(tmp_path / name),
            "TOKENPULSE_PORT": str(port),
            "TOKENPULSE_REDIS_URL": redis_url,
            "TOKENPULSE_FREE_LIMIT_PER_MINUTE": str(LIMIT),
            "TOKENPULSE_SYMBOLS": "BTC",
            "TOKENPULSE_LOG_FORMAT": "json",
            "TOKENPULSE_LOG_LEVEL": "DEBUG",
        }
        procs.append(Proc(["run", "gateway"], env, tmp_path / f"gateway-{name}.log"))
        bases.append(f"http://127.0.0.1:{port}")
    try:
        for base in bases:
            wait_until(lambda b=base: httpx.get(f"{b}/readyz", timeout=5).status_code == 200, 120, "ready", procs)  # type: ignore[misc]
        seen = []
        for i in range(LIMIT):
            r = httpx.get(f"{bases[i % 2]}/v1/tokens", headers={"X-API-Key": key}, timeout=10)
            seen.append((r.status_code, r.headers["X-RateLimit-Remaining"]))
        assert seen == [(200, str(LIMIT - 1 - i)) for i in range(LIMIT)]
        for base in bases:  # the budget is spent on both replicas
            over = httpx.get(f"{base}/v1/tokens", params={"api_key": key}, headers={"X-API-Key": key}, timeout=10)
            assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1
        usage = httpx.get(f"{bases[1]}/v1/stream", params={"api_key": key}, timeout=10)
        assert usage.status_code == 429  # the stream counts too, even with the key in the query
    finally:
        for p in procs:
            assert p.stop() == 0, p.tail()
    for p in procs:
        log = p.log.read_text()
        assert "gateway listening" in log and key not in log
