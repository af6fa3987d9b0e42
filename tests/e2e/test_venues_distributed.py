"""Distributed mode with live venues (issue #25): ``tokenpulse run ingest`` and ``tokenpulse run gateway`` over
the real Kafka broker, ingest streaming from seven fake exchanges on loopback: every native venue (recorded
real trades, or frames crafted from the documented formats) and ccxt's Kraken (the fake Kraken REST API and
WebSocket, through ccxt's URL override). Each token's reference price, served by the gateway, lists all seven.
The tokens are this run's own, so reruns against one broker stay independent."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.fake_exchange import FakeExchanges
from testkit.procs import Proc, api_key, distributed_env, free_port, wait_until
from testkit.rest_exchange import FakeExchange as RestFake
from testkit.rest_exchange import load_series
from testkit.server import ThreadedServer

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

NATIVE = ["binance", "coinbase", "kraken", "okx", "bybit", "coinbase_advanced"]


def test_six_venues_and_ccxt_feed_the_reference_price_over_kafka(own_kafka: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6].upper()
    prices = {f"V{run}A": 97_000.0, f"V{run}B": 3_500.0}
    rest = RestFake(load_series(), kraken_extra=list(prices), ccxt_pairs=True)
    with (
        ThreadedServer(rest.app()) as rest_server,
        FakeExchanges({**{n: n for n in NATIVE}, "ccxt:kraken": "kraken"}, prices) as exchanges,
    ):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = distributed_env(
            own_kafka,
            f"e2e-{uuid.uuid4().hex[:8]}",
            tmp_path / "gateway",
            ",".join(prices),
            port=str(port),
            backfill_on_start="false",
            free_limit_per_minute="10000",  # the wait below polls twice a second for up to 2 minutes
            live_feed="live",
            feed_exchanges=",".join([*NATIVE, "ccxt:kraken"]),
            feed_pairs=",".join(f"ccxt:kraken:{s}={s}/USD" for s in prices),
            ccxt_ws_url=exchanges.fakes["ccxt:kraken"].url,
            ccxt_rest_url=rest_server.url,
            **{f"{name}_ws_url": exchanges.fakes[name].url for name in NATIVE},
        )
        procs = [Proc(["run", svc], {**env, "TOKENPULSE_METRICS_PORT": "0"}, tmp_path / f"{svc}.log")
                 for svc in ("ingest", "gateway")]  # fmt: skip
        try:
            wait_until(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 120, "gateway ready", procs)
            key = api_key(base)

            def every_venue_in_every_price() -> dict[str, Any] | None:
                r = httpx.get(f"{base}/v1/tokens", headers={"X-API-Key": key}, timeout=10)
                assert r.status_code == 200, f"/v1/tokens {r.status_code}: {r.text[:200]}"
                rows = {t["symbol"]: t for t in r.json()["data"]}
                seen = {s: sorted(rows.get(s, {}).get("sources") or []) for s in prices}
                assert all(set(v) == set(exchanges.fakes) for v in seen.values()), f"sources so far: {seen}"
                return rows

            rows = wait_until(every_venue_in_every_price, 120, "all seven sources in /v1/tokens", procs)
            for symbol, target in prices.items():
                assert 0.5 * target < rows[symbol]["price"] < 1.6 * target and rows[symbol]["stale"] is False
            assert "skipping a frame" not in (tmp_path / "ingest.log").read_text()  # no bad message from any venue
        finally:
            for p in procs:
                p.stop()
