"""A webhook receiver cannot hold a delivery or fill memory with its answer: one overall deadline per
attempt, and only the start of an answer is read. Real sockets on loopback play hostile receivers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from tokenpulse_alerts import delivery
from tokenpulse_alerts.delivery import Message, Notifier
from tokenpulse_shared.events import AlertChannel
from tokenpulse_shared.settings import Settings

pytestmark = pytest.mark.asyncio

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"


class HostileReceiver:
    """Answers every connection with a 200 whose body of ``length`` bytes comes ``chunk`` bytes every
    ``pause_s``; ``sent`` counts the body bytes it got out before the client hung up."""

    def __init__(self, length: int, chunk: int, pause_s: float) -> None:
        self.length, self.chunk, self.pause_s = length, chunk, pause_s
        self.sent = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(HEAD % self.length)
                while self.sent < self.length:
                    conn.sendall(b"x" * self.chunk)
                    self.sent += self.chunk
                    time.sleep(self.pause_s)
            except OSError:
                return

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def notifier() -> Iterator[Notifier]:
    yield Notifier(
        Settings(
            alerts={"alerts_signing_key": "answers-test", "webhook_allowlist": ["127.0.0.1/32"], "delivery_attempts": 1}
        )
    )


def message() -> Message:
    return Message("Tokenpulse alert: BTC", "BTC crossed", {"type": "alert", "alerts": []}, ["f1"], "owner-1")


async def test_a_trickled_answer_fails_at_the_deadline(notifier: Notifier, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "WEBHOOK_DEADLINE_S", 1.0)
    receiver = HostileReceiver(length=1_000_000, chunk=1, pause_s=0.2)  # a byte every 0.2 s: each read is quick
    try:
        started = time.monotonic()
        record = await notifier.deliver(
            AlertChannel(type="webhook", target=f"http://127.0.0.1:{receiver.port}/hook"), message()
        )
        took = time.monotonic() - started
    finally:
        receiver.close()
        await notifier.close()
    assert record["status"] == "failed" and "did not answer within 1 s" in record["error"], record
    assert took < 5, took


async def test_a_huge_answer_is_not_read_whole(notifier: Notifier) -> None:
    receiver = HostileReceiver(length=200_000_000, chunk=65536, pause_s=0.0)
    try:
        record = await notifier.deliver(
            AlertChannel(type="webhook", target=f"http://127.0.0.1:{receiver.port}/hook"), message()
        )
    finally:
        receiver.close()
        await notifier.close()
    assert record["status"] == "delivered", record
    await asyncio.sleep(0.5)
    assert receiver.sent < 20_000_000, receiver.sent  # socket buffers hold some; the whole 200 MB never left
