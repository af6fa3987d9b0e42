"""Price ↔ market-cap scenarios of a token: what a price implies, and what a total market cap implies.

Circulating supply comes from the market-cap data: the latest snapshot's market cap divided by the price it was
taken at (:meth:`MarketData.supply_at`), held constant. The total crypto market cap is its latest snapshot on
or before the token's latest close; when that snapshot is older than the close, ``notes`` says so.

* a **price target** p: market cap = p x supply; its share of today's total market cap; multiple = p / price;
* a **cycle scenario** (the halving-cycle projection's total-market-cap target T, docs/cycles.md): the token
  keeps today's share of the total, so its market cap = share x T and its price = share x T / supply;
* the **reverse** (``price``): the market cap it needs, the total market cap that needs at today's share, and
  the share of today's total it would be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

from pydantic import BaseModel, Field

from tokenpulse_gateway.analytics.series import SNAPSHOT_MAX_AGE_DAYS, MarketData

DEFAULT_MULTIPLES = (0.5, 2.0, 5.0, 10.0)
MAX_TARGETS = 20


class NoMarketCap(ValueError):
    """The token has no market-cap data, so no supply (the API answers 422)."""


class Today(BaseModel):
    as_of: date
    price: float
    circulating_supply: float = Field(description="market cap / price of the latest market-cap snapshot")
    supply_as_of: date = Field(description="day of that snapshot")
    market_cap: float
    total_market_cap: float | None
    total_market_cap_date: date | None
    share_of_total: float | None = Field(description="market cap / total market cap")


class PriceScenario(BaseModel):
    price: float
    market_cap: float
    share_of_total: float | None = Field(description="of today's total crypto market cap")
    multiple: float = Field(description="price / today's price")


class CycleScenario(BaseModel):
    name: str
    end_date: date
    total_market_cap_target: float
    market_cap: float = Field(description="today's share x the target")
    price: float
    multiple: float = Field(description="of today's price")


class Requirement(BaseModel):
    price: float
    market_cap: float
    multiple: float
    total_market_cap_at_current_share: float | None = Field(description="total market cap at today's share")
    share_of_current_total: float | None = Field(description="the share of today's total it would be")


class Scenarios(BaseModel):
    symbol: str
    today: Today
    scenarios: list[PriceScenario]
    cycle: list[CycleScenario]
    requirement: Requirement | None
    notes: list[str]


@dataclass(frozen=True)
class CycleTarget:
    name: str
    end_date: date
    total_market_cap: float


def today_of(data: MarketData, symbol: str) -> Today:
    closes = data.daily.get(symbol)
    day = closes.last if closes else None
    supply = data.supply_at(symbol, day) if day else None
    if closes is None or day is None or supply is None:
        raise NoMarketCap(f"{symbol} has no market-cap data, so no circulating supply: scenarios need one")
    caps = data.daily_caps[symbol]
    price = closes.values[-1]
    i = data.daily_total.index_at(day)
    total = None if i is None else data.daily_total.values[i]
    return Today(
        as_of=day,
        price=price,
        circulating_supply=supply,
        supply_as_of=caps.days[caps.index_at(day) or 0],
        market_cap=price * supply,
        total_market_cap=total,
        total_market_cap_date=None if i is None else data.daily_total.days[i],
        share_of_total=price * supply / total if total else None,
    )


def default_targets(price: float) -> list[float]:
    """Today's price x 0.5, 2, 5 and 10, rounded to two significant digits."""
    return [_round2(price * m) for m in DEFAULT_MULTIPLES]


def _round2(x: float) -> float:
    return round(x, 1 - math.floor(math.log10(x)))


def price_scenario(today: Today, price: float) -> PriceScenario:
    cap = price * today.circulating_supply
    share = cap / today.total_market_cap if today.total_market_cap else None
    return PriceScenario(price=price, market_cap=cap, share_of_total=share, multiple=price / today.price)


def cycle_scenario(today: Today, target: CycleTarget) -> CycleScenario | None:
    if today.share_of_total is None:
        return None
    cap = today.share_of_total * target.total_market_cap
    price = cap / today.circulating_supply
    return CycleScenario(
        name=target.name,
        end_date=target.end_date,
        total_market_cap_target=target.total_market_cap,
        market_cap=cap,
        price=price,
        multiple=price / today.price,
    )


def requirement(today: Today, price: float) -> Requirement:
    cap = price * today.circulating_supply
    return Requirement(
        price=price,
        market_cap=cap,
        multiple=price / today.price,
        total_market_cap_at_current_share=cap / today.share_of_total if today.share_of_total else None,
        share_of_current_total=cap / today.total_market_cap if today.total_market_cap else None,
    )


def scenarios(
    data: MarketData, symbol: str, targets: list[float] | None, cycle: list[CycleTarget], price: float | None
) -> Scenarios:
    today = today_of(data, symbol)
    notes = [
        f"circulating supply = market cap / price of the {today.supply_as_of} snapshot, held constant since",
    ]
    if today.total_market_cap_date is None:
        notes.append("no total crypto market cap is known: shares are null")
    elif (today.as_of - today.total_market_cap_date).days > SNAPSHOT_MAX_AGE_DAYS:
        notes.append(
            f"the total crypto market cap is the {today.total_market_cap_date} snapshot, older than the price "
            f"({today.as_of}): shares compare today's market cap with that total"
        )
    return Scenarios(
        symbol=symbol,
        today=today,
        scenarios=[price_scenario(today, p) for p in targets or default_targets(today.price)],
        cycle=[c for t in cycle if (c := cycle_scenario(today, t)) is not None],
        requirement=None if price is None else requirement(today, price),
        notes=notes,
    )
