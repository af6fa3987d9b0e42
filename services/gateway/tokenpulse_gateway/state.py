"""What every request of one gateway app shares, built once from the settings: the app's ``state``.

Starlette's ``app.state`` is an untyped bag of attributes; :class:`GatewayState` is that bag with the
gateway's attributes typed, and :func:`state_of` the one place a request reaches it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pydantic import SecretStr
from starlette.datastructures import State
from starlette.requests import HTTPConnection
from tokenpulse_shared.bus import Bus
from tokenpulse_shared.channels import webhook_secret
from tokenpulse_shared.service import Context
from tokenpulse_shared.store import Store

from tokenpulse_gateway.analytics.cycles import Halving, load_halvings
from tokenpulse_gateway.caches import Caches, KnownSymbols, PageCache, StoredPredictions, TokenDetails
from tokenpulse_gateway.keys import KeyStore
from tokenpulse_gateway.limits import KeyLimiter
from tokenpulse_gateway.live import LiveState, StreamHub
from tokenpulse_gateway.mcp import McpTools
from tokenpulse_gateway.queries import Queries
from tokenpulse_gateway.tiers import Tiers
from tokenpulse_gateway.token_board import TokenBoard
from tokenpulse_gateway.writer import StoreWriter


class KeyLocks:
    """One lock per API key, so that checking a key's rule count and adding its rule do not interleave."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def of(self, key_id: str) -> asyncio.Lock:
        return self._locks.setdefault(key_id, asyncio.Lock())


@dataclass(frozen=True)
class Webhooks:
    """What the alert routes need for a webhook channel: where it may point, and what signs its requests."""

    allowlist: list[str]
    """private hosts or networks a webhook may reach all the same (TOKENPULSE_WEBHOOK_ALLOWLIST)"""
    signing_key: str = field(repr=False)

    def secret_for(self, key_id: str) -> str:
        """The signing secret of the webhooks of ``key_id``'s rules (the alerts service derives the same)."""
        return webhook_secret(self.signing_key, key_id)


class GatewayState(State):
    ctx: Context
    bus: Bus
    store: Store
    queries: Queries
    keys: KeyStore
    limiter: KeyLimiter
    tiers: Tiers
    hub: StreamHub
    live: LiveState
    board: TokenBoard
    """``/v1/tokens``, kept ready from the live state"""
    symbols: KnownSymbols
    caches: Caches
    halvings: list[Halving]
    rule_locks: KeyLocks
    webhooks: Webhooks
    admin_token: SecretStr | None
    """None: the admin API is off"""
    mcp: McpTools
    writer: StoreWriter | None
    """the store writer when this process persists the topics (set by the service)"""


def build_state(ctx: Context) -> GatewayState:
    """Every part, made from the settings (the one place the gateway's parts read them)."""
    assert ctx.store is not None, "the gateway needs the store"
    s, g = ctx.settings, ctx.settings.gateway
    state = GatewayState()
    state.ctx, state.bus, state.store = ctx, ctx.bus, ctx.store
    state.queries = Queries.on(ctx.store)
    state.keys = KeyStore(ctx.store, g.key_cache_ttl_s, g.key_cache_size, g.key_miss_ttl_s)
    state.limiter = KeyLimiter(g.redis_url, g.key_issue_per_hour, g.auth_failures_per_minute)
    state.tiers = Tiers(g.free_limit_per_minute, g.free_limit_per_month, g.max_rules_per_key)
    state.hub = StreamHub(g.stream_buffer, heartbeat_s=g.stream_heartbeat_s)
    pages = PageCache(g.history_cache_ttl_s)
    tracked = s.runtime.symbols
    live = state.live = LiveState(ctx, state.queries.market, state.hub, pages=pages, symbols=tracked)
    state.board = TokenBoard(live)
    state.symbols = KnownSymbols(tracked, lambda symbol: symbol in live.tokens, state.queries.market.known_symbols)
    state.caches = Caches(pages, TokenDetails(live.sync_every_s), StoredPredictions(live.sync_every_s))
    state.halvings = load_halvings(s.runtime.bundle_dir / "btc_cycles.json")
    state.rule_locks = KeyLocks()
    state.webhooks = Webhooks(s.alerts.webhook_allowlist, s.require_signing_key())
    state.admin_token = s.require_admin_token()
    state.mcp = McpTools(g.max_body_bytes)
    state.writer = None
    return state


def state_of(connection: HTTPConnection) -> GatewayState:
    state: GatewayState = connection.app.state  # typed by this annotation (no cast() call on the hot path)
    return state
