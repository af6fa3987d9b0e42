"""The universe model: file rules, the short form, top-N, the venues' pairs and overrides, and the topic's
publisher and follower on the in-process bus (what every service sees)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenpulse_ingest.venues.registry import pairs_for
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import UniverseTokenEvent
from tokenpulse_shared.settings import DEFAULT_BUNDLE, Settings
from tokenpulse_shared.topics import UNIVERSE
from tokenpulse_shared.universe import (
    Token,
    UniverseError,
    UniverseFollower,
    UniversePublisher,
    configured,
    from_symbols,
    load_file,
    parse_csv,
    top_n,
)

TOP1000 = DEFAULT_BUNDLE / "universe" / "top1000.csv"


def test_the_shipped_file_loads_in_rank_order() -> None:
    tokens = load_file(TOP1000)
    assert len(tokens) == 1000
    assert [t.rank for t in tokens] == list(range(1, 1001))
    btc = tokens[0]
    assert (btc.symbol, btc.name) == ("BTC", "Bitcoin")
    assert btc.pairs == {"binance": "BTCUSDT", "coinbase": "BTC-USD", "kraken": "XBT/USD"}
    bnb = next(t for t in tokens if t.symbol == "BNB")
    assert bnb.pairs["coinbase"] is None  # blank: not listed there


def test_file_rules() -> None:
    text = "\ufeffSymbol, Name ,binance\n# a comment\n\nbtc,Bitcoin,BTCUSDT\nETH,,\n"
    tokens = parse_csv(text.lstrip("\ufeff"))
    assert [(t.symbol, t.name, t.rank, dict(t.pairs)) for t in tokens] == [
        ("BTC", "Bitcoin", 1, {"binance": "BTCUSDT"}),
        ("ETH", "ETH", 2, {"binance": None}),  # no name: the symbol; blank pair: not listed
    ]
    assert [t.pairs for t in parse_csv("symbol,name\nBTC,Bitcoin\n")] == [{}]  # no venue column: defaults


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("ticker,name\nBTC,Bitcoin\n", r"universe:1: the header must start with `symbol,name`"),
        ("symbol,name,Binance!\n", "venue column"),
        ("symbol,name,binance,binance\n", "appears twice"),
        ("symbol,name,binance\nBTC,Bitcoin\n", r"universe:2: 2 fields, the header has 3"),
        ("symbol,name\nBTC-X,Bitcoin\n", r"universe:2: symbol 'BTC-X'"),
        ("symbol,name\nBTC,Bitcoin\nETH,Ether\nBTC,Again\n", r"universe:4: BTC already on line 2"),
        ("symbol,name,binance\nBTC,B,BTCUSDT\nWBTC,W,BTCUSDT\n", r"universe:3: binance pair BTCUSDT already on line 2"),
        ("symbol,name,binance\nBTC,B,BTC USDT\n", r"universe:2: pairs.binance"),
        ("symbol,name\nBTC," + "x" * 101 + "\n", r"universe:2: name"),
    ],
)
def test_bad_files_name_the_line(text: str, message: str) -> None:
    with pytest.raises(UniverseError, match=message):
        parse_csv(text)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UniverseError, match=r"nope\.csv"):
        load_file(tmp_path / "nope.csv")


def test_short_form_and_file_setting() -> None:
    short = configured(Settings(runtime={"symbols": ["BTC", "ETH", "BTC", "FOO"]}))
    assert [(t.symbol, t.name, t.rank) for t in short] == [
        ("BTC", "Bitcoin", 1),
        ("ETH", "Ethereum", 2),
        ("FOO", "FOO", 3),
    ]
    assert configured(Settings(runtime={"universe": TOP1000, "symbols": ["BTC"]}))[999].symbol == "HCH"


def test_top_n_by_rank_or_by_score() -> None:
    tokens = from_symbols(["A", "B", "C", "D"])
    assert [t.symbol for t in top_n(tokens, 2)] == ["A", "B"]
    assert [t.symbol for t in top_n(tokens, 0)] == ["A", "B", "C", "D"]
    assert [t.symbol for t in top_n(tokens, 2, {"C": 9.0, "D": 5.0, "A": 1.0})] == ["C", "D"]
    settings = Settings(runtime={"universe": TOP1000, "universe_top_n": 50})
    assert [t.symbol for t in configured(settings)][:2] == ["BTC", "ETH"] and len(configured(settings)) == 50


def test_venue_pairs_come_from_the_universe_then_defaults_then_overrides() -> None:
    tokens = [
        Token("BTC", "Bitcoin", 1, {"binance": "BTCFDUSD", "kraken": "XBT/USD"}),  # Kraken's v1 name
        Token("BNB", "BNB", 2, {"binance": "BNBUSDT", "coinbase": None, "kraken": None}),
        Token("NEW", "New", 3, {}),  # says nothing: every venue's default naming
    ]
    settings = Settings(ingest={"feed_pairs": ["coinbase:NEW=NEW-USDC", "binance:BNB=-"]})
    pairs = {venue: {p.symbol: p.venue for p in ps} for venue, ps in pairs_for(settings, tokens).items()}
    assert pairs == {
        "binance": {"BTC": "BTCFDUSD", "NEW": "NEWUSDT"},
        "coinbase": {"BTC": "BTC-USD", "NEW": "NEW-USDC"},
        "kraken": {"BTC": "BTC/USD", "NEW": "NEW/USD"},
    }


async def test_publisher_and_followers_agree_on_adds_changes_and_removals() -> None:
    bus = InMemoryBus()
    other = bus.peer()  # another process's bus on the same topics
    ingest, gateway = UniverseFollower().follow(bus, "ingest-universe"), UniverseFollower()
    gateway.follow(other, "gateway-universe")
    seen: list[tuple[list[str], list[str]]] = []

    async def note(changed: list[Token], removed: list[str]) -> None:
        seen.append(([t.symbol for t in changed], removed))

    gateway.on_change(note)
    await bus.start()
    await other.start()
    publisher = UniversePublisher(bus)
    assert await publisher.publish(from_symbols(["BTC", "ETH", "SOL"])) == (3, 0)
    await bus.drain()
    assert await publisher.publish(from_symbols(["BTC", "ETH", "SOL"])) == (0, 0)  # nothing new: nothing sent
    assert await publisher.publish([*from_symbols(["BTC", "ETH"]), Token("DOGE", "Doge", 3)]) == (1, 1)
    await bus.drain()
    for follower in (ingest, gateway):
        assert follower.symbols() == ["BTC", "ETH", "DOGE"]
        assert follower.removed == {"SOL"}
    # delivered per partition, so in several calls: what the listeners heard in all
    assert sorted(s for changed, _ in seen for s in changed) == ["BTC", "DOGE", "ETH", "SOL"]
    assert [s for _, removed in seen for s in removed] == ["SOL"]
    await other.stop()
    await bus.stop()


async def test_a_removed_token_comes_back_when_added_again() -> None:
    follower = UniverseFollower()
    await follower.on_events([UniverseTokenEvent(symbol="SOL", name="Solana")])
    await follower.on_events([UniverseTokenEvent(symbol="SOL", name="Solana", deleted=True)])
    assert follower.symbols() == [] and follower.removed == {"SOL"}
    await follower.on_events([UniverseTokenEvent(symbol="SOL", name="Solana")])
    assert follower.symbols() == ["SOL"] and follower.removed == set()
    assert UNIVERSE.compacted and UniverseTokenEvent(symbol="SOL", name="S").partition_key() == "SOL"


def test_a_token_without_history_gets_a_deterministic_start_shaped_by_its_rank() -> None:
    from tokenpulse_ingest.synthetic import generated_state

    assert generated_state("ZZNEW", 500, 1.0) == generated_state("ZZNEW", 500, 1.0)  # every process, every run
    assert generated_state("ZZNEW", 500, 1.0) != generated_state("ZZOLD", 500, 1.0)
    tokens = load_file(TOP1000)
    top = [generated_state(t.symbol, t.rank, 1.0) for t in tokens[:100]]
    tail = [generated_state(t.symbol, t.rank, 1.0) for t in tokens[-100:]]
    assert all(1e-4 <= s.price <= 1e3 and 0.02 < s.daily_vol < 0.16 and s.typical_size > 0 for s in top + tail)
    assert sum(s.daily_vol for s in tail) > 2 * sum(s.daily_vol for s in top)  # small caps swing more
    assert sum(s.typical_size * s.price for s in top) > 50 * sum(s.typical_size * s.price for s in tail)
