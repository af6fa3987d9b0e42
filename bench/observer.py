"""The market benchmark's observer, in a process of its own so that the load generator's CPU use does not delay
its clock: it tails the output topics (the prices, candles and indicators batch topics, and signals) from their
end, each batch row counted as its event would be, and runs the local webhook receiver, stamping each arrival
with the wall clock (``time.time()``, the clock the ticks' ``ts`` is taken from).
The parent asks it for what arrived with ``collect(start, end)``.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import threading
import time
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import Any

import msgspec

TOPICS = {
    "prices": "tokenpulse.prices.v2",
    "candles": "tokenpulse.candles.v2",
    "indicators": "tokenpulse.indicators.v2",
    "signals": "tokenpulse.signals.v1",
}
BY_TOPIC = {v: k for k, v in TOPICS.items()}


class Head(msgspec.Struct):
    """The fields the observer needs of a signal event (the others are skipped undecoded)."""

    symbol: str
    ts: datetime
    interval: str = ""
    version: int = 0
    retracted: bool = False


class Rows(msgspec.Struct):
    """The columns the observer needs of a batch (prices: ``ts_us``; candles and indicators: ``ts_ms``)."""

    symbol: list[str]
    interval: list[str] = []
    ts_us: list[int] = []
    ts_ms: list[int] = []
    version: list[int] = []


def heads(rows: Rows) -> list[Head]:
    """A batch's rows as the heads of their per-event form (times in seconds)."""
    n = len(rows.symbol)
    ts = [t / 1e6 for t in rows.ts_us] if rows.ts_us else [t / 1e3 for t in rows.ts_ms]
    interval = rows.interval or [""] * n
    version = rows.version or [0] * n
    return [
        Head(s, datetime.fromtimestamp(t, UTC), i, v)
        for s, t, i, v in zip(rows.symbol, ts, interval, version, strict=True)
    ]


@dataclass
class Arrivals:
    price_ts: array = field(default_factory=lambda: array("d"))
    price_at: array = field(default_factory=lambda: array("d"))
    candles: list[tuple[str, str, float, int, float]] = field(default_factory=list)
    indicators: dict[tuple[str, str, float], float] = field(default_factory=dict)
    signals: list[tuple[str, str, float, float]] = field(default_factory=list)
    hooks: list[tuple[str, float, list[float]]] = field(default_factory=list)

    def add(self, kind: str, head: Head, at: float) -> None:
        ts = head.ts.timestamp()
        if kind == "prices":
            self.price_ts.append(ts)
            self.price_at.append(at)
        elif kind == "candles":
            self.candles.append((head.symbol, head.interval, ts, head.version, at))
        elif kind == "indicators":
            self.indicators.setdefault((head.symbol, head.interval, ts), at)
        elif not head.retracted:
            self.signals.append((head.symbol, head.interval, ts, at))

    def summary(self, start: float, end: float) -> dict[str, Any]:
        """Tick → price event latencies (ms) of the price events whose tick was sent in [start, end], and
        the other arrivals as they are (few)."""
        price_ms = [(a - t) * 1000 for t, a in zip(self.price_ts, self.price_at, strict=True) if start <= t <= end]
        return {
            "price_ms": price_ms,
            "prices_seen": len(self.price_ts),
            "candles": self.candles,
            "indicators": self.indicators,
            "signals": self.signals,
            "hooks": self.hooks,
        }


@dataclass
class Holder:
    """The current phase's arrivals, swapped for a new set at each collect (under ``lock``)."""

    arrivals: Arrivals = field(default_factory=Arrivals)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _receiver(holder: Holder) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            at = time.time()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            alerts = json.loads(body).get("alerts", [])
            stamps = [datetime.fromisoformat(a["ts"].replace("Z", "+00:00")).timestamp() for a in alerts]
            with holder.lock:
                holder.arrivals.hooks.append((self.path, at, stamps))

        def log_message(self, *args: object) -> None:
            return None

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # the default 5 resets connections when many deliveries arrive at once
        daemon_threads = True

    return Server(("127.0.0.1", 0), Handler)


async def _consume(bootstrap: str, partitions: int, conn: Connection) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    holder = Holder()
    server = _receiver(holder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in TOPICS.values() for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        conn.send(("ready", server.server_address[1]))
        decoder, batch_decoder = msgspec.json.Decoder(Head), msgspec.json.Decoder(Rows)
        while True:
            batches = await consumer.getmany(timeout_ms=20, max_records=20000)
            at = time.time()
            with holder.lock:
                for tp, records in batches.items():
                    kind = BY_TOPIC[tp.topic]
                    for r in records:
                        if not r.value:
                            continue
                        if kind == "signals":
                            holder.arrivals.add(kind, decoder.decode(r.value), at)
                        else:
                            for head in heads(batch_decoder.decode(r.value)):
                                holder.arrivals.add(kind, head, at)
            if conn.poll():
                command, *window = conn.recv()
                if command == "stop":
                    return
                with holder.lock:
                    done, holder.arrivals = holder.arrivals, Arrivals()
                conn.send(done.summary(*window))
    finally:
        await consumer.stop()
        server.shutdown()


def _main(bootstrap: str, partitions: int, conn: Connection) -> None:
    asyncio.run(_consume(bootstrap, partitions, conn))


class Observer:
    """Parent side: start the observer process, read its webhook URL, collect arrivals per phase."""

    def __init__(self, bootstrap: str, partitions: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_main, args=(bootstrap, partitions, child), daemon=True, name="bench-observer")
        self.hook_url = ""

    def __enter__(self) -> Observer:
        self.proc.start()
        if not self.conn.poll(60):
            raise RuntimeError("the observer did not start within 60 s")
        _, port = self.conn.recv()
        self.hook_url = f"http://127.0.0.1:{port}"
        return self

    def collect(self, start: float, end: float) -> dict[str, Any]:
        self.conn.send(("collect", start, end))
        summary: dict[str, Any] = self.conn.recv()
        return summary

    def __exit__(self, *exc: object) -> None:
        if self.proc.is_alive():
            self.conn.send(("stop",))
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
