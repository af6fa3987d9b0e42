"""Bitcoin halving cycles: past runs measured from daily history, the current run projected.

A pure model (no I/O) used by the gateway (``GET /v1/cycles/btc``) and the CLI
(``tokenpulse cycles``). Definitions (docs/cycles.md explains them):

* **run**: from a start (the halving day, or with ``basis="bottom"`` the lowest close
  between the previous cycle's peak and the halving) to the **peak**, found walking
  forward day by day from the halving with no look-ahead: the running highest close
  (candidates only before the next halving) becomes the cycle peak, **confirmed**, on the
  first later close at least ``confirm_drawdown`` (default 75%) below it. Until then the
  peak is provisional: the run may still be going. 75% separates BTC's cycle bear
  markets (-77% to -86%) from its mid-cycle crashes (-70% in April 2013, -53% in 2021);
  it is chosen on the same history, so it is a description, not a forecast.
* **multiple / ROI**: peak close / start close. **Days to peak**: calendar days.
* **projection** of the current run (started by the last halving on or before as-of) from
  the previous *confirmed* run: ``end = start + previous_length x length_multiplier``,
  ``btc_target = start_price x previous_roi / roi_reduction`` and
  ``total_market_cap_target = start_market_cap x previous_market_roi / roi_reduction``,
  where the market ROI is the total crypto market cap's multiple over the previous run.
* **no look-ahead**: with ``as_of`` every series is cut at that day before anything is
  measured; the track record compares such projections with what the full history shows.
* **bounds**: every input is bounded (``CycleParams`` and the ``MAX_*`` limits) and a projection
  must end by ``LAST_DAY`` with finite targets, so no input overflows a date or a float: what
  does not fit is a :class:`CycleInputError`.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

Series = list[tuple[date, float]]
Basis = Literal["halving", "bottom"]
Day = date  # models below have a field named `date`

FIRST_DAY = date(2009, 1, 3)
"""Bitcoin's first block: no date before it means anything here"""
LAST_DAY = date(2299, 12, 31)
"""a projection ends by this day (the store's dates end there; Python's at 9999)"""
MAX_PRICE = 1e9
MAX_MARKET_CAP = 1e16
MAX_ROI = 1000.0
MAX_LENGTH_DAYS = 20000
MAX_LENGTH_MULTIPLIER = 1000.0
MIN_ROI_REDUCTION, MAX_ROI_REDUCTION = 0.001, 1000.0

DEFAULT_SCENARIOS: dict[str, tuple[float, float]] = {
    "bear": (1.15, 2.5),
    "base": (1.25, 2.0),
    "moon": (1.40, 1.5),
}


@dataclass(frozen=True)
class Halving:
    number: int
    date: date
    height: int


def load_halvings(path: Path) -> list[Halving]:
    """Halving dates and block heights from the bundled ``btc_cycles.json`` (public facts)."""
    doc = json.loads(path.read_text())
    return [Halving(h["number"], date.fromisoformat(h["date"]), h["block_height"]) for h in doc["halvings"]]


class HalvingRun(BaseModel):
    number: int
    date: Day
    height: int
    price: float | None = Field(description="BTC close on the halving day")
    peak_date: Day | None
    peak_price: float | None
    multiple: float | None = Field(description="peak close / halving-day close")
    days_to_peak: int | None
    confirmed: bool = Field(description="a later close fell confirm_drawdown below the peak")
    bottom_date: Day | None = Field(description="lowest close between the previous peak and this halving")
    bottom_price: float | None
    bottom_to_peak_days: int | None
    bottom_to_peak_multiple: float | None
    market_cap_at_halving: float | None = Field(description="total crypto market cap on the halving day")
    peak_market_cap: float | None = Field(description="highest total crypto market cap in the window")
    peak_market_cap_date: Day | None
    market_multiple: float | None = Field(description="peak total market cap / total market cap at the start")
    window_end: Day = Field(description="next halving, or the as-of date: where the peak search stops")


class Scenario(BaseModel):
    name: str
    length_multiplier: float
    roi_reduction: float
    length_days: int
    roi: float
    end_date: Day
    btc_price_target: float
    total_market_cap_target: float | None


class Projection(BaseModel):
    start: Day
    basis: Basis
    start_price: float
    start_market_cap: float | None
    previous_run: int = Field(description="number of the halving whose run is the reference")
    previous_length_days: int
    previous_roi: float
    previous_market_roi: float | None
    scenarios: list[Scenario]


class ScenarioOutcome(BaseModel):
    name: str
    end_date: Day
    btc_price_target: float
    total_market_cap_target: float | None
    days_error: int = Field(description="projected end date minus the actual peak date, days")
    price_error_pct: float = Field(description="(target / actual peak close - 1) x 100")
    market_cap_error_pct: float | None


