"""The gateway's hot-path helpers: the caches (history pages, token pages and details, stored predictions, cycle
history, known symbols), pre-serialised answers with ETags, and the constant-cost in-memory moving window
(checked against the `limits` library's own memory storage)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from limits import RateLimitItemPerMinute, RateLimitItemPerMonth
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from starlette.requests import Request
from tokenpulse_gateway import caches, limits
from tokenpulse_gateway.analytics.cycles import CycleData
from tokenpulse_gateway.answers import answer, encode
from tokenpulse_gateway.caches import CycleHistory, KnownSymbols, PageCache, StoredPredictions, TokenDetails
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.live import LiveState, StreamHub
from tokenpulse_gateway.window_storage import WindowMemoryStorage
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def request(headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw, "query_string": b""})


def test_an_answer_carries_its_etag_and_is_304_when_the_client_has_it() -> None:
    enc = encode({"price": 1.5, "name": "Ünïcode"})
    full = answer(request(), enc, 10)
    assert full.status_code == 200 and full.body == enc.body
    assert full.headers["etag"] == enc.etag and full.headers["cache-control"] == "private, max-age=10"
    assert full.headers["content-type"] == "application/json" and int(full.headers["content-length"]) == len(enc.body)
    for sent in (enc.etag, f'"other", W/{enc.etag}', "*"):
        not_modified = answer(request({"If-None-Match": sent}), enc, 10)
        assert not_modified.status_code == 304 and not_modified.body == b"", sent
        assert not_modified.headers["etag"] == enc.etag
    assert answer(request({"If-None-Match": '"stale"'}), enc, 10).status_code == 200
    assert encode({"price": 1.6}).etag != encode({"price": 1.5}).etag


def test_pages_expire_after_the_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(caches.time, "monotonic", clock)
    cache = PageCache(ttl_s=10)
    key = ("candles", "BTC", "1d", None, None, None, 100)
    cache.put(key, encode([1]), clock())
    clock.t += 9.9
    assert cache.get(key) == encode([1])
    clock.t += 0.1
    assert cache.get(key) is None and cache.size == 0


def test_a_new_candle_drops_only_its_series_and_an_older_read_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(caches.time, "monotonic", clock)
    cache = PageCache(ttl_s=60)
    btc_1d = ("candles", "BTC", "1d", None, None, None, 100)
    btc_1h = ("candles", "BTC", "1h", None, None, None, 100)
    eth_1d = ("candles", "ETH", "1d", None, None, None, 100)
    ind_btc_1d = ("indicators", "BTC", "1d", None, None, None, 100)
    for k in (btc_1d, btc_1h, eth_1d, ind_btc_1d):
        cache.put(k, encode(list(k)), clock())
    read_started = clock()  # a query in flight while the candle arrives ...
    clock.t += 1
    cache.invalidate("candles", {("BTC", "1d")})
    assert cache.get(btc_1d) is None
    assert cache.get(btc_1h) and cache.get(eth_1d) and cache.get(ind_btc_1d)
    cache.put(btc_1d, encode(["old"]), read_started)  # ... may hold the store's state before it: not kept
    assert cache.get(btc_1d) is None
    clock.t += 1
    cache.put(btc_1d, encode(["new"]), clock())  # a read started after the candle is kept
    assert cache.get(btc_1d) == encode(["new"])


def test_pages_stay_within_their_byte_budget_least_recently_used_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caches.time, "monotonic", Clock(0.0))
    cache = PageCache(ttl_s=60, max_bytes=4000)
    keys = [("candles", "BTC", "1d", i) for i in range(5)]
    for k in keys[:4]:
        cache.put(k, encode("x" * 998), 0.0)  # 1,000 bytes each
    assert cache.get(keys[0]) is not None  # used: now the most recent
    cache.put(keys[4], encode("x" * 998), 0.0)
    assert cache.size <= 4000
    assert cache.get(keys[1]) is None and all(cache.get(k) for k in (keys[0], keys[2], keys[3], keys[4]))
    cache.put(("candles", "BTC", "1d", "big"), encode("x" * 1500), 0.0)  # over a quarter of the budget: not kept
    assert cache.get(("candles", "BTC", "1d", "big")) is None
    off = PageCache(ttl_s=0)
    off.put(keys[0], encode(1), 0.0)
    assert off.get(keys[0]) is None


async def test_the_window_storage_answers_like_the_limits_memory_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random hits of three keys at random times over several minutes: every verdict, remaining count
    and reset time equals what `limits`' own memory storage answers for the same sequence."""
    clock = Clock()
    monkeypatch.setattr(limits.time, "time", clock)
    monkeypatch.setattr("limits.aio.storage.memory.time.time", clock)
    ours, theirs = WindowMemoryStorage(), MemoryStorage()
    minute, month = RateLimitItemPerMinute(7), RateLimitItemPerMonth(40)
    rng = random.Random(8)
    seen: list[Any] = []
    for _ in range(600):
        clock.t += rng.choice([0.0, 0.01, 0.5, 2.0, 9.0, 31.0])
        who = rng.choice(["a", "b", "c"])
        got = []
        for storage in (ours, theirs):
            moving, fixed = MovingWindowRateLimiter(storage), FixedWindowRateLimiter(storage)
            ok = await moving.hit(minute, "key", who)
            stats = await moving.get_window_stats(minute, "key", who)
            month_ok = await fixed.hit(month, "key", who) if ok else None
            month_stats = await fixed.get_window_stats(month, "key", who)
            reset = round(stats.reset_time, 6) if stats.remaining < minute.amount else None  # empty: no reset
            got.append((ok, stats.remaining, reset, month_ok, month_stats.remaining, round(month_stats.reset_time, 6)))
        assert got[0] == got[1]
        seen.append(got[0])
    assert {s[0] for s in seen} == {True, False} and {s[3] for s in seen} >= {True, False}  # both limits bit
    clock.t += 3600
    ours._sweep(clock())
    assert ours.windows == {}  # idle windows are forgotten


