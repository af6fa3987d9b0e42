"""Embedded mode end to end: ``tokenpulse up`` serves the real history, keeps prices moving, and
restarts on the same data dir without losing or duplicating anything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from tokenpulse_ingest.bundle import iter_bundle
from tokenpulse_shared.events import Interval
from tokenpulse_shared.settings import DEFAULT_BUNDLE, Settings
from tokenpulse_shared.store import Store

from tests.e2e.procs import Proc, api_key, fetch_all, free_port, wait_until

pytestmark = pytest.mark.e2e


def test_up_serves_history_moves_prices_and_restarts_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"TOKENPULSE_SYNTHETIC_TICK_S": "0.25", "TOKENPULSE_LOG_FORMAT": "json"}
    expected_btc = next(b for s, i, b in iter_bundle(DEFAULT_BUNDLE, ["BTC"], [Interval.D1]))
    expected_rows = sum(len(b) for _, _, b in iter_bundle(DEFAULT_BUNDLE, Settings().symbols))

    def start(n: int) -> tuple[Proc, str]:
        port = free_port()
        proc = Proc(["up", "--port", str(port), "--data-dir", str(data_dir)], env, tmp_path / f"up{n}.log")
        return proc, f"http://127.0.0.1:{port}"

    proc, base = start(1)
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 120, "ready", [proc])
        key = api_key(base)
        candles = fetch_all(base, "/v1/candles/BTC", key, {"interval": "1d"})
        assert candles[0]["ts"] == "2011-01-01T00:00:00Z"
        assert len(candles) == len(expected_btc)
        assert [c["close"] for c in candles] == [b.close for b in expected_btc]

        def prices() -> dict[str, float]:
            data = httpx.get(f"{base}/v1/tokens", headers={"X-API-Key": key}, timeout=10).json()["data"]
            return {t["symbol"]: t["price"] for t in data}

        first = prices()
        assert set(first) == set(Settings().symbols) and all(p > 0 for p in first.values())
        wait_until(lambda: all(prices()[s] != first[s] for s in first), 30, "prices to move", [proc])
    finally:
        assert proc.stop() == 0, proc.tail()

    proc, base = start(2)
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 120, "ready again", [proc])
        key = api_key(base)
        again = fetch_all(base, "/v1/candles/BTC", key, {"interval": "1d"})
        assert [c["ts"] for c in again] == [c["ts"] for c in candles]
    finally:
        assert proc.stop() == 0, proc.tail()
    assert "history already loaded" in (tmp_path / "up2.log").read_text()

    async def count_rows() -> int:
        store = await Store(f"chdb://{(data_dir / 'clickhouse').resolve()}").open(migrate=False)
        try:
            return int((await store.query("SELECT count() FROM candles WHERE source != 'ticks'"))[0][0])
        finally:
            await store.close()

    # raw rows, not FINAL: the second start added nothing
    assert asyncio.run(count_rows()) == expected_rows
