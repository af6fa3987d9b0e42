"""Hostile parameters against the market analytics of a real ``tokenpulse up``: every one answers a 4xx in the
error shape with a message that says what is wrong, never a 5xx, a non-finite number or a stalled event loop;
and a flood of distinct requests (each a new cache entry) keeps the cache bounded and the loop responsive."""

from __future__ import annotations

import math

import httpx
import pytest

from tests.security.conftest import LoopProbe, UpServer

pytestmark = pytest.mark.e2e

HOSTILE: list[tuple[str, dict[str, str], int, str]] = [
    ("/v1/quant/BTC", {"window": "1000000d"}, 422, "window"),
    ("/v1/quant/BTC", {"window": ""}, 422, "window"),
    ("/v1/quant/%00BTC", {}, 400, "symbol"),
    ("/v1/quant/" + "A" * 5000, {}, 400, "symbol"),
    ("/v1/correlation", {}, 422, "symbols"),
    ("/v1/correlation", {"symbols": ""}, 400, "2 to 20"),
    ("/v1/correlation", {"symbols": ",,,,"}, 400, "2 to 20"),
    ("/v1/correlation", {"symbols": "BTC," * 21}, 400, "2 to 20"),
    ("/v1/correlation", {"symbols": "BTC," * 200}, 422, "symbols"),  # over the parameter's length
    ("/v1/correlation", {"symbols": "BTC,btc"}, 400, "more than once"),
    ("/v1/correlation", {"symbols": "BTC,<script>"}, 400, "symbol"),
    ("/v1/correlation", {"symbols": "BTC,NOPE"}, 404, "NOPE"),
    ("/v1/market", {"history": "maybe"}, 422, "history"),
    ("/v1/market", {"start": "2026-13-45"}, 422, "start"),
    ("/v1/market", {"start": "2026-02-01", "end": "2026-01-01"}, 400, "start must not be after end"),
    ("/v1/indices/" + "x" * 3000, {}, 404, "GET /v1/indices"),
    ("/v1/indices/..%2F..%2Fetc%2Fpasswd", {}, 404, "no route"),
    ("/v1/scenarios/ETH", {"price": "0"}, 422, "price"),
    ("/v1/scenarios/ETH", {"price": "1e309"}, 422, "price"),
    ("/v1/scenarios/ETH", {"price": "inf"}, 422, "price"),
    ("/v1/scenarios/ETH", {"price": "NaN"}, 422, "price"),
    ("/v1/scenarios/ETH", {"targets": "nan"}, 400, "above 0"),
    ("/v1/scenarios/ETH", {"targets": "-1,5"}, 400, "above 0"),
    ("/v1/scenarios/ETH", {"targets": "1e13"}, 400, "at most 1e12"),
    ("/v1/scenarios/ETH", {"targets": "1e999"}, 400, "above 0"),
    ("/v1/scenarios/ETH", {"targets": "5000;DROP TABLE"}, 400, "comma-separated"),
    ("/v1/scenarios/ETH", {"targets": "1," * 21}, 400, "1 to 20"),
    ("/v1/scenarios/ETH", {"targets": "1" * 401}, 422, "targets"),
    ("/v1/reports/..", {}, 404, ""),
    ("/v1/reports/NOPE", {}, 404, "NOPE"),
]


@pytest.mark.parametrize(("path", "params", "status", "says"), HOSTILE)
def test_hostile_parameters_are_4xx_with_a_clear_message(
    server: UpServer, path: str, params: dict[str, str], status: int, says: str
) -> None:
    r = httpx.get(f"{server.base}{path}", params=params, headers={"X-API-Key": server.key()}, timeout=30)
    assert r.status_code == status, (path, params, r.text[:300])
    error = r.json()["error"]
    assert error["code"] and says.lower() in error["message"].lower(), (path, params, error)


def test_answers_hold_only_finite_numbers_for_extreme_but_valid_inputs(server: UpServer) -> None:
    key = {"X-API-Key": server.key()}
    r = httpx.get(
        f"{server.base}/v1/scenarios/ETH", params={"targets": "1e-300,1e12", "price": "1e12"}, headers=key, timeout=30
    )
    assert r.status_code == 200, r.text

    def finite(v: object) -> bool:
        if isinstance(v, float):
            return math.isfinite(v)
        if isinstance(v, dict):
            return all(finite(x) for x in v.values())
        if isinstance(v, list):
            return all(finite(x) for x in v)
        return True

    assert finite(r.json())
    history = httpx.get(
        f"{server.base}/v1/market", params={"history": "true", "start": "0001-01-01", "end": "9999-12-31"}, headers=key
    )
    assert history.status_code == 200 and history.json()["history"]


def test_a_flood_of_distinct_requests_keeps_the_loop_responsive(server: UpServer) -> None:
    """Each distinct target list is a new cache entry and a computation off the loop: 300 of them, with the
    first market and index computations among them, must leave /healthz answering promptly."""
    key = {"X-API-Key": server.key()}
    server.restart()  # nothing computed yet: the flood pays for the first loads too
    with LoopProbe(server.base) as probe, httpx.Client(base_url=server.base, headers=key, timeout=60) as client:
        assert client.get("/v1/indices").status_code == 200
        assert client.get("/v1/market").status_code == 200
        for i in range(300):
            r = client.get("/v1/scenarios/ETH", params={"targets": f"{1000 + i}"})
            assert r.status_code == 200, r.text
        assert client.get("/v1/reports/ETH", headers={"Accept": "text/html"}).status_code == 200
    assert probe.worst_s < 1.0, probe.worst_s
