"""The bundled history: series merging, rollups and provenance."""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import UTC, datetime

from tokenpulse_ingest.bundle import BUNDLE, Bar, iter_bundle, read_bars, rollup
from tokenpulse_shared.events import Interval
from tokenpulse_shared.settings import DEFAULT_BUNDLE


def day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def test_every_bundled_file_matches_its_manifest_checksum() -> None:
    manifest = json.loads((DEFAULT_BUNDLE / "manifest.json").read_text())
    entries = {f["path"]: f for f in manifest["files"]}
    for spec in BUNDLE:
        data = (DEFAULT_BUNDLE / spec.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entries[spec.path]["sha256"], spec.path
        assert "source" in json.dumps(entries[spec.path]).lower() or entries[spec.path].get("repo")


def test_btc_daily_history_starts_in_2011_without_gaps_or_duplicates() -> None:
    series = {(s, i): bars for s, i, bars in iter_bundle(DEFAULT_BUNDLE, ["BTC"], [Interval.D1])}
    bars = series[("BTC", Interval.D1)]
    ts = [b.ts_ms for b in bars]
    assert day(ts[0]) == "2011-01-01"
    assert ts == sorted(set(ts))
    gaps = [(day(a), day(b)) for a, b in itertools.pairwise(ts) if b - a != 86_400_000]
    assert gaps == []
    # the primary file wins where files overlap: 2017-12-17 close from Coinbase (data README)
    assert next(b for b in bars if day(b.ts_ms) == "2017-12-17").close == 19378.99
    # the partial last day of the primary file is not used
    primary_last = read_bars(DEFAULT_BUNDLE, BUNDLE[0])[-1]
    assert day(primary_last.ts_ms) == "2025-09-23"


def test_rollup_aggregates_first_open_extremes_last_close_and_summed_volume() -> None:
    bars = [
        Bar(i * 60_000, o, h, lo, c, v, "x")
        for i, (o, h, lo, c, v) in enumerate(
            [
                (10, 12, 9, 11, 1),
                (11, 15, 10, 14, 2),
                (14, 14, 8, 9, 3),
                (9, 10, 9, 10, 4),
                (10, 11, 10, 11, 5),
                (11, 13, 11, 12, 6),
            ]
        )
    ]
    out = rollup(bars, Interval.M5)
    assert [(b.ts_ms, b.open, b.high, b.low, b.close, b.volume) for b in out] == [
        (0, 10, 15, 8, 11, 15),
        (300_000, 11, 13, 11, 12, 6),
    ]


def test_btc_intraday_series_and_rollups_exist() -> None:
    got = {(s, i): len(b) for s, i, b in iter_bundle(DEFAULT_BUNDLE, ["BTC"])}
    assert got[("BTC", Interval.M1)] == 41_761
    assert got[("BTC", Interval.M5)] == 41_761 // 5 + 1
    assert got[("BTC", Interval.H1)] > 50_000
    assert got[("BTC", Interval.H4)] > 12_000
