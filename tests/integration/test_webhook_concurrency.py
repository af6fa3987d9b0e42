"""Webhook requests in flight per receiving origin are capped (TOKENPULSE_WEBHOOK_CONCURRENCY): a burst of
firings waits its turn instead of opening a connection per firing against one customer's endpoint. Real
HTTP server on loopback (allow-listed) that holds each request briefly and counts how many overlap."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tokenpulse_alerts.delivery import Message, Notifier
from tokenpulse_shared.events import AlertChannel
from tokenpulse_shared.settings import Settings


class SlowReceiver:
    def __init__(self, hold_s: float) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.done = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.now += 1
                    receiver.peak = max(receiver.peak, receiver.now)
                time.sleep(hold_s)
                with receiver.lock:
                    receiver.now -= 1
                    receiver.done += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        class Server(ThreadingHTTPServer):
            request_queue_size = 128
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def receiver() -> Iterator[SlowReceiver]:
    r = SlowReceiver(hold_s=0.05)
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


async def burst(receiver: SlowReceiver, concurrency: int, n: int = 24) -> list[dict[str, object]]:
    notifier = Notifier(Settings(webhook_allowlist=["127.0.0.1"], webhook_concurrency=concurrency))
    try:
        messages = [
            Message(
                title="t",
                body="b",
                payload={"type": "alert", "alerts": [{"i": i}]},
                firing_ids=[f"f{i}"],
                owner=f"o{i}",
            )
            for i in range(n)
        ]
        # two paths on one origin share its cap
        channels = [AlertChannel(type="webhook", target=f"{receiver.url}/hook/{i % 2}") for i in range(n)]
        return await asyncio.gather(*(notifier.deliver(c, m) for c, m in zip(channels, messages, strict=True)))
    finally:
        await notifier.close()


async def test_in_flight_requests_per_origin_are_capped(receiver: SlowReceiver) -> None:
    records = await burst(receiver, concurrency=3)
    assert [r["status"] for r in records] == ["delivered"] * 24  # every firing delivered, none dropped
    assert receiver.done == 24
    assert receiver.peak == 3


async def test_a_higher_cap_lets_more_overlap(receiver: SlowReceiver) -> None:
    records = await burst(receiver, concurrency=12)
    assert all(r["status"] == "delivered" for r in records)
    assert 3 < receiver.peak <= 12
