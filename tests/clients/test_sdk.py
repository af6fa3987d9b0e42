"""The Python SDK against a real ``tokenpulse up`` (tests/clients/conftest.py): every method, pages, pandas,
ETag reuse, typed errors, 429 waits under a real limit, and the live stream across a dropped connection.

Each answer is also held to the SDK's models strictly: a field the server sends that no model declares, or a
model field no answer ever fills, fails ``test_every_method_answers_with_the_models_fields_exactly``."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from tokenpulse_client import (
    NO_RETRY,
    AlertCondition,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    InvalidParametersError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
)
from tokenpulse_client import models as m

from testkit.procs import fetch_all
from tests.clients.drift import never_filled, unknown_fields
from tests.clients.proxy import CuttableProxy
from tests.security.conftest import UpServer

pytestmark = pytest.mark.e2e  # a real tokenpulse up

# model fields this server cannot fill, with why
NOT_ON_THIS_SERVER = {
    ("Predictions", "history"): "asked for below, but the test server trains no model (TOKENPULSE_PREDICTIONS=false)",
    ("AlertRule", "error"): "only for a stored rule that cannot be read back",
    ("AlertRule", "webhook_secret"): "only with a webhook channel; loopback webhooks are refused",
    ("TokenDetail", "change_24h"): "the synthetic feed has run for minutes, not 24 h",
}


class Wire:
    """Every response's status and request headers, as seen by an httpx event hook."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, httpx.Headers, httpx.Headers]] = []

    def hook(self, response: httpx.Response) -> None:
        request = response.request
        self.seen.append((request.url.path, response.status_code, request.headers, response.headers))

    def statuses(self, path: str | None = None) -> list[int]:
        return [status for p, status, _, _ in self.seen if path is None or p == path]


@pytest.fixture
def wire_client(sdk_server: UpServer, free_key: str) -> Iterator[tuple[Client, Wire]]:
    wire = Wire()
    http = httpx.Client(base_url=sdk_server.base, timeout=30, event_hooks={"response": [wire.hook]})
    with Client(api_key=free_key, http_client=http, page_size=100) as client:
        yield client, wire
    http.close()


