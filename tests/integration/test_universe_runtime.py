"""The universe changes while ingest runs: a token added to the file gets ticks and prices without a restart,
one removed stops (no more ticks taken from ticks.v1 or ticks.v2, no more prices), on the in-process bus and on
a real Kafka broker, with another process's follower (as the gateway's) seeing the same universe; and the live feed's
subscriptions follow it on a fake exchange (a real WebSocket on loopback)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tokenpulse_ingest.service import IngestService
from tokenpulse_shared.batches import TickBatch
from tokenpulse_shared.bus import Bus
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import PriceEvent, TickEvent
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.topics import PRICES, TICKS, TICKS_V2
from tokenpulse_shared.universe import UniverseFollower

from testkit.fake_exchange import FakeExchange, wait_for

HEADER = "symbol,name,binance\n"


def write(path: Path, *rows: str) -> None:
    path.write_text(HEADER + "".join(f"{r}\n" for r in rows))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BusPair = Callable[[], tuple[Bus, Bus]]


@pytest.fixture(params=["memory", "kafka"])
def buses(request: pytest.FixtureRequest) -> BusPair:
    """Two buses on the same topics: ingest's, and another process's (the gateway's)."""
    if request.param == "memory":

        def memory() -> tuple[Bus, Bus]:
            bus = InMemoryBus()
            return bus, bus.peer()

        return memory
    # a broker of its own: on the shared one the new groups would first read every test's backlog (tens of
    # thousands of prices and hostile messages by then), and the restore every test's ticks
    bootstrap = request.getfixturevalue("own_kafka")
    from tokenpulse_shared.bus.kafka import KafkaBus

    run = uuid.uuid4().hex[:8]
    return lambda: (KafkaBus(bootstrap, group_prefix=f"uni-{run}"), KafkaBus(bootstrap, group_prefix=f"uni-gw-{run}"))


class Watch:
    """What the bus carries per token: ticks and prices."""

    def __init__(self) -> None:
        self.ticks: Counter[str] = Counter()
        self.prices: Counter[str] = Counter()

    async def on_ticks(self, events: list[TickEvent]) -> None:
        self.ticks.update(t.symbol for t in events)

    async def on_prices(self, events: list[PriceEvent]) -> None:
        self.prices.update(p.symbol for p in events)


@pytest.fixture
async def running(tmp_path: Path, buses: BusPair) -> AsyncIterator[tuple[IngestService, UniverseFollower, Watch, Bus]]:
    universe = tmp_path / "universe.csv"
    write(universe, "BTC,Bitcoin,BTCUSDT", "ETH,Ethereum,ETHUSDT")
    settings = Settings(
        runtime={"universe": universe},
        ingest={"live_feed": "synthetic", "synthetic_tick_s": 0.1, "universe_refresh_s": 0.2},
    )
    bus, other = buses()
    ctx = Context(settings=settings, bus=bus, embedded=isinstance(bus, InMemoryBus))
    ingest, gateway, watch = IngestService(), UniverseFollower(), Watch()
    ingest.register(ctx)
    gateway.follow(other, "gateway-universe")
    other.subscribe(TICKS, "watch", watch.on_ticks)
    other.subscribe(PRICES, "watch", watch.on_prices)
    await bus.start()
    await other.start()
    await ingest.start(ctx)
    try:
        yield ingest, gateway, watch, bus
    finally:
        await ingest.stop()
        await other.stop()
        await bus.stop()


async def test_a_token_added_is_followed_and_one_removed_stops(
    tmp_path: Path, running: tuple[IngestService, UniverseFollower, Watch, Bus]
) -> None:
    ingest, gateway, watch, bus = running
    await wait_for(lambda: watch.prices["BTC"] >= 3 and watch.prices["ETH"] >= 3, 30, "prices of the first universe")
    await wait_for(lambda: gateway.symbols() == ["BTC", "ETH"], 30, "the other process's universe")

    write(tmp_path / "universe.csv", "BTC,Bitcoin,BTCUSDT", "ZZNEW,Brand New,")  # ETH out, ZZNEW (no history) in
    await wait_for(lambda: watch.prices["ZZNEW"] >= 3, 30, "prices of the added token, no restart")
    await wait_for(lambda: gateway.symbols() == ["BTC", "ZZNEW"], 30, "the removal seen by the other process")
    assert gateway.tokens["ZZNEW"].name == "Brand New" and gateway.tokens["ZZNEW"].pairs == {"binance": None}
    assert ingest.feed is not None and set(ingest.feed.states) == {"BTC", "ZZNEW"}

    await asyncio.sleep(1.0)  # what was in flight when ETH left has arrived
    eth_ticks, eth_prices, btc_prices = watch.ticks["ETH"], watch.prices["ETH"], watch.prices["BTC"]
    outsider = TickEvent(symbol="ETH", source="someone", ts=datetime.now(UTC), price=3000.0, size=1.0, trade_id="x1")
    await bus.publish(TICKS, [outsider])  # someone still sends its trades: ingest no longer takes them
    on_v2 = outsider.model_copy(update={"trade_id": "x2"})
    await bus.publish_rows(TICKS_V2, TickBatch.from_events([on_v2]), linger=False)  # nor as rows on ticks.v2
    await wait_for(lambda: watch.prices["BTC"] >= btc_prices + 5, 30, "prices of the tokens that stayed")
    assert watch.ticks["ETH"] == eth_ticks + 1  # only the outsider's trade, no synthetic one
    assert watch.prices["ETH"] == eth_prices  # and no price for it


async def test_live_subscriptions_follow_the_universe(tmp_path: Path) -> None:
    universe = tmp_path / "universe.csv"
    write(universe, "BTC,Bitcoin,BTCUSDT")
    port = free_port()
    fake = await FakeExchange("binance", {"BTC": 97_000.0, "ETH": 3_500.0}, port=port).start()
    settings = Settings(
        runtime={"universe": universe},
        ingest={
            "live_feed": "live",
            "feed_exchanges": ["binance"],
            "universe_refresh_s": 0.2,
            "rest_backfill_gaps": False,
        },
        binance={"ws_url": f"ws://127.0.0.1:{port}"},
    )
    bus = InMemoryBus()
    ctx = Context(settings=settings, bus=bus, embedded=True)
    ingest, watch = IngestService(), Watch()
    ingest.register(ctx)
    bus.subscribe(PRICES, "watch", watch.on_prices)
    await bus.start()
    await ingest.start(ctx)
    try:
        await wait_for(lambda: fake.subscriptions and fake.subscriptions[-1][1] == ["BTCUSDT"], 20, "BTC subscribed")
        fake.stream(0.05)
        await wait_for(lambda: watch.prices["BTC"] >= 3, 20, "BTC prices")

        write(universe, "BTC,Bitcoin,BTCUSDT", "ETH,Ethereum,ETHUSDT")
        await wait_for(lambda: sorted(fake.subscriptions[-1][1]) == ["BTCUSDT", "ETHUSDT"], 20, "ETH subscribed")
        await wait_for(lambda: watch.prices["ETH"] >= 3, 20, "ETH prices without a restart")

        write(universe, "ETH,Ethereum,ETHUSDT")
        await wait_for(lambda: fake.subscriptions[-1][1] == ["ETHUSDT"], 20, "BTC unsubscribed")
        await asyncio.sleep(0.5)
        btc = watch.prices["BTC"]
        eth = watch.prices["ETH"]
        await wait_for(lambda: watch.prices["ETH"] >= eth + 5, 20, "ETH prices go on")
        assert watch.prices["BTC"] == btc
    finally:
        await ingest.stop()
        await bus.stop()
        await fake.stop()
