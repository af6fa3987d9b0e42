"""CPU time per gateway request in process (no network, no load generator): the ASGI app is called
directly, next to the bare FastAPI app of bench/bare_app.py, on the real engine (chDB) with the
bundled BTC/ETH daily history. Process CPU time, not wall time, and the best of BENCH_CPU_ROUNDS
interleaved rounds: steadier than `hey` on a shared machine, though it leaves out the HTTP server
(uvicorn's parsing and socket work, the same for both apps). Run: `.venv/bin/python -m bench.gateway_cpu`.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Any

import httpx
from tokenpulse_gateway.service import GatewayService
from tokenpulse_ingest.backfill import plan, publish_history
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.events import Interval
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store

from testkit.wiring import embedded

N = int(os.environ.get("BENCH_CPU_REQUESTS", "300"))
ROUNDS = int(os.environ.get("BENCH_CPU_ROUNDS", "6"))


async def call(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    p, _, q = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": p,
        "raw_path": p.encode(),
        "query_string": q.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 80),
    }
    sent = False
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


async def cpu_us(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> float:
    start = time.process_time()
    for _ in range(N):
        status = await call(app, path, headers)
    assert status == 200, (path, status)
    return (time.process_time() - start) / N * 1e6


async def main() -> None:
    store = await Store(f"chdb://{tempfile.mkdtemp(prefix='tokenpulse-bench-cpu-')}/ch").open()
    settings = Settings(
        runtime={"symbols": ["BTC", "ETH"]},
        ingest={"live_feed": "off"},
        gateway={"free_limit_per_minute": 10**9, "free_limit_per_month": 10**9},
    )
    gateway, scoring = GatewayService(), ScoringService()
    bus, ctx = embedded(settings, store, gateway, scoring)
    await bus.start()
    await scoring.start(ctx)
    await publish_history(bus, plan(settings.runtime.bundle_dir, ["BTC", "ETH"], [Interval.D1]))
    await bus.drain()
    app = gateway.app
    assert app is not None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        key = (await c.post("/v1/keys", json={"name": "bench"})).json()["key"]
    from bench.bare_app import app as bare

    h = [(b"host", b"t"), (b"x-api-key", key.encode())]
    targets = [
        ("bare FastAPI `/bare`", bare, "/bare", [(b"host", b"t")]),
        ("gateway `/v1/tokens`", app, "/v1/tokens", h),
        ("gateway `/v1/tokens/BTC`", app, "/v1/tokens/BTC", h),
        ("gateway `/v1/candles/BTC?interval=1d&limit=100`", app, "/v1/candles/BTC?interval=1d&limit=100", h),
    ]
    best: dict[str, float] = {}
    for _ in range(ROUNDS):
        for label, a, path, headers in targets:
            best[label] = min(best.get(label, float("inf")), await cpu_us(a, path, headers))
    await bus.stop()
    print(f"\n{N} requests x {ROUNDS} rounds, best round, process CPU time:\n")
    print("| target | CPU µs per request | bare / target |")
    print("|---|---|---|")
    for label, us in best.items():
        print(f"| {label} | {us:,.0f} | {best[targets[0][0]] / us:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
