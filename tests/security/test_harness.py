"""The attack harness itself: a real ``tokenpulse up`` answers, and the loop probe sees it."""

from __future__ import annotations

import httpx
import pytest

from tests.security.conftest import LoopProbe, UpServer

pytestmark = pytest.mark.e2e


def test_the_server_under_attack_serves_real_history(server: UpServer) -> None:
    key = server.key()
    r = httpx.get(f"{server.base}/v1/candles/BTC", params={"limit": 3}, headers={"X-API-Key": key})
    assert r.status_code == 200 and len(r.json()["data"]) == 3
    with LoopProbe(server.base) as probe:
        httpx.get(f"{server.base}/v1/tokens", headers={"X-API-Key": key}).raise_for_status()
    assert probe.latencies and probe.worst_s < 5