def raw(up: UpServer, key: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{up.base}{path}", params=params, headers={"X-API-Key": key}, timeout=30)


def test_every_method_answers_with_the_models_fields_exactly(sdk_server: UpServer, pro_key: str) -> None:
    with Client(sdk_server.base, pro_key) as c:
        price = c.token("ETH").price
        rule = c.create_alert("ETH", {"kind": "price_above", "value": price}, name="up")
        below = c.create_alert("ETH", AlertCondition(kind="price_below", value=price), name="down")
        fired = wait_for(lambda: c.alert_events().to_list(), "a crossing of the live price")  # the next tick does
        c.delete_alert(below.id)
        answers: dict[str, Any] = {
            "create_key": c.create_key("another"),
            "usage": c.usage(),
            "tokens": c.tokens().to_list(),
            "token": c.token("BTC"),
            "candles": c.candles("BTC", "1d", start="2024-01-01", limit=5).to_list(),
            "indicators": c.indicators("BTC", start=date(2024, 1, 1), limit=5).to_list(),
            "grades": c.grades("BTC", start=datetime(2024, 1, 1, tzinfo=UTC), limit=5).to_list(),
            "signals": c.signals("BTC", limit=5).to_list(),
            "intraday_signals": c.signals(interval="1h", limit=5).to_list(),
            "levels": c.levels("BTC"),
            "predictions": c.predictions("BTC", history=True),
            "track_record": c.track_record(),
            "cycles_btc": c.cycles_btc(),
            "cycles_custom": c.cycles_btc(basis="bottom", scenario=["bear"]),
            "quant": c.quant("ETH", window="30d"),
            "correlation": c.correlation(["BTC", "ETH"]),
            "market": c.market(history=True, start="2026-01-01"),
            "indices": c.indices(),
            "index": c.index("grade-60"),
            "scenarios": c.scenarios("ETH", targets=[5000, 10000], price=10000),
            "report": c.report("ETH"),
            "create_alert": rule,
            "alerts": c.alerts().to_list(),
            "alert": c.alert(rule.id),
            "alert_events": fired,
            "alert_events_of_rule": c.alert_events(rule_id=fired[0].rule_id, status=fired[0].status).to_list(),
            "delete_alert": c.delete_alert(rule.id),
        }
    assert answers["delete_alert"] == m.AlertDeleted(id=rule.id, deleted=True)
    assert answers["cycles_custom"].projection.basis == "bottom"
    assert answers["report"].startswith("# ETH") and answers["quant"].window == "30d"
    assert [s.name for s in answers["cycles_custom"].projection.scenarios] == ["bear"]
    unknown = {name: unknown_fields(answer) for name, answer in answers.items()}
    assert not {k: v for k, v in unknown.items() if v}, unknown
    assert never_filled(answers.values(), set(NOT_ON_THIS_SERVER)) == []


def test_answers_are_the_numbers_rest_gives(sdk_server: UpServer, free_key: str) -> None:
    with Client(sdk_server.base, free_key) as c:
        levels = c.levels("BTC")
        candles = c.candles("ETH", "1d", start="2024-03-01", limit=3).to_list()
        usage = c.usage()
    rest_levels = raw(sdk_server, free_key, "/v1/levels/BTC").json()
    assert [x.price for x in levels.support] == [x["price"] for x in rest_levels["support"]]
    rest = raw(sdk_server, free_key, "/v1/candles/ETH", interval="1d", start="2024-03-01", limit=3).json()["data"]
    assert [(c.ts.isoformat(), c.close) for c in candles] == [
        (r["ts"].replace("Z", "+00:00"), r["close"]) for r in rest
    ]
    assert usage.tier.name == "free" and usage.usage["minute"].limit == 1_000_000


def test_lists_walk_every_page(wire_client: tuple[Client, Wire], sdk_server: UpServer, free_key: str) -> None:
    client, wire = wire_client
    some = client.candles("BTC", "1d", start="2020-01-01", limit=250).to_list()
    assert wire.statuses("/v1/candles/BTC") == [200, 200, 200]  # 100 + 100 + 50 rows
    assert len(some) == 250 and len({c.ts for c in some}) == 250
    assert all(a.ts < b.ts for a, b in itertools.pairwise(some))
    everything = client.candles("BTC", "1d").to_list()
    expected = fetch_all(sdk_server.base, "/v1/candles/BTC", free_key, {"interval": "1d"})
    assert len(everything) > 1000 and [c.ts.isoformat() for c in everything] == [
        r["ts"].replace("Z", "+00:00") for r in expected
    ]
    assert some == everything[everything.index(some[0]) :][:250]


def test_to_pandas_has_a_column_per_field_and_utc_times(sdk_server: UpServer, free_key: str) -> None:
    with Client(sdk_server.base, free_key) as c:
        frame = c.candles("ETH", "1d", start="2024-01-01", end="2024-02-01").to_pandas()
        grades = c.grades("ETH", start="2024-01-01", limit=10).to_pandas()
    assert list(frame.columns) == ["ts", "open", "high", "low", "close", "volume"]
    assert len(frame) == 31 and str(frame["ts"].dt.tz) == "UTC"
    assert frame["ts"].iloc[0] == datetime(2024, 1, 1, tzinfo=UTC) and frame["close"].dtype == "float64"
    assert list(grades.columns[:3]) == ["ts", "trader_grade", "investor_grade"] and len(grades) == 10


def test_an_unchanged_answer_is_a_304_reused_from_the_etag_cache(wire_client: tuple[Client, Wire]) -> None:
    client, wire = wire_client
    first = client.levels("ETH")
    again = client.levels("ETH")
    rows = client.candles("ETH", "1d", start="2023-01-01", limit=20).to_list()
    rows_again = client.candles("ETH", "1d", start="2023-01-01", limit=20).to_list()
    assert wire.statuses("/v1/levels/ETH") == [200, 304]
    assert wire.statuses("/v1/candles/ETH") == [200, 304]
    sent = [headers.get("if-none-match") for path, _, headers, _ in wire.seen if path == "/v1/levels/ETH"]
    assert sent[0] is None and sent[1] and sent[1].startswith('"')
    assert again == first and rows_again == rows and client.etags.hits == 2


def test_errors_are_typed_and_carry_the_apis_code_and_message(sdk_server: UpServer, free_key: str) -> None:
    cases: list[tuple[type[Exception], str, Any]] = [
        (NotFoundError, "unknown_symbol", lambda c: c.token("FOO")),
        (BadRequestError, "invalid_symbol", lambda c: c.levels("b@d")),
        (BadRequestError, "invalid_time", lambda c: c.candles("BTC", start="yesterday").to_list()),
        (InvalidParametersError, "invalid_request", lambda c: c.candles("BTC", "7m").to_list()),  # type: ignore[arg-type]
        (PermissionDeniedError, "tier_required", lambda c: c.signals("BTC", "1h").to_list()),
        (NotFoundError, "unknown_rule", lambda c: c.alert("rule_0000")),
        (InvalidParametersError, "invalid_request", lambda c: c.create_alert("BTC", {"kind": "price_above"})),
    ]
    with Client(sdk_server.base, free_key) as c:
        for error, code, call in cases:
            with pytest.raises(error) as caught:
                call(c)
            assert caught.value.code == code, (code, caught.value)
            assert caught.value.message and caught.value.request_id
    rest = raw(sdk_server, free_key, "/v1/tokens/FOO").json()["error"]
    with Client(sdk_server.base, free_key) as c, pytest.raises(NotFoundError) as caught:
        c.token("FOO")
    assert (caught.value.status, caught.value.code, caught.value.message) == (404, rest["code"], rest["message"])
    with Client(sdk_server.base, "tp_not_a_key") as c, pytest.raises(AuthenticationError) as bad_key:
        c.usage()
    assert bad_key.value.code == "invalid_api_key"


def test_a_symbol_cannot_reach_another_path(sdk_server: UpServer, free_key: str) -> None:
    with Client(sdk_server.base, free_key) as c, pytest.raises(NotFoundError) as caught:
        c.token("../usage")
    assert caught.value.code in ("not_found", "unknown_symbol")


async def test_the_async_client_gives_what_the_sync_one_does(sdk_server: UpServer, free_key: str) -> None:
    async with AsyncClient(sdk_server.base, free_key, page_size=100) as ac:
        pages = [page async for page in ac.candles("BTC", "1d", start="2020-01-01", limit=250).pages()]
        rows = await ac.candles("BTC", "1d", start="2020-01-01", limit=250).to_list()
        frame = await ac.grades("BTC", start="2024-01-01", limit=5).to_pandas()
        levels = await ac.levels("BTC")
        rule = await ac.create_alert("BTC", AlertCondition(kind="signal", direction="any"))
        listed = [r.id async for r in ac.alerts(symbol="BTC")]
        deleted = await ac.delete_alert(rule.id)
        with pytest.raises(NotFoundError):
            await ac.token("FOO")
    with Client(sdk_server.base, free_key, page_size=100) as c:
        assert rows == c.candles("BTC", "1d", start="2020-01-01", limit=250).to_list()
        assert levels.support == c.levels("BTC").support
    assert [len(p.data) for p in pages] == [100, 100, 50] and len(frame) == 5
    assert rule.id in listed and deleted.deleted


# ------------------------------------------------------------------------------------- rate limits


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpServer]:
    """A server whose free tier allows 3 requests a minute."""
    up = UpServer(tmp_path_factory.mktemp("limited"), {"TOKENPULSE_FREE_LIMIT_PER_MINUTE": "3"}).start()
    yield up
    up.stop()
    assert not up.leaked_keys()


