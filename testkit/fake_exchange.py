"""A fake exchange for tests: a real WebSocket server on loopback speaking any venue of the registry.

It replays *recorded real messages* (``data/exchange-samples/``, captured by cryptofeed against the
live endpoints in 2021; see that folder's README): each trade it sends is a recorded trade frame
with only these fields rewritten, everything else (field names, types, layout, sizes, sides,
the other fields) as recorded:

* the pair (recorded small altcoins) is re-mapped to a requested token (BTC, ETH, ...);
* the price is rescaled: the recorded price relative to the first recorded price of its pair,
  times the token's target price (so BTC trades near 97,000 move as SKL-USD moved), times
  ``drift`` (1.05 makes this exchange 5% dearer than the others);
* trade ids are renumbered consecutively per token, continuing across connections, and
  times are restamped to now (so prices are fresh), or to ``clock()`` when one is given (a
  scripted timeline: a gap test makes minutes pass without waiting for them);
* Kraken v2 frames are built from the recorded v1 trade rows (no v2 recording exists);
* OKX, Bybit and Coinbase Advanced Trade frames are crafted from their documented formats
  (``testkit/venues/``, one module each with its documentation URL): the documented
  example trades stand in for a recording.

Scripted faults: :meth:`drop` (abrupt TCP abort, no close frame), :meth:`stall` (the open
connections go silent: no trades, no heartbeats), :meth:`garbage` (junk frames), :meth:`skip`
(trades that happen but are never sent: a gap), :meth:`duplicate` (the last frames again),
:meth:`emit` with ``reverse=True`` (out of order), and ``drift``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from tokenpulse_ingest.venues.kraken import v1_name
from tokenpulse_ingest.venues.registry import VENUES
from tokenpulse_shared.settings import REPO_ROOT
from websockets.asyncio.server import Server, ServerConnection, serve

from testkit.venues import Dialect, Trade
from testkit.venues.bybit import Bybit
from testkit.venues.coinbase_advanced import CoinbaseAdvanced
from testkit.venues.okx import Okx

T = TypeVar("T")

SAMPLES = REPO_ROOT / "data" / "exchange-samples"
RECORDINGS = {
    "binance": ["BINANCE.ws.1.0.aggTrade", "BINANCE_FUTURES.ws.1.0.aggTrade"],
    "coinbase": ["COINBASE.ws.28.0.trades"],
    "kraken": ["KRAKEN.ws.48.0"],
}
DIALECTS: dict[str, Dialect] = {d.kind: d for d in (Okx(), Bybit(), CoinbaseAdvanced())}


def received_frames(path: Path) -> list[str]:
    """The frames a recording received (``<ts>: <json>`` lines), in order."""
    opener: Any = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt") as fh:
        for line in fh:
            head, sep, body = line.partition(": ")
            if sep and " " not in head and head.replace(".", "", 1).isdigit():
                out.append(body.rstrip("\n"))
    return out


@dataclass
class Template:
    pair: str  # the recorded pair
    price: float  # the recorded price
    raw: Any  # the recorded frame (dict) or row (list, kraken v1)


def load_templates(kind: str) -> list[Template]:
    if kind in DIALECTS:  # crafted from the documented examples: (size, side) ride in ``raw``
        return [Template("DOC", price, (size, side)) for price, size, side in DIALECTS[kind].samples]
    out: list[Template] = []
    for name in RECORDINGS[kind]:
        for text in received_frames(SAMPLES / name):
            msg = json.loads(text)
            if kind == "binance" and isinstance(msg, dict) and msg.get("data", {}).get("e") == "aggTrade":
                out.append(Template(msg["data"]["s"], float(msg["data"]["p"]), msg))
            elif kind == "coinbase" and isinstance(msg, dict) and msg.get("type") == "match":
                out.append(Template(msg["product_id"], float(msg["price"]), msg))
            elif kind == "kraken" and isinstance(msg, list) and msg[-2] == "trade":
                out += [Template(msg[-1], float(row[0]), [msg[0], row, msg[-2], msg[-1]]) for row in msg[1]]
    if not out:
        raise RuntimeError(f"no recorded {kind} trades in {SAMPLES}")
    return out


@dataclass
class Sent:
    symbol: str
    trade_id: int
    ts: datetime
    price: float


def kraken_pong(ping: dict[str, Any], v1: bool) -> dict[str, Any]:
    """Kraken's answer to an application ping (v2 ``method``/``req_id``, v1 ``event``/``reqid``)."""
    if v1:
        return {"event": "pong", **({"reqid": ping["reqid"]} if "reqid" in ping else {})}
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    ids = {"req_id": ping["req_id"]} if "req_id" in ping else {}
    return {"method": "pong", **ids, "time_in": now, "time_out": now}