async def test_the_window_storage_keeps_only_the_last_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    """The window holds one time per hit of the last minute, oldest first, and drops them as they age."""
    clock = Clock()
    monkeypatch.setattr(limits.time, "time", clock)
    storage = WindowMemoryStorage()
    for _ in range(5000):
        clock.t += 0.001
        assert await storage.acquire_entry("k", 1_000_000, 60)
    assert await storage.get_moving_window("k", 1_000_000, 60) == (pytest.approx(1_000_000.001), 5000)
    clock.t += 61.0
    assert await storage.get_moving_window("k", 1_000_000, 60) == (pytest.approx(1_000_066.0), 0)
    assert len(storage.windows["k"][1]) == 0


async def test_concurrent_requests_share_one_computation_of_a_tokens_slow_parts() -> None:
    """When a token page's analytics expire under load, one computation serves every waiting request
    (32 concurrent recomputations of the same store queries stalled the gateway for seconds)."""
    ctx = Context(
        settings=Settings(runtime={"symbols": ["BTC"]}, ingest={"live_feed": "off"}),
        bus=InMemoryBus(),
        store=None,
        embedded=True,
    )
    live = LiveState(ctx, None, StreamHub())  # type: ignore[arg-type]  # no store needed here
    calls = 0

    async def compute() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return {"n": calls}

    got = await asyncio.gather(*(live.slow_parts("BTC", compute) for _ in range(32)))
    assert calls == 1 and all(g == {"n": 1} for g in got)
    assert await live.slow_parts("BTC", compute) == {"n": 1} and calls == 1  # then cached

    async def failing() -> dict[str, Any]:
        raise RuntimeError("store down")

    with pytest.raises(RuntimeError):
        await live.slow_parts("ETH", failing)
    assert await live.slow_parts("ETH", compute) == {"n": 2}  # a failure is not kept


