"""What every request of one gateway app shares, built once from the settings: the app's ``state``.

Starlette's ``app.state`` is an untyped bag of attributes; :class:`GatewayState` is that bag with the
gateway's attributes typed, and :func:`state_of` the one place a request reaches it.
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import State
from starlette.requests import HTTPConnection
from tokenpulse_shared.bus import Bus
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store

from tokenpulse_gateway.analytics.cycles import Halving, load_halvings
from tokenpulse_gateway.caches import Caches, KnownSymbols, PageCache, StoredPredictions, TokenDetails
from tokenpulse_gateway.keys import KeyStore
from tokenpulse_gateway.limits import KeyLimiter
from tokenpulse_gateway.live import LiveState, StreamHub
from tokenpulse_gateway.queries import Queries
from tokenpulse_gateway.tiers import Tiers
from tokenpulse_gateway.writer import StoreWriter


class KeyLocks:
    """One lock per API key, so that checking a key's rule count and adding its rule do not interleave."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def of(self, key_id: str) -> asyncio.Lock:
        return self._locks.setdefault(key_id, asyncio.Lock())


class GatewayState(State):
    ctx: Context
    bus: Bus
    settings: Settings
    store: Store
    queries: Queries
    keys: KeyStore
    limiter: KeyLimiter
    tiers: Tiers
    hub: StreamHub
    live: LiveState
    symbols: KnownSymbols
    caches: Caches
    halvings: list[Halving]
    rule_locks: KeyLocks
    writer: StoreWriter | None
    """the store writer when this process persists the topics (set by the service)"""


def build_state(ctx: Context) -> GatewayState:
    """Every part, made from the settings (the one place the gateway's parts read them)."""
    assert ctx.store is not None, "the gateway needs the store"
    s = ctx.settings
    state = GatewayState()
    state.ctx, state.bus, state.settings, state.store = ctx, ctx.bus, s, ctx.store
    state.queries = Queries.on(ctx.store)
    state.keys = KeyStore(ctx.store, s.gateway.key_cache_ttl_s, s.gateway.key_cache_size, s.gateway.key_miss_ttl_s)
    state.limiter = KeyLimiter(
        s.gateway.redis_url.get_secret_value() if s.gateway.redis_url else None,
        s.gateway.key_issue_per_hour,
        s.gateway.auth_failures_per_minute,
    )
    state.tiers = Tiers(s.gateway.free_limit_per_minute, s.gateway.free_limit_per_month, s.gateway.max_rules_per_key)
    state.hub = StreamHub(s.gateway.stream_buffer)
    pages = PageCache(s.gateway.history_cache_ttl_s)
    live = state.live = LiveState(ctx, state.queries.market, state.hub, pages=pages)
    state.symbols = KnownSymbols(
        s.runtime.symbols, lambda symbol: symbol in live.tokens, state.queries.market.known_symbols
    )
    state.caches = Caches(pages, TokenDetails(live.sync_every_s), StoredPredictions(live.sync_every_s))
    state.halvings = load_halvings(s.runtime.bundle_dir / "btc_cycles.json")
    state.rule_locks = KeyLocks()
    state.writer = None
    return state


def state_of(connection: HTTPConnection) -> GatewayState:
    state: GatewayState = connection.app.state  # typed by this annotation (no cast() call on the hot path)
    return state
