"""The SDK's pure parts: the two clients have the same methods, the retry and ETag decisions, query values,
error mapping, page sizes, and the MCP summaries' units."""

from __future__ import annotations

import inspect
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from tokenpulse_client import (
    ApiError,
    AsyncClient,
    BadRequestError,
    Client,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TransportError,
)
from tokenpulse_client import _summaries as s
from tokenpulse_client._core import EtagCache, segment, stream_pause, to_param
from tokenpulse_client.errors import error_from
from tokenpulse_client.pagination import page_sizes

SYNC_ONLY = {"close"}
ASYNC_ONLY = {"aclose"}


def public(cls: type) -> dict[str, object]:
    return {n: getattr(cls, n) for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}


def test_the_async_client_has_the_sync_clients_methods_signatures_and_docs() -> None:
    sync, aio = public(Client), public(AsyncClient)
    assert set(sync) - SYNC_ONLY == set(aio) - ASYNC_ONLY
    for name in set(sync) - SYNC_ONLY:
        a, b = inspect.signature(sync[name]), inspect.signature(aio[name])  # type: ignore[arg-type]
        assert list(a.parameters.values()) == list(b.parameters.values()), name
        assert inspect.getdoc(sync[name]) == inspect.getdoc(aio[name]), name


@pytest.mark.parametrize(
    ("status", "retry_after", "attempt", "wait"),
    [
        (429, "7", 0, 7.0),
        (503, "5", 2, 5.0),
        (429, "7", 3, None),  # max_retries reached
        (429, "3600", 0, None),  # longer than max_wait_s: raised, not slept on
        (429, None, 0, None),  # no Retry-After: nothing says when
        (500, "1", 0, None),
        (404, "1", 0, None),
    ],
)
def test_retry_policy_waits_only_a_bounded_announced_time(
    status: int, retry_after: str | None, attempt: int, wait: float | None
) -> None:
    headers = {"retry-after": retry_after} if retry_after else {}
    assert RetryPolicy(max_retries=3, max_wait_s=60).wait_before_retry(status, headers, attempt) == wait


def test_stream_reconnects_back_off_then_give_up() -> None:
    policy = RetryPolicy(max_reconnects=3, reconnect_backoff_s=0.5)
    assert [stream_pause(policy, OSError("reset"), n) for n in (0, 1, 2, 3)] == [0.0, 0.5, 1.0, 2.0]
    with pytest.raises(TransportError, match="4 times in a row"):
        stream_pause(policy, None, 4)
    too_many = RateLimitError(429, "too_many_streams", "close one", retry_after=5)
    assert stream_pause(policy, too_many, 1) == 5
    with pytest.raises(ApiError):
        stream_pause(policy, ApiError(401, "invalid_api_key", "no"), 1)


def test_errors_map_by_status_and_keep_a_foreign_body_readable() -> None:
    err = error_from(400, b'{"error":{"code":"invalid_time","message":"start must be ISO"}}', {"x-request-id": "r1"})
    assert isinstance(err, BadRequestError) and (err.code, err.message, err.request_id) == (
        "invalid_time",
        "start must be ISO",
        "r1",
    )
    proxy = error_from(502, b"<html>Bad Gateway</html>\nmore", {})
    assert isinstance(proxy, ServerError) and proxy.code == "http_502" and proxy.message == "<html>Bad Gateway</html>"
    assert error_from(418, b"", {}).message == "HTTP 418"


def test_query_values_are_what_the_api_reads() -> None:
    assert to_param(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2024-01-02T03:04:05Z"
    assert to_param(datetime(2024, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2)))) == "2024-01-02T03:00:00Z"
    assert to_param(datetime(2024, 1, 2)) == "2024-01-02T00:00:00Z"  # naive is UTC
    assert to_param(date(2024, 1, 2)) == "2024-01-02"
    assert (to_param(True), to_param(["a", date(2024, 1, 1)])) == ("true", ["a", "2024-01-01"])
    assert segment("../usage") == "..%2Fusage" and segment("BTC") == "BTC"


def test_page_sizes_stop_at_the_limit() -> None:
    assert list(page_sizes(250, 100)) == [100, 100, 50]
    assert list(page_sizes(0, 100)) == []
    unbounded = page_sizes(None, 1000)
    assert [next(unbounded) for _ in range(3)] == [1000, 1000, 1000]


def test_etag_cache_keeps_the_most_recent_answers() -> None:
    cache = EtagCache(max_entries=2)
    for n in range(3):
        cache.remember(f"u{n}", {"etag": f'"{n}"'}, b"body%d" % n)
    cache.remember("no-tag", {}, b"x")
    assert cache.conditional_headers("u0") == {} and cache.conditional_headers("no-tag") == {}
    assert cache.conditional_headers("u2") == {"If-None-Match": '"2"'}
    assert cache.body_of_304("u1") == b"body1" and cache.hits == 1


def test_summaries_name_and_format_their_units() -> None:
    text = s.render(
        "BTC",
        {
            "price_usd": 97012.5,
            "volume_24h_usd": 31_250_000_000.0,
            "change_24h_pct": -1.5,
            "trader_grade": 71.25,
            "roi_pct": {"24h": 1.84, "1y": None},
            "rows": [{"date": "2024-01-01", "close_usd": 42000.123456789, "note": "a, b"}],
        },
    )
    assert "price_usd: $97,012.50" in text and "volume_24h_usd: $31.25 billion" in text
    assert "change_24h_pct: -1.50%" in text and "trader_grade: 71.2/100" in text
    assert "roi_pct: 24h +1.84%, 1y n/a" in text
    assert 'rows (1 row, CSV):\ndate,close_usd,note\n2024-01-01,42000.123,"a, b"' in text
    assert s.usd(0.000123456) == "$0.000123456"