class TrackRecord(BaseModel):
    made_at: Day = Field(description="the projection uses only data up to this day")
    run: int
    actual_peak_date: Day
    actual_peak_price: float
    actual_peak_market_cap: float | None
    actual_peak_confirmed: bool
    scenarios: list[ScenarioOutcome]


class AltcoinRun(BaseModel):
    symbol: str
    multiple: float = Field(description="close on the BTC peak day / close on the halving day")
    relative_to_btc: float = Field(description="altcoin multiple / BTC multiple over the same days")
    outperformed_btc: bool


class AltcoinSeason(BaseModel):
    run: int
    start: Day
    end: Day
    btc_multiple: float
    altcoins: list[AltcoinRun]
    not_covered: list[str] = Field(description="bundled altcoins without prices on both days")


class CycleParams(BaseModel):
    as_of: Day | None = Field(None, ge=FIRST_DAY, le=LAST_DAY)
    basis: Basis = "halving"
    confirm_drawdown: float = Field(0.75, gt=0, lt=1)
    start: Day | None = Field(None, ge=FIRST_DAY, le=LAST_DAY)
    start_price: float | None = Field(None, gt=0, le=MAX_PRICE)
    start_market_cap: float | None = Field(None, gt=0, le=MAX_MARKET_CAP)
    previous_length_days: int | None = Field(None, gt=0, le=MAX_LENGTH_DAYS)
    previous_roi: float | None = Field(None, gt=0, le=MAX_ROI)
    previous_market_roi: float | None = Field(None, gt=0, le=MAX_ROI)
    scenarios: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(DEFAULT_SCENARIOS))


class CycleReport(BaseModel):
    as_of: Day
    parameters: CycleParams
    halvings: list[HalvingRun]
    projection: Projection | None
    track_record: list[TrackRecord]
    altcoin_season: list[AltcoinSeason]
    notes: list[str] = Field(default_factory=list)


class CycleInputError(ValueError):
    """Parameters that contradict each other or the data (the API answers 400)."""


@dataclass
class _Daily:
    days: list[date]
    values: list[float]

    @classmethod
    def of(cls, series: Series, as_of: date | None = None) -> _Daily:
        pts = sorted(p for p in series if as_of is None or p[0] <= as_of)
        return cls([d for d, _ in pts], [v for _, v in pts])

    def at(self, day: date, tolerance_days: int = 7) -> float | None:
        """Value on ``day``, or the last one before it within the tolerance."""
        i = bisect.bisect_right(self.days, day) - 1
        if i >= 0 and (day - self.days[i]).days <= tolerance_days:
            return self.values[i]
        return None

    def window(self, start: date, end: date) -> tuple[list[date], list[float]]:
        lo, hi = bisect.bisect_left(self.days, start), bisect.bisect_right(self.days, end)
        return self.days[lo:hi], self.values[lo:hi]

    @property
    def last(self) -> date | None:
        return self.days[-1] if self.days else None


@dataclass
class CycleData:
    btc: Series
    total_market_cap: Series = field(default_factory=list)
    altcoins: dict[str, Series] = field(default_factory=dict)


def _argmax(days: list[date], values: list[float]) -> tuple[date, float] | None:
    if not values:
        return None
    i = max(range(len(values)), key=values.__getitem__)
    return days[i], values[i]


def _argmin(days: list[date], values: list[float]) -> tuple[date, float] | None:
    if not values:
        return None
    i = min(range(len(values)), key=values.__getitem__)
    return days[i], values[i]


def _walk_to_peak(
    days: list[date], values: list[float], last_candidate: date, drawdown: float
) -> tuple[tuple[date, float] | None, bool]:
    """Running maximum (candidates up to ``last_candidate``) until a close falls ``drawdown`` below it."""
    peak: tuple[date, float] | None = None
    for day, close in zip(days, values, strict=True):
        if day <= last_candidate and (peak is None or close > peak[1]):
            peak = (day, close)
        elif peak is not None and close <= peak[1] * (1 - drawdown):
            return peak, True
    return peak, False


