"""The ``/mcp`` guard of the gateway on the real engine (chDB): no answer before the service starts its MCP
session manager, and a cap on the MCP requests one key has in flight. The MCP server behind the guard is
replaced by one that holds each request until the test lets it go (a tool call that takes its time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send
from tokenpulse_gateway.service import GatewayService
from tokenpulse_gateway.tiers import tier_of
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store

pytestmark = pytest.mark.asyncio(loop_scope="module")
LISTING = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class HeldTools:
    """An MCP server stand-in: answers each request once :attr:`go` is set, counting the ones it holds."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.holding = 0
        self.arrived = asyncio.Condition()

    async def holds(self, count: int) -> None:
        async with self.arrived:
            await self.arrived.wait_for(lambda: self.holding >= count)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self.arrived:
            self.holding += 1
            self.arrived.notify_all()
        await self.go.wait()
        await JSONResponse({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}})(scope, receive, send)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayService]:
    store = await Store(f"chdb://{tmp_path_factory.mktemp('mcp') / 'ch'}").open()
    gateway = GatewayService()
    settings = Settings(runtime={"symbols": ["BTC"]}, ingest={"live_feed": "off"}, gateway={"key_issue_per_hour": 1000})
    gateway.register(Context(settings=settings, bus=InMemoryBus(), store=store, embedded=True))
    yield gateway
    await gateway.stop()
    await store.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(service: GatewayService) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as client:
        yield client


async def new_key(api: httpx.AsyncClient) -> str:
    r = await api.post("/v1/keys", json={"name": "mcp"})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


async def start(service: GatewayService) -> None:
    assert service.app is not None
    if not service.app.state.mcp.running:
        await service.start(Context(settings=Settings(), bus=InMemoryBus(), store=None, embedded=True))


async def test_unavailable_until_the_service_starts_it(service: GatewayService, api: httpx.AsyncClient) -> None:
    key = await new_key(api)
    before = await api.post("/mcp", json=LISTING, headers={**HEADERS, "X-API-Key": key})
    await start(service)
    after = await api.post("/mcp", json=LISTING, headers={**HEADERS, "X-API-Key": key})
    assert before.status_code == 503 and before.json()["error"]["code"] == "mcp_unavailable"
    assert after.status_code == 200 and "get_token" in after.text


async def test_a_key_has_at_most_its_tiers_mcp_requests_in_flight(
    service: GatewayService, api: httpx.AsyncClient
) -> None:
    await start(service)
    assert service.app is not None
    mcp = service.app.state.mcp
    held, real = HeldTools(), mcp.app
    mcp.app = held
    cap = tier_of("free").max_mcp_calls
    key, other = await new_key(api), await new_key(api)
    post = lambda k: api.post("/mcp", json=LISTING, headers={**HEADERS, "X-API-Key": k})  # noqa: E731
    try:
        in_flight = [asyncio.create_task(post(key)) for _ in range(cap)]
        await asyncio.wait_for(held.holds(cap), 10)
        refused = await post(key)
        other_key = asyncio.create_task(post(other))  # another key's allowance is its own
        await asyncio.wait_for(held.holds(cap + 1), 10)
        held.go.set()
        answers = [await t for t in [*in_flight, other_key]]
        again = await post(key)  # the finished requests gave their places back
    finally:
        mcp.app = real
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_mcp_calls"
    assert refused.headers["Retry-After"] == "1"
    assert [a.status_code for a in answers] == [200] * (cap + 1)
    assert again.status_code == 200 and not mcp.in_flight
