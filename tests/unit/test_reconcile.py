"""Reconciliation of several sources into one reference price: outliers out, stale sources out,
USD/USDT normalised, stale flag set on a timer and cleared by a fresh tick."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenpulse_ingest.prices import PriceReconciler, SourceQuote, all_quiet, reconcile
from tokenpulse_shared.events import TickEvent

T0 = datetime(2026, 11, 1, tzinfo=UTC)
W0 = 1_000_000.0  # an arbitrary wall clock, so tests never depend on the real one


def tick(source: str, price: float, at_s: float = 0.0, *, size: float = 1.0, quote: str = "USD", sym: str = "BTC"):
    return TickEvent(symbol=sym, source=source, ts=T0 + timedelta(seconds=at_s), price=price, size=size, quote=quote)


prices = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None)
@given(
    base=prices,
    good=st.lists(st.floats(min_value=-0.002, max_value=0.002), min_size=2, max_size=6),
    drift=st.sampled_from([-0.05, 0.05]),
    volumes=st.lists(st.floats(min_value=0, max_value=1e9), min_size=7, max_size=7),
)
def test_one_source_drifting_5_percent_is_excluded(base, good, drift, volumes) -> None:
    quotes = {f"ex{i}": SourceQuote(base * (1 + d), 100.0, volumes[i], 100.0) for i, d in enumerate(good)}
    quotes["drifter"] = SourceQuote(base * (1 + drift), 100.0, volumes[-1], 100.0)
    ref = reconcile(quotes, 100.0)
    assert ref is not None
    assert ref.outliers == ("drifter",)
    assert "drifter" not in ref.used
    assert len(ref.used) == len(good)
    kept = [quotes[s].price_usd for s in ref.used]
    assert min(kept) <= ref.price <= max(kept)


quote_sets = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=4),
    st.tuples(prices, st.floats(min_value=0, max_value=60), st.floats(min_value=0, max_value=1e9)),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(quote_sets, st.randoms(use_true_random=False))
def test_reference_within_fresh_kept_sources_and_order_free(raw, rnd) -> None:
    now = 1000.0
    quotes = {name: SourceQuote(p, now - age, v, now - age) for name, (p, age, v) in raw.items()}
    ref = reconcile(quotes, now, stale_after_s=30.0)
    fresh = {n for n, (_, age, _) in raw.items() if age <= 30.0}
    if not fresh:
        assert ref is None
        return
    assert ref is not None
    assert set(ref.used) | set(ref.outliers) == fresh
    assert set(ref.stale_sources) == set(raw) - fresh
    kept = [quotes[n].price_usd for n in ref.used]
    assert min(kept) <= ref.price <= max(kept)
    items = list(quotes.items())
    rnd.shuffle(items)
    again = reconcile(dict(items), now, stale_after_s=30.0)
    assert again == ref  # the same price, bit for bit, whatever the order


@settings(max_examples=100, deadline=None)
@given(st.permutations(range(9)))
def test_reconciler_is_permutation_invariant_over_a_batch(order) -> None:
    batch = [
        tick("binance", 100.0, 1, size=2),
        tick("coinbase", 100.2, 2, size=1),
        tick("kraken", 99.9, 3, size=0.5),
        tick("bitstamp", 106.0, 3, size=9),
        tick("binance", 100.1, 4, size=1),
        tick("coinbase", 100.3, 4.5, size=3),
        tick("kraken", 100.0, 5, size=1),
        tick("bitstamp", 105.5, 5, size=1),
        tick("okx", 100.05, 5, size=1),
    ]
    a = PriceReconciler().update(batch, wall=W0)
    b = PriceReconciler().update([batch[i] for i in order], wall=W0)
    assert [(e.price, e.sources) for e in a] == [(e.price, e.sources) for e in b]
    assert "bitstamp" not in a[0].sources


def test_volume_and_freshness_weights_pull_toward_the_liquid_fresh_source() -> None:
    r = PriceReconciler()
    (event,) = r.update([tick("big", 100.0, 10, size=100), tick("small", 100.4, 10, size=1)], wall=W0)
    assert 100.0 < event.price < 100.2  # volume-weighted, close to the liquid source
    r2 = PriceReconciler()
    (event2,) = r2.update([tick("old", 100.0, 0, size=1), tick("new", 100.4, 25, size=1)], wall=W0)
    assert event2.price > 100.2  # equal volume: the fresher quote weighs more


def test_usdt_quotes_are_normalised_with_a_live_rate_or_the_assumption() -> None:
    r = PriceReconciler(usdt_usd_rate=1.0)
    (e,) = r.update([tick("binance", 100.0, 0, quote="USDT"), tick("coinbase", 100.0, 0)], wall=W0)
    assert e.price == 100.0  # assumption 1 USDT = 1 USD
    r.update([tick("kraken", 0.99, 1, sym="USDT"), tick("coinbase", 0.99, 1, sym="USDT")], wall=W0)
    (e,) = r.update([tick("binance", 100.0, 2, quote="USDT")], wall=W0)
    assert r.last["BTC"].used == ("binance", "coinbase")
    # binance's 100 USDT is 99 USD now: the reference moves below coinbase's 100 USD
    assert 99.0 <= e.price < 100.0
    assert r.rate("USDT", W0) == 0.99
    assert PriceReconciler(usdt_usd_rate=0.998).rate("USDT", W0) == 0.998
    bad = PriceReconciler()
    assert bad.update([tick("x", 1.0, quote="EUR")], wall=W0) == []
    assert bad.rejected_quotes == 1


def test_stale_sources_are_excluded_and_the_flag_set_by_the_timer_then_cleared() -> None:
    r = PriceReconciler(stale_after_s=30.0)
    (first,) = r.update([tick("a", 100.0, 0), tick("b", 101.0, 0)], wall=W0)
    assert first.sources == ["a", "b"] and not first.stale and first.prev_price is None
    (second,) = r.update([tick("a", 102.0, 20)], wall=W0 + 20)
    assert second.sources == ["a", "b"] and second.prev_price == first.price
    (third,) = r.update([tick("a", 103.0, 40)], wall=W0 + 40)
    assert third.sources == ["a"] and third.price == 103.0  # b is 40 s old: out
    assert r.sweep(wall=W0 + 65) == []  # a is 25 s old: still fresh
    (stale,) = r.sweep(wall=W0 + 71)  # no tick arrived, a is 31 s old
    assert stale.stale and stale.sources == [] and stale.price == 103.0 and stale.prev_price == 103.0
    assert r.is_stale("BTC")
    assert r.sweep(wall=W0 + 100) == []  # published once, not on every sweep
    (back,) = r.update([tick("b", 104.0, 101)], wall=W0 + 101)
    assert not back.stale and back.sources == ["b"] and back.prev_price == 103.0
    assert not r.is_stale("BTC")


def test_an_only_old_tick_marks_the_token_stale_not_fresh() -> None:
    r = PriceReconciler(stale_after_s=30.0)
    r.update([tick("a", 100.0, 100)], wall=W0)
    (e,) = r.update([tick("b", 90.0, 0)], wall=W0 + 60)  # b's trade is 160 s older than the clock
    assert e.stale and e.price == 100.0


def test_out_of_order_ticks_keep_the_newest_price_per_source() -> None:
    rng = random.Random(3)
    ticks = [tick("a", 100.0 + i, i) for i in range(20)]
    rng.shuffle(ticks)
    r = PriceReconciler()
    for t in ticks:
        r.update([t], wall=W0)
    assert r.last["BTC"].price == 119.0


def test_live_ticks_drop_the_synthetic_source_and_later_synthetic_ticks_are_ignored() -> None:
    rec = PriceReconciler(30.0)
    out = rec.update([tick("synthetic", 50.0, 0.0)], wall=W0)
    assert out[0].price == 50.0 and out[0].sources == ["synthetic"]
    out = rec.update([tick("binance", 100.0, 1.0)], wall=W0 + 1)  # the synthetic quote is still fresh
    assert out[0].price == 100.0 and out[0].sources == ["binance"]
    assert rec.update([tick("synthetic", 51.0, 2.0)], wall=W0 + 2) == []  # a stray synthetic batch
    assert rec.superseded == 1
    out = rec.update([tick("kraken", 100.2, 3.0)], wall=W0 + 3)
    assert out[0].sources == ["binance", "kraken"] and 100.0 <= out[0].price <= 100.2


def test_price_event_ids_are_derived_from_the_price_so_a_redelivery_gives_the_same_id() -> None:
    batch = [tick("binance", 100.0, 1), tick("coinbase", 100.2, 2), tick("kraken", 99.9, 3)]
    a, b = PriceReconciler(), PriceReconciler()  # two processes (a restart), the same ticks
    first = a.update(batch, wall=W0) + a.update([tick("binance", 101.0, 4)], wall=W0 + 4)
    second = b.update(batch, wall=W0) + b.update([tick("binance", 101.0, 4)], wall=W0 + 4)
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert len({e.event_id for e in first}) == 2  # a new price, a new id
    stale = a.sweep(wall=W0 + 3600)
    assert len(stale) == 1 and stale[0].stale and stale[0].event_id not in {e.event_id for e in first}


@settings(max_examples=200, deadline=None)
@given(
    ages=st.lists(st.floats(min_value=-5, max_value=100, allow_nan=False), max_size=5),
    stale_after_s=st.floats(min_value=0.001, max_value=60),
)
@example(ages=[30.0, 31.0], stale_after_s=30.0)  # a source exactly as old as the limit is still fresh
def test_the_timer_finds_a_token_quiet_exactly_when_reconcile_finds_no_fresh_source(
    ages: list[float], stale_after_s: float
) -> None:
    now = 1000.0
    quotes = {f"s{i}": SourceQuote(1.0, now - age, 1.0, now - age) for i, age in enumerate(ages)}
    assert all_quiet(quotes, now, stale_after_s) == (reconcile(quotes, now, stale_after_s=stale_after_s) is None)