class KeyRows:
    """A store answering ``api_keys`` lookups from a dict of hash -> row, counting its queries."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str, str, int]] = {}
        self.queries = 0

    async def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        self.queries += 1
        row = self.rows.get(params["h"])
        return [row] if row else []


def test_the_key_cache_is_bounded_and_wrong_keys_cannot_push_known_ones_out() -> None:
    from tokenpulse_gateway.keys import KeyStore, hash_key

    store = KeyRows()
    for i in range(20):
        store.rows[hash_key(f"tp_known{i}")] = (f"id{i}", "n", "free", 0)
    keys = KeyStore(store, cache_ttl_s=60, cache_size=10, miss_ttl_s=60)  # type: ignore[arg-type]

    async def run() -> None:
        for i in range(20):  # more known keys than the cache holds: the least recently used go
            assert (await keys.lookup(f"tp_known{i}")) is not None
        assert len(keys._known) == 10 and keys.cached("tp_known19")[0] and not keys.cached("tp_known0")[0]
        before = store.queries
        for i in range(500):  # a flood of wrong keys
            assert await keys.lookup(f"tp_wrong{i}") is None
        assert len(keys._unknown) <= 1 and len(keys._known) == 10  # misses held apart, in a smaller cache
        assert store.queries - before == 500
        assert (await keys.lookup("tp_known19")) is not None and store.queries - before == 500  # still cached
        assert await keys.lookup("tp_wrong499") is None and store.queries - before == 500  # a miss is cached too

    asyncio.run(run())


def test_an_unknown_key_is_forgotten_sooner_than_a_known_one() -> None:
    from tokenpulse_gateway.keys import KeyStore, hash_key

    store = KeyRows()
    store.rows[hash_key("tp_known")] = ("id", "n", "free", 0)
    keys = KeyStore(store, cache_ttl_s=60, cache_size=100, miss_ttl_s=0.05)  # type: ignore[arg-type]

    async def run() -> None:
        await keys.lookup("tp_known")
        assert await keys.lookup("tp_late") is None
        store.rows[hash_key("tp_late")] = ("late", "n", "free", 0)  # created on another replica meanwhile
        await asyncio.sleep(0.1)
        queries = store.queries
        assert (await keys.lookup("tp_late")) is not None and store.queries == queries + 1
        assert (await keys.lookup("tp_known")) is not None and store.queries == queries + 1

    asyncio.run(run())


def test_a_token_detail_lasts_while_its_version_does_and_at_most_max_age(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(caches.time, "monotonic", clock)
    details = TokenDetails(max_age_s=60)
    details.put("BTC", 7, clock(), encode("btc"))
    clock.t += 59.9
    assert details.get("BTC", 7) == encode("btc")
    assert details.get("BTC", 8) is None and details.get("ETH", 7) is None
    clock.t += 0.1
    assert details.get("BTC", 7) is None


def test_stored_predictions_are_read_again_after_max_age(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(caches.time, "monotonic", clock)
    stored = StoredPredictions(max_age_s=60)
    assert stored.get("BTC") is None
    stored.put("BTC", clock(), [])  # none in the store is an answer too
    clock.t += 59.9
    assert stored.get("BTC") == []
    clock.t += 0.1
    assert stored.get("BTC") is None


def test_cycle_history_is_kept_per_data_version_and_drops_the_default_answer_with_it() -> None:
    history = CycleHistory()
    data = CycleData([], [], {})
    assert history.get((1, "a")) is None
    history.put((1, "a"), data)
    history.default_answer = {"halvings": []}
    assert history.get((1, "a")) is data and history.get((2, "b")) is None
    history.put((2, "b"), CycleData([], [], {}))
    assert history.default_answer is None


async def test_known_symbols_ask_the_store_only_for_an_unknown_one_and_at_most_every_refresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(caches.time, "monotonic", clock)
    stored = {"SOL"}
    reads = 0

    async def read_stored() -> set[str]:
        nonlocal reads
        reads += 1
        return set(stored)

    symbols = KnownSymbols(["BTC"], lambda s: s == "ETH", read_stored, refresh_s=10)
    assert [await symbols.resolve(s) for s in ("btc", "eth")] == ["BTC", "ETH"] and reads == 0
    assert await symbols.resolve("sol") == "SOL" and reads == 1
    stored.add("ADA")  # backfilled meanwhile: known at the next read, not before
    for _ in range(3):
        with pytest.raises(ApiError) as unknown:
            await symbols.resolve("ada")
        assert unknown.value.status == 404
    assert reads == 1
    clock.t += 10.1
    assert await symbols.resolve("ada") == "ADA" and reads == 2
    for bad in ("BTC\n", "B-TC", ""):
        with pytest.raises(ApiError) as refused:
            await symbols.resolve(bad)
        assert refused.value.status == 400 and refused.value.code == "invalid_symbol", bad
    assert reads == 2