def measure(halvings: list[Halving], data: CycleData, as_of: date, confirm_drawdown: float) -> list[HalvingRun]:
    btc = _Daily.of(data.btc, as_of)
    cap = _Daily.of(data.total_market_cap, as_of)
    runs: list[HalvingRun] = []
    previous_peak: date | None = None
    for i, h in enumerate(halvings):
        if h.date > as_of:
            break
        next_date = halvings[i + 1].date if i + 1 < len(halvings) else None
        window_end = min(next_date - timedelta(days=1), as_of) if next_date else as_of
        price = btc.at(h.date, tolerance_days=1)
        peak, confirmed = _walk_to_peak(*btc.window(h.date, as_of), window_end, confirm_drawdown)
        if previous_peak is None:  # the first halving: the highest close before it ends the previous cycle
            before = _argmax(*btc.window(date.min, h.date))
            previous_peak = before[0] if before else h.date
        bottom = _argmin(*btc.window(previous_peak, h.date))
        cap_start = cap.at(h.date)
        cap_peak = _argmax(*cap.window(h.date, window_end))
        runs.append(
            HalvingRun(
                number=h.number,
                date=h.date,
                height=h.height,
                price=price,
                peak_date=peak[0] if peak else None,
                peak_price=peak[1] if peak else None,
                multiple=round(peak[1] / price, 4) if peak and price else None,
                days_to_peak=(peak[0] - h.date).days if peak else None,
                confirmed=confirmed,
                bottom_date=bottom[0] if bottom else None,
                bottom_price=bottom[1] if bottom else None,
                bottom_to_peak_days=(peak[0] - bottom[0]).days if peak and bottom else None,
                bottom_to_peak_multiple=round(peak[1] / bottom[1], 4) if peak and bottom else None,
                market_cap_at_halving=cap_start,
                peak_market_cap=cap_peak[1] if cap_peak else None,
                peak_market_cap_date=cap_peak[0] if cap_peak else None,
                market_multiple=round(cap_peak[1] / cap_start, 4) if cap_peak and cap_start else None,
                window_end=window_end,
            )
        )
        previous_peak = peak[0] if peak else previous_peak
    return runs


def project(runs: list[HalvingRun], data: CycleData, params: CycleParams, as_of: date) -> Projection | None:
    """Project the current run from the previous confirmed one; None when history has no such pair."""
    if not runs:
        return None
    current = runs[-1]
    previous = next((r for r in reversed(runs[:-1]) if r.confirmed and r.peak_date), None)
    if previous is None and params.previous_length_days is None:
        return None
    btc = _Daily.of(data.btc, as_of)
    cap = _Daily.of(data.total_market_cap, as_of)
    if params.basis == "bottom":
        start = params.start or current.bottom_date or current.date
        prev_len = previous.bottom_to_peak_days if previous else None
        prev_roi = previous.bottom_to_peak_multiple if previous else None
        prev_cap_start = cap.at(previous.bottom_date) if previous and previous.bottom_date else None
    else:
        start = params.start or current.date
        prev_len = previous.days_to_peak if previous else None
        prev_roi = previous.multiple if previous else None
        prev_cap_start = previous.market_cap_at_halving if previous else None
    if start > as_of:
        raise CycleInputError(f"start {start} is after the as-of date {as_of}")
    prev_len = params.previous_length_days or prev_len
    prev_roi = params.previous_roi or prev_roi
    if prev_len is None or prev_roi is None:
        raise CycleInputError("the previous run cannot be measured: give previous_length_days and previous_roi")
    prev_market_roi = params.previous_market_roi
    if prev_market_roi is None and previous and previous.peak_market_cap and prev_cap_start:
        prev_market_roi = round(previous.peak_market_cap / prev_cap_start, 4)
    start_price = params.start_price or btc.at(start, tolerance_days=1)
    if start_price is None:
        raise CycleInputError(f"no BTC close on {start}: give start_price")
    start_cap = params.start_market_cap or cap.at(start)
    scenarios = []
    for name, (length_mult, reduction) in params.scenarios.items():
        length = round(prev_len * length_mult)
        if length > (LAST_DAY - start).days:  # checked before the date arithmetic, which would overflow
            raise CycleInputError(f"scenario {name}: the projected end is after {LAST_DAY}; shorten the run")
        roi = prev_roi / reduction
        cap_target = start_cap * prev_market_roi / reduction if start_cap and prev_market_roi else None
        scenarios.append(
            Scenario(
                name=name,
                length_multiplier=length_mult,
                roi_reduction=reduction,
                length_days=length,
                roi=round(roi, 4),
                end_date=start + timedelta(days=length),
                btc_price_target=round(_finite(start_price * roi, name), 2),
                total_market_cap_target=None if cap_target is None else round(_finite(cap_target, name), 0),
            )
        )
    return Projection(
        start=start,
        basis=params.basis,
        start_price=start_price,
        start_market_cap=start_cap,
        previous_run=previous.number if previous else current.number - 1,
        previous_length_days=prev_len,
        previous_roi=prev_roi,
        previous_market_roi=prev_market_roi,
        scenarios=scenarios,
    )


def _finite(value: float, scenario: str) -> float:
    if not math.isfinite(value):
        raise CycleInputError(f"scenario {scenario}: the target overflows; use smaller prices or multiples")
    return value


