"""Hostile ``/v1/tokens`` sort, filter and cursor values against a real ``tokenpulse up``: each is a 4xx in the
contract's error shape (never a 500, never a page), and a burst of them leaves the event loop answering."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.security.conftest import LoopProbe, UpServer

pytestmark = pytest.mark.e2e


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


F = "0123456789ab"
CASES: dict[str, tuple[dict[str, Any], int, str]] = {
    "sort unknown field": ({"sort": "price"}, 400, "invalid_sort"),
    "sort SQL": ({"sort": "symbol;DROP"}, 400, "invalid_sort"),
    "sort double minus": ({"sort": "--symbol"}, 400, "invalid_sort"),
    "sort plus": ({"sort": "+symbol"}, 400, "invalid_sort"),
    "sort unicode minus": ({"sort": "\u2212market_cap"}, 400, "invalid_sort"),
    "sort empty": ({"sort": ""}, 400, "invalid_sort"),
    "sort long": ({"sort": "-" + "market_cap" * 50}, 422, "invalid_request"),
    "q too long": ({"q": "a" * 51}, 422, "invalid_request"),
    "q NUL": ({"q": "a\x00b"}, 400, "invalid_query"),
    "q newline": ({"q": "bit\ncoin"}, 400, "invalid_query"),
    "q bidi override": ({"q": "\u202ebtc"}, 400, "invalid_query"),
    "grade infinite": ({"min_trader_grade": "inf"}, 422, "invalid_request"),
    "grade overflow": ({"min_trader_grade": "1e309"}, 422, "invalid_request"),
    "grade negative": ({"min_trader_grade": "-1"}, 422, "invalid_request"),
    "grade word": ({"min_trader_grade": "high"}, 422, "invalid_request"),
    "signal upper case": ({"signal": "BULLISH"}, 422, "invalid_request"),
    "signal unknown": ({"signal": "neutral"}, 422, "invalid_request"),
    "cursor old symbol form": ({"cursor": b64('{"symbol": "BTC"}')}, 400, "invalid_cursor"),
    "cursor value infinite": ({"cursor": b64(f'{{"v": 1e309, "symbol": "BTC", "f": "{F}"}}')}, 400, "invalid_cursor"),
    "cursor value string": ({"cursor": b64(f'{{"v": "1", "symbol": "BTC", "f": "{F}"}}')}, 400, "invalid_cursor"),
    "cursor bad symbol": ({"cursor": b64(f'{{"v": null, "symbol": "btc", "f": "{F}"}}')}, 400, "invalid_cursor"),
    "cursor bad fingerprint": ({"cursor": b64('{"v": null, "symbol": "BTC", "f": "zz"}')}, 400, "invalid_cursor"),
    "cursor other query": ({"cursor": b64(f'{{"v": null, "symbol": "BTC", "f": "{F}"}}')}, 400, "invalid_cursor"),
}


@pytest.fixture(scope="module")
def key(server: UpServer) -> str:
    return server.key()


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_token_list_input_is_a_4xx(server: UpServer, key: str, name: str) -> None:
    params, status, code = CASES[name]
    r = httpx.get(f"{server.base}/v1/tokens", params=params, headers={"X-API-Key": key}, timeout=30)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert set(r.json()) == {"error"} and r.json()["error"]["message"]


def test_a_burst_of_bad_and_good_queries_keeps_the_loop_answering(server: UpServer) -> None:
    key = server.key()
    queries = [params for params, _, _ in CASES.values()] + [{"sort": "-market_cap", "q": "e", "limit": 1000}]
    with LoopProbe(server.base) as probe, httpx.Client(base_url=server.base, timeout=30) as client:
        for params in queries * 3:
            assert client.get("/v1/tokens", params=params, headers={"X-API-Key": key}).status_code < 500
    assert probe.worst_s < 0.5, probe.worst_s