def test_429_is_raised_when_the_wait_is_over_the_policy(limited: UpServer) -> None:
    key = limited.key()
    with Client(limited.base, key, retry=RetryPolicy(max_wait_s=5)) as c:
        for _ in range(3):
            c.usage()
        t0 = time.monotonic()
        with pytest.raises(RateLimitError) as caught:
            c.usage()
    assert time.monotonic() - t0 < 3  # not slept on: the minute's wait is longer than max_wait_s
    assert caught.value.code == "rate_limited" and caught.value.retry_after and caught.value.retry_after > 5
    with Client(limited.base, key, retry=NO_RETRY) as c, pytest.raises(RateLimitError):
        c.token("BTC")


def test_429_waits_retry_after_then_succeeds(limited: UpServer) -> None:
    wire = Wire()
    http = httpx.Client(base_url=limited.base, timeout=30, event_hooks={"response": [wire.hook]})
    with Client(api_key=limited.key(), http_client=http, retry=RetryPolicy(max_retries=2, max_wait_s=90)) as c:
        for _ in range(3):
            c.levels("BTC")
        t0 = time.monotonic()
        usage = c.usage()
        waited = time.monotonic() - t0
    http.close()
    assert wire.statuses() == [200, 304, 304, 429, 200]
    assert usage.usage["minute"].limit == 3 and usage.usage["minute"].used >= 1
    announced = next(int(answer["retry-after"]) for _, status, _, answer in wire.seen if status == 429)
    assert 10 < announced <= 60 and announced - 1 <= waited < announced + 10  # slept the Retry-After once


