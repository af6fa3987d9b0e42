"""Hostile listing answers against a real ``tokenpulse up``: every one of the six venues' listing endpoints (a fake
REST exchange on loopback) answers rows of the wrong type, then more rows than a listing may hold, while discovery
runs every second. The server refuses each answer whole with a warning naming the venue, keeps answering without
holding its event loop, and takes the venues' pairs once they answer in shape again."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from testkit.procs import free_port, wait_until
from testkit.rest_exchange import FakeExchange, load_series, read_listings
from testkit.server import ThreadedServer
from tests.security.conftest import LoopProbe, UpServer

VENUES = ("binance", "coinbase", "kraken", "okx", "bybit", "coinbase_advanced")
ROWS = {"binance": ("symbols",), "coinbase": (), "kraken": ("result",), "okx": ("data",), "bybit": ("result", "list"),
        "coinbase_advanced": ("products",)}  # fmt: skip


def with_rows(body: Any, path: tuple[str, ...], rows: Any) -> Any:
    """``body`` with the rows at ``path`` replaced (the whole body when the rows are the body)."""
    if not path:
        return rows
    body = copy.deepcopy(body)
    holder = body
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = rows
    return body


def wrong_types(venue: str, good: Any) -> Any:
    if venue == "kraken":
        return with_rows(good, ROWS[venue], {"XXBTZUSD": {"wsname": 5, "status": ["online"]}})
    return with_rows(good, ROWS[venue], [{"symbol": 5, "status": None, "baseAsset": [], "id": {}}])


def too_many(venue: str, good: Any) -> Any:
    rows: Any = [{}] * 100_001
    return with_rows(good, ROWS[venue], {f"P{i}": {} for i in range(100_001)} if venue == "kraken" else rows)


@pytest.fixture
def exchange() -> Iterator[tuple[FakeExchange, str]]:
    fake = FakeExchange(load_series())
    with ThreadedServer(fake.app()) as server:
        yield fake, server.url


def refused_rounds(up: UpServer) -> dict[str, int]:
    logs = up.logs()
    return {v: logs.count(f"universe: {v} listing refused, none of it applied") for v in VENUES}


def test_hostile_listings_are_refused_and_the_server_carries_on(
    up_server: Callable[..., UpServer], exchange: tuple[FakeExchange, str]
) -> None:
    fake, url = exchange
    good = read_listings()
    for venue in VENUES:
        fake.listings[venue] = wrong_types(venue, good[venue])
    dead = f"ws://127.0.0.1:{free_port()}"
    env = {f"TOKENPULSE_{v.upper()}_REST_URL": url for v in VENUES} | {
        f"TOKENPULSE_{v.upper()}_WS_URL": dead for v in VENUES
    }
    up = up_server(
        TOKENPULSE_LIVE_FEED="auto",
        TOKENPULSE_FEED_EXCHANGES=",".join(VENUES),
        TOKENPULSE_FEED_CONNECT_TIMEOUT_S="1",
        TOKENPULSE_UNIVERSE_DISCOVERY_S="1",
        **env,
    )
    with LoopProbe(up.base) as probe:
        wait_until(lambda: min(refused_rounds(up).values()) >= 2, 60, "wrong types refused", [up.proc])
        for venue in VENUES:
            fake.listings[venue] = too_many(venue, good[venue])
        before = refused_rounds(up)
        wait_until(lambda: all(n >= before[v] + 2 for v, n in refused_rounds(up).items()), 60, "too many rows", [])
        assert "Expected `array` of length <= 100000" in up.logs()  # the refusal says what was wrong
        published = up.logs().count("universe: 2 tokens (")
        fake.listings.update(good)  # in shape again: the listed pairs are taken and published
        wait_until(lambda: up.logs().count("universe: 2 tokens (") > published, 60, "pairs published", [up.proc])
    assert up.proc.p.poll() is None, up.proc.tail(40)
    assert httpx.get(f"{up.base}/readyz", timeout=5).status_code == 200
    assert probe.worst_s < 1.0, probe.worst_s
    assert "Traceback" not in up.logs()
