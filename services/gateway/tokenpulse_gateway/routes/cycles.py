"""``GET /v1/cycles/btc``: halving runs, the current run's projection, its track record, altcoin seasons.

The model lives in ``tokenpulse_gateway.analytics.cycles``; this route feeds it the stored daily history (so
it follows new daily candles) and the query's overrides, and keeps the default answer until the daily data
changes.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, ValidationError

from tokenpulse_gateway.analytics.cycles import (
    DEFAULT_SCENARIOS,
    MAX_LENGTH_DAYS,
    MAX_LENGTH_MULTIPLIER,
    MAX_MARKET_CAP,
    MAX_PRICE,
    MAX_ROI,
    MAX_ROI_REDUCTION,
    MIN_ROI_REDUCTION,
    CycleData,
    CycleInputError,
    CycleParams,
    Halving,
    report,
)
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.caches import CycleHistory
from tokenpulse_gateway.deps import Authed, CachesDep, HalvingsDep, QueriesDep
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.examples import responses
from tokenpulse_gateway.queries.analytics import AnalyticsQueries

router = APIRouter(route_class=JsonBodyRoute, tags=["cycles"])

Roi = Annotated[float | None, Field(gt=0, le=MAX_ROI)]
LengthMultiplier = Annotated[float | None, Field(gt=0, le=MAX_LENGTH_MULTIPLIER)]
RoiReduction = Annotated[float | None, Field(ge=MIN_ROI_REDUCTION, le=MAX_ROI_REDUCTION)]


class CycleQuery(BaseModel):
    """The query: the model's parameters and each scenario's overrides. The model's bounds
    (``tokenpulse_gateway.analytics.cycles``) are stated here too, so the OpenAPI document shows them."""

    as_of: date | None = Field(None, description="measure and project with data up to this day only")
    basis: Literal["halving", "bottom"] = Field(
        "halving", description="a run starts at the halving or at the cycle bottom"
    )
    confirm_drawdown: float = Field(0.75, gt=0, lt=1, description="fall from the high that confirms a cycle peak")
    start: date | None = Field(None, description="start of the current run (default: last halving)")
    start_price: float | None = Field(None, gt=0, le=MAX_PRICE)
    start_market_cap: float | None = Field(None, gt=0, le=MAX_MARKET_CAP)
    previous_length_days: int | None = Field(None, gt=0, le=MAX_LENGTH_DAYS)
    previous_roi: Roi = None
    previous_market_roi: Roi = None
    bear_length_multiplier: LengthMultiplier = None
    bear_roi_reduction: RoiReduction = None
    base_length_multiplier: LengthMultiplier = None
    base_roi_reduction: RoiReduction = None
    moon_length_multiplier: LengthMultiplier = None
    moon_roi_reduction: RoiReduction = None
    scenario: list[str] | None = Field(None, description="only these scenarios (bear, base, moon)")

    def scenarios(self) -> dict[str, tuple[float, float]]:
        """The scenarios asked for (default all), each with its overrides over the defaults; a 400 for unknown ones."""
        names = self.scenario or list(DEFAULT_SCENARIOS)
        unknown = sorted(set(names) - set(DEFAULT_SCENARIOS))
        if unknown:
            raise ApiError(400, "unknown_scenario", f"unknown scenario {', '.join(unknown)}; use bear, base or moon")
        overrides = {
            "bear": (self.bear_length_multiplier, self.bear_roi_reduction),
            "base": (self.base_length_multiplier, self.base_roi_reduction),
            "moon": (self.moon_length_multiplier, self.moon_roi_reduction),
        }
        return {
            name: (overrides[name][0] or default[0], overrides[name][1] or default[1])
            for name, default in DEFAULT_SCENARIOS.items()
            if name in names
        }

    def params(self) -> CycleParams:
        """The model's parameters, or a 400 for bounds the query does not state (the dates' range)."""
        scenarios = self.scenarios()
        try:
            return CycleParams(scenarios=scenarios, **{k: v for k, v in self if k in CycleParams.model_fields})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ApiError(400, "invalid_parameters", f"{err['loc'][0]}: {err['msg']}") from exc


async def cycle_data(queries: AnalyticsQueries, history: CycleHistory) -> CycleData:
    """The daily series the model reads, loaded again only when the store's daily data has changed."""
    async with history.loading:
        version = await queries.daily_version()
        data = history.get(version)
        if data is None:
            closes = await queries.daily_closes()
            btc = closes.pop("BTC", [])
            data = CycleData(btc, await queries.total_market_caps(), closes)
            history.put(version, data)
        return data


@router.get(
    "/v1/cycles/btc",
    summary="Bitcoin halving cycles: past runs, projection, track record",
    responses=responses("cycles", 200, 400, 401, 422, 429, 503),
)
async def cycles(
    _: Authed, query: Annotated[CycleQuery, Query()], queries: QueriesDep, caches: CachesDep, halvings: HalvingsDep
) -> dict[str, Any]:
    params = query.params()
    history = await cycle_data(queries.analytics, caches.cycles)
    if not history.btc:
        raise ApiError(503, "no_history", "no BTC daily history loaded yet; retry after the backfill")
    try:
        if params == CycleParams():
            return await default_answer(history, caches.cycles, halvings)
        result = await asyncio.to_thread(report, halvings, history, params)
    except CycleInputError as exc:
        raise ApiError(400, "invalid_parameters", str(exc)) from exc
    return result.model_dump(mode="json")


async def default_answer(history: CycleData, cache: CycleHistory, halvings: list[Halving]) -> dict[str, Any]:
    """The answer for the default parameters, kept until the daily data changes (scenarios read it too)."""
    if cache.default_answer is None:
        result = await asyncio.to_thread(report, halvings, history, CycleParams())
        cache.default_answer = result.model_dump(mode="json")
    return cache.default_answer