# ------------------------------------------------------------------------------------------ stream


def test_stream_yields_live_events_of_the_symbols_asked_for(sdk_server: UpServer, free_key: str) -> None:
    with Client(sdk_server.base, free_key) as c:
        events = []
        for event in c.stream(symbols=["ETH"], types=["price"]):
            events.append(event)
            if len(events) == 3:
                break
    assert {e.event for e in events} == {"price"} and {e.data["symbol"] for e in events} == {"ETH"}
    assert all(isinstance(e.id, int) for e in events) and [e.id for e in events] == sorted(e.id for e in events)
    assert all(e.data["price"] > 0 for e in events)


async def test_stream_resumes_after_a_dropped_connection_missing_nothing(sdk_server: UpServer, pro_key: str) -> None:
    """One stream straight to the server as the reference, one through a proxy that cuts it mid-stream: the cut
    one reconnects with Last-Event-ID and receives exactly the reference's events, none lost or doubled."""
    proxy = await CuttableProxy(sdk_server.port).start()
    reference: list[int] = []

    async def follow(client: AsyncClient) -> None:
        async for event in client.stream(symbols="BTC", types="price"):
            reference.append(event.id or 0)

    async with (
        AsyncClient(sdk_server.base, pro_key) as direct,
        AsyncClient(f"http://127.0.0.1:{proxy.port}", pro_key, retry=RetryPolicy(reconnect_backoff_s=0.1)) as via,
    ):
        task = asyncio.create_task(follow(direct))
        await wait_async(lambda: reference, "the reference stream's first event")
        got: list[int] = []
        async for event in via.stream(symbols="BTC", types="price"):
            got.append(event.id or 0)
            if len(got) == 3:
                proxy.cut()
                cut_after = event.id
                await asyncio.sleep(3)  # events go by while the connection is down
            if len(got) == 10:
                break
        await asyncio.sleep(0.5)
        task.cancel()
    await proxy.close()
    assert reference[0] <= got[0]
    assert got == [i for i in reference if got[0] <= i <= got[-1]]
    assert len(proxy.first_bytes) == 2, "one reconnect"
    assert f"last-event-id: {cut_after}".encode() in proxy.first_bytes[1].lower()


# ------------------------------------------------------------------------------------------ helpers


def wait_for(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


async def wait_async(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