class FakeExchange:
    def __init__(
        self,
        kind: str,
        prices: dict[str, float],
        *,
        drift: float = 1.0,
        heartbeat_s: float | None = None,
        clock: Callable[[], datetime] | None = None,
        port: int = 0,
    ) -> None:
        self.kind = kind
        self.dialect = DIALECTS.get(kind)
        self.sequence_of: dict[ServerConnection, int] = {}  # messages sent per connection (Coinbase Advanced)
        self.bind_port = port  # 0: any free port; a fixed one lets a test start the exchange "later"
        self.clock = clock or (lambda: datetime.now(UTC))
        self.prices = prices
        self.drift = drift
        self.heartbeat_s = heartbeat_s
        self.templates = load_templates(kind)
        self.first_price: dict[str, float] = {}
        for t in self.templates:
            self.first_price.setdefault(t.pair, t.price)
        self._cursor = itertools.cycle(range(len(self.templates)))
        self.next_id = dict.fromkeys(prices, 1000)
        self.sequence = 5_000_000
        self.clients: dict[ServerConnection, set[str]] = {}
        self.stalled: set[ServerConnection] = set()
        self.v1_clients: set[ServerConnection] = set()
        self.connections = 0
        self.subscriptions: list[tuple[int, list[str]]] = []  # (connection number, venues)
        self.sent: list[Sent] = []
        self.history: list[tuple[str, str, str]] = []  # (symbol, frame, v1 frame), newest last
        self.server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FakeExchange:
        self.server = await serve(self._handler, "127.0.0.1", self.bind_port, ping_interval=None)
        if self.heartbeat_s:
            self._tasks.append(asyncio.create_task(self._heartbeats()))
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(next(iter(self.server.sockets)).getsockname()[1])

    @property
    def url(self) -> str:
        """The WebSocket URL to configure (``TOKENPULSE_<KIND>_WS_URL``)."""
        base = f"ws://127.0.0.1:{self.port}"
        if self.dialect is not None:
            return base + self.dialect.path
        return f"{base}/v2" if self.kind == "kraken" else base

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    def open_subscriptions(self) -> Counter[str]:
        """Venue pair -> how many open connections are subscribed to it now (closed ones no longer count)."""
        return Counter(venue for venues in list(self.clients.values()) for venue in venues)

    def venue(self, symbol: str, v1: bool = False) -> str:
        pair = VENUES[self.kind].default_pair(symbol)
        return v1_name(pair) if v1 else pair

    def symbol_of(self, venue: str) -> str | None:
        for s in self.prices:
            if venue in (self.venue(s), self.venue(s, v1=True)):
                return s
        return None

    # ------------------------------------------------------------------ connections
    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        number = self.connections
        path = ws.request.path if ws.request is not None else "/"
        v1 = self.kind == "kraken" and not urlsplit(path).path.rstrip("/").endswith("/v2")
        if v1:
            self.v1_clients.add(ws)
        try:
            if self.kind == "binance":
                streams = parse_qs(urlsplit(path).query).get("streams", [""])[0].split("/")
                venues = [s.split("@")[0].upper() for s in streams if s.endswith("@aggTrade")]
                self.clients[ws] = set(venues)
                self.subscriptions.append((number, venues))
            elif self.kind == "kraken":
                status: Any = (
                    {"connectionID": 1, "event": "systemStatus", "status": "online", "version": "1.8.3"}
                    if v1
                    else {"channel": "status", "type": "update", "data": [{"system": "online", "api_version": "v2"}]}
                )
                await ws.send(json.dumps(status))
            async for frame in ws:
                await self._on_client_frame(ws, number, frame, v1)
        except Exception:  # an aborted connection ends here; the server goes on
            pass
        finally:
            self.clients.pop(ws, None)
            self.sequence_of.pop(ws, None)
            self.stalled.discard(ws)
            self.v1_clients.discard(ws)

    async def _on_client_frame(self, ws: ServerConnection, number: int, frame: str | bytes, v1: bool) -> None:
        if self.dialect is not None:
            await self._on_dialect_frame(ws, number, frame if isinstance(frame, str) else frame.decode())
            return
        msg = json.loads(frame)
        if self.kind == "coinbase" and msg.get("type") == "subscribe":
            venues = list(msg["product_ids"])
            self.clients.setdefault(ws, set()).update(venues)
            self.subscriptions.append((number, venues))
            chans = [{"name": c, "product_ids": sorted(self.clients[ws])} for c in msg["channels"]]
            await ws.send(json.dumps({"type": "subscriptions", "channels": chans}))
        elif self.kind == "kraken" and (msg.get("method") or msg.get("event")) == "ping" and ws not in self.stalled:
            await ws.send(json.dumps(kraken_pong(msg, v1)))  # ccxt.pro pings and drops a connection left unanswered
        elif self.kind == "kraken" and not v1 and msg.get("method") == "subscribe":
            venues = list(msg["params"]["symbol"])
            self.clients.setdefault(ws, set()).update(venues)
            self.subscriptions.append((number, venues))
            for v in venues:
                result = {"channel": "trade", "symbol": v, "snapshot": False}
                await ws.send(json.dumps({"method": "subscribe", "result": result, "success": True}))
        elif self.kind == "kraken" and v1 and msg.get("event") == "subscribe":
            venues = list(msg["pair"])
            self.clients.setdefault(ws, set()).update(venues)
            self.subscriptions.append((number, venues))
            for i, v in enumerate(venues):
                ack = {"channelID": 100 + i, "channelName": "trade", "event": "subscriptionStatus", "pair": v}
                await ws.send(json.dumps({**ack, "status": "subscribed", "subscription": {"name": "trade"}}))

    async def _on_dialect_frame(self, ws: ServerConnection, number: int, text: str) -> None:
        assert self.dialect is not None
        answer = self.dialect.answer(text)
        if answer is not None:
            await self._send(ws, answer)
            return
        subscribed = self.dialect.subscribed(json.loads(text))
        if subscribed is None:
            return
        venues, answers = subscribed
        self.clients.setdefault(ws, set()).update(venues)
        if venues:
            self.subscriptions.append((number, venues))
        for a in answers:
            await self._send(ws, a)

    async def _send(self, ws: ServerConnection, text: str | bytes) -> None:
        if ws in self.stalled:
            return
        if self.dialect is not None and isinstance(text, str):
            stamped = self.dialect.stamp(text, self.sequence_of.get(ws, -1) + 1)
            if stamped != text:  # a numbered message: the connection's next number
                self.sequence_of[ws] = self.sequence_of.get(ws, -1) + 1
                text = stamped
        with contextlib.suppress(Exception):
            await ws.send(text)

    async def _heartbeats(self) -> None:
        assert self.heartbeat_s is not None
        while True:
            await asyncio.sleep(self.heartbeat_s)
            now = datetime.now(UTC)
            for ws, venues in list(self.clients.items()):
                if self.dialect is not None:
                    for v in sorted(venues):
                        sym = self.symbol_of(v)
                        beat = None if sym is None else self.dialect.heartbeat(v, self.next_id[sym] - 1, now)
                        if beat is not None:
                            await self._send(ws, beat)
                elif self.kind == "coinbase":
                    for v in sorted(venues):
                        sym = self.symbol_of(v)
                        if sym is None:
                            continue
                        body = {
                            "type": "heartbeat",
                            "sequence": self.sequence,
                            "last_trade_id": self.next_id[sym] - 1,
                            "product_id": v,
                            "time": now.isoformat().replace("+00:00", "Z"),
                        }
                        await self._send(ws, json.dumps(body))
                elif self.kind == "kraken":
                    beat = {"event": "heartbeat"} if ws in self.v1_clients else {"channel": "heartbeat"}
                    await self._send(ws, json.dumps(beat))

    # ------------------------------------------------------------------ trades
    def _frame(self, symbol: str, trade_id: int, ts: datetime, v1: bool, index: int | None = None) -> tuple[str, float]:
        t = self.templates[next(self._cursor) if index is None else index]
        price = self.prices[symbol] * t.price / self.first_price[t.pair] * self.drift
        ms = int(ts.timestamp() * 1000)
        iso = ts.isoformat().replace("+00:00", "Z")
        self.sequence += 7  # other channels' messages take sequence numbers too
        if self.dialect is not None:
            size, side = t.raw
            return self.dialect.trades([Trade(self.venue(symbol), trade_id, ts, price, size, side)]), price
        if self.kind == "binance":
            venue = self.venue(symbol)
            data = {**t.raw["data"], "s": venue, "a": trade_id, "p": f"{price:.8f}", "T": ms, "E": ms}
            data["f"] = data["l"] = trade_id * 3
            return json.dumps({"stream": f"{venue.lower()}@aggTrade", "data": data}), price
        if self.kind == "coinbase":
            body = {**t.raw, "product_id": self.venue(symbol), "trade_id": trade_id, "price": f"{price:.8f}"}
            body.update(time=iso, sequence=self.sequence)
            return json.dumps(body), price
        row = list(t.raw[1])
        if v1:
            row[0], row[2] = f"{price:.5f}", f"{ts.timestamp():.6f}"
            return json.dumps([t.raw[0], [row], "trade", self.venue(symbol, v1=True)]), price
        trade = {
            "symbol": self.venue(symbol),
            "side": "buy" if row[3] == "b" else "sell",
            "price": round(price, 5),
            "qty": float(row[1]),
            "ord_type": "market" if row[4] == "m" else "limit",
            "trade_id": trade_id,
            "timestamp": iso,
        }
        return json.dumps({"channel": "trade", "type": "update", "data": [trade]}), price

    async def emit(self, count: int = 1, symbols: list[str] | None = None, *, reverse: bool = False) -> list[Sent]:
        """Send ``count`` new trades of each token to every connection subscribed to it (``reverse``: newest first)."""
        made: list[Sent] = []
        frames: list[tuple[str, str, str]] = []  # (symbol, frame, v1 frame)
        for symbol in symbols or list(self.prices):
            for _ in range(count):
                trade_id = self.next_id[symbol]
                self.next_id[symbol] += 1
                ts = self.clock()
                index = next(self._cursor)
                frame, price = self._frame(symbol, trade_id, ts, v1=False, index=index)
                frame_v1 = (
                    self._frame(symbol, trade_id, ts, v1=True, index=index)[0] if self.kind == "kraken" else frame
                )
                made.append(Sent(symbol, trade_id, ts, price))
                frames.append((symbol, frame, frame_v1))
        if reverse:
            frames.reverse()
        await self._broadcast(frames)
        self.sent += made
        self.history = (self.history + frames)[-1000:]
        return made

    async def _broadcast(self, frames: list[tuple[str, str, str]]) -> None:
        for ws, venues in list(self.clients.items()):
            for symbol, frame, frame_v1 in frames:
                if self.venue(symbol) in venues:
                    await self._send(ws, frame)
                elif self.venue(symbol, v1=True) in venues:
                    await self._send(ws, frame_v1)

    def skip(self, symbol: str, n: int) -> None:
        """``n`` trades happen on the exchange but are never sent: the next one reveals a gap."""
        self.next_id[symbol] += n

    async def duplicate(self, k: int) -> None:
        """Send the last ``k`` trade frames again (to whoever is connected now: a reconnect's overlap)."""
        await self._broadcast(self.history[-k:])

    async def garbage(self) -> int:
        """Junk of several kinds to every connection; returns how many frames."""
        frames: list[str | bytes] = [
            "not json {",
            b"\x00\xff\x13binary junk",
            "[1, 2",
            json.dumps({"type": "mystery", "event": "mystery", "channel": "mystery", "data": {"e": "mystery"}}),
        ]
        symbol = next(iter(self.prices))
        good, _ = self._frame(symbol, 1, datetime.now(UTC), v1=False)
        broken = {"binance": ('"p": "', '"p": "abc'), "coinbase": ('"price": "', '"price": "-')}
        if self.dialect is not None:
            broken[self.kind] = self.dialect.broken
        old, new = broken.get(self.kind, ('"price": ', '"price": -'))
        assert old in good
        frames.append(good.replace(old, new))  # a trade with an unusable price
        for ws in list(self.clients):
            for f in frames:
                await self._send(ws, f)
        return len(frames)

    def stall(self) -> None:
        """The open connections go silent (TCP stays up, protocol pings still answered); new ones work."""
        self.stalled.update(self.clients)

    async def drop(self) -> int:
        """Abort every open connection (no close frame, as a crashed server or a cut cable)."""
        n = 0
        for ws in list(self.clients):
            ws.transport.abort()
            n += 1
        await asyncio.sleep(0)
        return n

    def stream(self, interval_s: float = 0.2) -> None:
        """Keep sending one trade per token every ``interval_s`` (for the embedded test)."""

        async def loop() -> None:
            while True:
                with contextlib.suppress(Exception):
                    await self.emit(1)
                await asyncio.sleep(interval_s)

        self._tasks.append(asyncio.create_task(loop()))


class FakeExchanges:
    """Fake exchanges on an event loop of their own (a thread), each streaming a trade per token every
    ``stream_s``, for tests driving ``tokenpulse`` processes; ``kinds`` maps a feed name (``ccxt:kraken``)
    to the venue the fake speaks."""

    def __init__(self, kinds: dict[str, str], prices: dict[str, float], stream_s: float = 0.1) -> None:
        self.fakes = {name: FakeExchange(kind, prices, heartbeat_s=1.0) for name, kind in kinds.items()}
        self.stream_s = stream_s
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeExchanges:
        self.thread.start()
        self.call(self._start)
        return self

    async def _start(self) -> None:
        for fake in self.fakes.values():
            await fake.start()
            fake.stream(self.stream_s)

    def __exit__(self, *exc: object) -> None:
        self.call(self._stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _stop(self) -> None:
        for fake in self.fakes.values():
            await fake.stop()

    def call(self, work: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30) -> T:
        """Run ``work()`` on the fakes' loop (their state is that loop's) and return its result."""
        return asyncio.run_coroutine_threadsafe(work(), self.loop).result(timeout)


async def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