def track_record(halvings: list[Halving], data: CycleData, params: CycleParams, today: date) -> list[TrackRecord]:
    """For every run whose peak the full history shows, the projection made on its halving day."""
    full = {r.number: r for r in measure(halvings, data, today, params.confirm_drawdown)}
    out: list[TrackRecord] = []
    for h in halvings:
        actual = full.get(h.number)
        if actual is None or actual.peak_date is None or actual.peak_price is None or h.date > today:
            continue
        at_params = params.model_copy(
            update={
                "as_of": h.date,
                "start": None,
                "start_price": None,
                "start_market_cap": None,
                "previous_length_days": None,
                "previous_roi": None,
                "previous_market_roi": None,
            }
        )
        runs = measure(halvings, data, h.date, params.confirm_drawdown)
        try:
            proj = project(runs, data, at_params, h.date)
        except CycleInputError:
            proj = None
        if proj is None:
            continue
        outcomes = []
        for s in proj.scenarios:
            cap_err = None
            if s.total_market_cap_target and actual.peak_market_cap:
                cap_err = round((s.total_market_cap_target / actual.peak_market_cap - 1) * 100, 2)
            outcomes.append(
                ScenarioOutcome(
                    name=s.name,
                    end_date=s.end_date,
                    btc_price_target=s.btc_price_target,
                    total_market_cap_target=s.total_market_cap_target,
                    days_error=(s.end_date - actual.peak_date).days,
                    price_error_pct=round((s.btc_price_target / actual.peak_price - 1) * 100, 2),
                    market_cap_error_pct=cap_err,
                )
            )
        out.append(
            TrackRecord(
                made_at=h.date,
                run=h.number,
                actual_peak_date=actual.peak_date,
                actual_peak_price=actual.peak_price,
                actual_peak_market_cap=actual.peak_market_cap,
                actual_peak_confirmed=actual.confirmed,
                scenarios=outcomes,
            )
        )
    return out


def altcoin_season(runs: list[HalvingRun], data: CycleData, as_of: date) -> list[AltcoinSeason]:
    out: list[AltcoinSeason] = []
    for run in runs:
        if not run.peak_date or not run.price or not run.multiple:
            continue
        alts, missing = [], []
        for symbol, series in sorted(data.altcoins.items()):
            daily = _Daily.of(series, as_of)
            start, end = daily.at(run.date, tolerance_days=1), daily.at(run.peak_date, tolerance_days=1)
            if start is None or end is None:
                missing.append(symbol)
                continue
            multiple = end / start
            relative = multiple / run.multiple
            alts.append(
                AltcoinRun(
                    symbol=symbol,
                    multiple=round(multiple, 4),
                    relative_to_btc=round(relative, 4),
                    outperformed_btc=relative > 1,
                )
            )
        alts.sort(key=lambda a: -a.relative_to_btc)
        out.append(
            AltcoinSeason(
                run=run.number,
                start=run.date,
                end=run.peak_date,
                btc_multiple=run.multiple,
                altcoins=alts,
                not_covered=missing,
            )
        )
    return out


def report(halvings: list[Halving], data: CycleData, params: CycleParams) -> CycleReport:
    last = max((d for d, _ in data.btc), default=None)
    if last is None:
        raise CycleInputError("no BTC daily history")
    as_of = params.as_of or last
    if as_of < halvings[0].date:
        raise CycleInputError(f"as_of must be on or after the first halving ({halvings[0].date})")
    as_of = min(as_of, last)
    for name, (length_mult, reduction) in params.scenarios.items():
        if not 0 < length_mult <= MAX_LENGTH_MULTIPLIER:
            raise CycleInputError(f"scenario {name}: the length multiplier must be in (0, {MAX_LENGTH_MULTIPLIER:g}]")
        if not MIN_ROI_REDUCTION <= reduction <= MAX_ROI_REDUCTION:
            raise CycleInputError(
                f"scenario {name}: the ROI reduction must be in [{MIN_ROI_REDUCTION:g}, {MAX_ROI_REDUCTION:g}]"
            )
    runs = measure(halvings, data, as_of, params.confirm_drawdown)
    notes = []
    cap_last = max((d for d, _ in data.total_market_cap), default=None)
    if cap_last and cap_last < as_of:
        notes.append(f"total market cap history ends {cap_last}: market-cap peaks after it are not known")
    return CycleReport(
        as_of=as_of,
        parameters=params.model_copy(update={"as_of": as_of}),
        halvings=runs,
        projection=project(runs, data, params, as_of),
        track_record=track_record(halvings, data, params, as_of),
        altcoin_season=altcoin_season(runs, data, as_of),
        notes=notes,
    )
