"""Halving cycles measured on the bundled real history: pinned facts, no look-ahead, the projection formula."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from tokenpulse_gateway.analytics.cycles import (
    CycleData,
    CycleInputError,
    CycleParams,
    load_halvings,
    report,
)
from tokenpulse_shared.settings import DEFAULT_BUNDLE

from tokenpulse.cycles_cli import load_cycle_data

HALVINGS = load_halvings(DEFAULT_BUNDLE / "btc_cycles.json")


@pytest.fixture(scope="module")
def data() -> CycleData:
    return load_cycle_data(DEFAULT_BUNDLE)


def test_halving_dates_and_heights_are_the_public_facts() -> None:
    assert [(h.date.isoformat(), h.height) for h in HALVINGS] == [
        ("2012-11-28", 210_000),
        ("2016-07-09", 420_000),
        ("2020-05-11", 630_000),
        ("2024-04-20", 840_000),
    ]


def test_past_runs_match_the_bundled_history(data: CycleData) -> None:
    runs = {r.number: r for r in report(HALVINGS, data, CycleParams()).halvings}
    # over 90x after 2012, about 30x after 2016 (product brief), peaks as in data/README.md
    assert runs[1].peak_date == date(2013, 12, 4) and runs[1].multiple > 90
    assert runs[2].peak_date == date(2017, 12, 16) and 29 < runs[2].multiple < 31
    assert runs[3].peak_date == date(2021, 11, 8) and runs[3].peak_price == 67554.84
    assert runs[1].price == 12.22 and runs[2].price == 657.61
    assert all(runs[i].confirmed for i in (1, 2, 3))
    assert not runs[4].confirmed  # BTC has not fallen 75% from its 2025 high in the bundled data
    # the runs get longer
    assert runs[1].days_to_peak < runs[2].days_to_peak < runs[3].days_to_peak  # type: ignore[operator]
    assert runs[3].bottom_date == date(2018, 12, 15)  # the 2018 bottom from data/README.md


def test_a_peak_is_not_known_before_the_fall_that_confirms_it(data: CycleData) -> None:
    mid_2021 = report(HALVINGS, data, CycleParams(as_of=date(2021, 6, 1))).halvings[2]
    assert mid_2021.peak_date == date(2021, 4, 13) and not mid_2021.confirmed


def test_nothing_after_as_of_changes_the_report(data: CycleData) -> None:
    as_of = date(2022, 6, 30)
    base = report(HALVINGS, data, CycleParams(as_of=as_of))
    future_changed = CycleData(
        btc=[(d, v * (10 if d > as_of else 1)) for d, v in data.btc],
        total_market_cap=[(d, v * (10 if d > as_of else 1)) for d, v in data.total_market_cap],
        altcoins={s: [(d, v * (10 if d > as_of else 1)) for d, v in pts] for s, pts in data.altcoins.items()},
    )
    changed = report(HALVINGS, future_changed, CycleParams(as_of=as_of))
    assert changed.halvings == base.halvings and changed.projection == base.projection
    assert changed.altcoin_season == base.altcoin_season


def test_the_projection_follows_its_formula(data: CycleData) -> None:
    rep = report(HALVINGS, data, CycleParams())
    prev = rep.halvings[2]
    proj = rep.projection
    assert proj is not None and proj.previous_run == 3 and proj.start == date(2024, 4, 20)
    assert proj.previous_length_days == prev.days_to_peak and proj.previous_roi == prev.multiple
    by_name = {s.name: s for s in proj.scenarios}
    for name, (length, reduction) in {"bear": (1.15, 2.5), "base": (1.25, 2.0), "moon": (1.4, 1.5)}.items():
        s = by_name[name]
        assert s.end_date == proj.start + timedelta(days=round(prev.days_to_peak * length))  # type: ignore[operator]
        assert s.btc_price_target == pytest.approx(proj.start_price * prev.multiple / reduction, rel=1e-6)  # type: ignore[operator]
        assert s.total_market_cap_target == pytest.approx(
            proj.start_market_cap * proj.previous_market_roi / reduction, rel=1e-6
        )  # type: ignore[operator]


def test_overrides_are_used_and_echoed(data: CycleData) -> None:
    params = CycleParams(previous_length_days=500, previous_roi=4.0, start_price=50_000, scenarios={"base": (2.0, 4.0)})
    rep = report(HALVINGS, data, params)
    assert rep.parameters.previous_length_days == 500 and rep.parameters.scenarios == {"base": (2.0, 4.0)}
    (base,) = rep.projection.scenarios  # type: ignore[union-attr]
    assert base.length_days == 1000 and base.btc_price_target == 50_000.0
    assert base.end_date == date(2024, 4, 20) + timedelta(days=1000)


def test_track_record_compares_each_halving_day_projection_with_what_happened(data: CycleData) -> None:
    rec = {t.run: t for t in report(HALVINGS, data, CycleParams()).track_record}
    assert set(rec) == {2, 3, 4}
    # made on 2020-05-11 from the 2016 run: 525 days x 1.25 -> 2022-02-26, vs the real 2021-11-08 peak
    base3 = next(s for s in rec[3].scenarios if s.name == "base")
    assert base3.end_date == date(2022, 2, 26) and base3.days_error == (date(2022, 2, 26) - date(2021, 11, 8)).days
    assert base3.price_error_pct == pytest.approx((base3.btc_price_target / 67554.84 - 1) * 100, abs=0.01)


def test_altcoin_seasons_cover_what_the_bundle_has(data: CycleData) -> None:
    seasons = {a.run: a for a in report(HALVINGS, data, CycleParams()).altcoin_season}
    run3 = {x.symbol: x for x in seasons[3].altcoins}
    assert run3["DOGE"].outperformed_btc and run3["DOGE"].relative_to_btc > 5
    assert "SOL" in seasons[3].not_covered  # listed on Binance in Aug 2020, after the halving
    assert [x.symbol for x in seasons[2].altcoins] == ["ETH"]


@pytest.mark.parametrize(
    "params",
    [
        CycleParams(as_of=date(2010, 1, 1)),
        CycleParams(start=date(2030, 1, 1)),
        CycleParams(scenarios={"bear": (-1.0, 2.0)}),
        # past any date Python or the store can hold: refused before the date arithmetic would overflow
        CycleParams(previous_length_days=20000, scenarios={"bear": (1000.0, 2.5)}),
        CycleParams(previous_length_days=500, scenarios={"bear": (1e6, 2.5)}),
        CycleParams(scenarios={"base": (1.25, 1e-300)}),
        CycleParams(scenarios={"base": (float("nan"), 2.0)}),
        # products that overflow a float, should a caller bypass the field bounds
        CycleParams.model_construct(**{**CycleParams().model_dump(), "start_price": 1e308, "previous_roi": 1e10}),
    ],
)
def test_inconsistent_parameters_are_refused_with_a_reason(data: CycleData, params: CycleParams) -> None:
    with pytest.raises(CycleInputError):
        report(HALVINGS, data, params)
