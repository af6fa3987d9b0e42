"""The shipped 1,000-token universe (data/universe/top1000.csv): its shape, rules and provenance."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import runpy
from pathlib import Path

from tokenpulse_shared.events import SYMBOL_PATTERN
from tokenpulse_shared.settings import DEFAULT_BUNDLE

FILE = DEFAULT_BUNDLE / "universe" / "top1000.csv"
SCRIPT = DEFAULT_BUNDLE.parent / "scripts" / "make_universe.py"
PAIR = {
    "binance": re.compile(r"^[A-Z0-9]+USDT$"),
    "coinbase": re.compile(r"^[A-Z0-9]+-USD$"),
    "kraken": re.compile(r"^[A-Z0-9]+/USD$"),
}


def rows() -> list[dict[str, str]]:
    with FILE.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["symbol", "name", "binance", "coinbase", "kraken"]
        return list(reader)


def test_a_thousand_unique_valid_symbols_with_unique_well_formed_pairs_per_venue() -> None:
    universe = rows()
    assert len(universe) == 1000
    symbols = [r["symbol"] for r in universe]
    assert len(set(symbols)) == 1000
    assert [s for s in symbols if not re.fullmatch(SYMBOL_PATTERN, s)] == []
    assert all(r["name"].strip() for r in universe)
    for venue, shape in PAIR.items():
        pairs = [r[venue] for r in universe if r[venue]]
        assert len(pairs) == len(set(pairs)), venue
        assert [p for p in pairs if not shape.fullmatch(p)] == [], venue


def test_the_well_known_tokens_come_first_with_their_venue_spellings() -> None:
    universe = rows()
    assert [r["symbol"] for r in universe[:2]] == ["BTC", "ETH"]
    btc = universe[0]
    assert (btc["binance"], btc["coinbase"], btc["kraken"]) == ("BTCUSDT", "BTC-USD", "XBT/USD")
    bnb = next(r for r in universe if r["symbol"] == "BNB")
    assert (bnb["binance"], bnb["coinbase"], bnb["kraken"]) == ("BNBUSDT", "", "")
    # the tokens the platform tracks by default are all in the hand-written head
    head = {r["symbol"] for r in universe[:50]}
    assert {"BTC", "ETH", "BNB", "XRP", "ADA", "DOGE", "SOL", "LTC"} <= head


def test_generated_rows_are_marked_and_come_after_the_hand_written_ones_with_fewer_listings() -> None:
    universe = rows()
    generated = [i for i, r in enumerate(universe) if r["name"].endswith("(generated)")]
    assert generated == list(range(generated[0], 1000))  # one block, at the end
    assert 150 <= generated[0] <= 400

    def listed(block: list[dict[str, str]]) -> float:
        return sum(bool(r[v]) for r in block for v in PAIR) / len(block)

    assert listed(universe[:100]) > listed(universe[300:500]) > listed(universe[800:])


def test_the_file_is_what_its_script_writes_and_the_manifest_pins_it() -> None:
    script = runpy.run_path(str(SCRIPT))
    assert FILE.read_text() == script["render"](script["universe"]())
    manifest = json.loads((DEFAULT_BUNDLE / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == "universe/top1000.csv")
    assert entry["sha256"] == hashlib.sha256(FILE.read_bytes()).hexdigest()
    assert entry["rows"] == 1000 and entry["source"]["path"] == "scripts/make_universe.py"
    assert "hand" in entry["source"]["repository"] and "generated" in entry["source"]["repository"]


def test_data_readme_states_the_provenance() -> None:
    text = " ".join(Path(DEFAULT_BUNDLE / "README.md").read_text().split())
    assert "universe/top1000.csv" in text and "general knowledge" in text and "generated" in text
