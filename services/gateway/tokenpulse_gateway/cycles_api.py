"""``GET /v1/cycles/btc``: halving runs, the current run's projection, its track record, altcoin seasons.

The model lives in ``tokenpulse_gateway.analytics.cycles``; this router feeds it the stored daily
history (so it follows new daily candles) and the query's overrides, and caches the
default answer until the daily data changes.
"""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import ValidationError

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
    load_halvings,
    report,
)
from tokenpulse_gateway.deps import Authed
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.examples import responses
from tokenpulse_gateway.queries import Queries

# the model's bounds (tokenpulse_gateway.analytics.cycles), stated here too so the OpenAPI document shows them
Roi = Annotated[float | None, Query(gt=0, le=MAX_ROI)]
LengthMultiplier = Annotated[float | None, Query(gt=0, le=MAX_LENGTH_MULTIPLIER)]
RoiReduction = Annotated[float | None, Query(ge=MIN_ROI_REDUCTION, le=MAX_ROI_REDUCTION)]


def make_router(queries: Queries, bundle_dir: Path) -> APIRouter:
    router = APIRouter(tags=["cycles"])
    halvings: list[Halving] = load_halvings(bundle_dir / "btc_cycles.json")
    cache: dict[str, Any] = {"version": None, "data": None, "default": None}
    lock = asyncio.Lock()

    async def data() -> CycleData:
        async with lock:
            version = await queries.daily_version()
            if cache["version"] != version:
                closes = await queries.daily_closes()
                btc = closes.pop("BTC", [])
                cache.update(
                    version=version, data=CycleData(btc, await queries.total_market_caps(), closes), default=None
                )
            return cache["data"]  # type: ignore[no-any-return]

    @router.get(
        "/v1/cycles/btc",
        summary="Bitcoin halving cycles: past runs, projection, track record",
        responses=responses("cycles", 200, 400, 401, 422, 429, 503),
    )
    async def cycles(
        _: Authed,
        as_of: Annotated[date | None, Query(description="measure and project with data up to this day only")] = None,
        basis: Annotated[
            Literal["halving", "bottom"], Query(description="a run starts at the halving or at the cycle bottom")
        ] = "halving",
        confirm_drawdown: Annotated[
            float, Query(gt=0, lt=1, description="fall from the high that confirms a cycle peak")
        ] = 0.75,
        start: Annotated[date | None, Query(description="start of the current run (default: last halving)")] = None,
        start_price: Annotated[float | None, Query(gt=0, le=MAX_PRICE)] = None,
        start_market_cap: Annotated[float | None, Query(gt=0, le=MAX_MARKET_CAP)] = None,
        previous_length_days: Annotated[int | None, Query(gt=0, le=MAX_LENGTH_DAYS)] = None,
        previous_roi: Roi = None,
        previous_market_roi: Roi = None,
        bear_length_multiplier: LengthMultiplier = None,
        bear_roi_reduction: RoiReduction = None,
        base_length_multiplier: LengthMultiplier = None,
        base_roi_reduction: RoiReduction = None,
        moon_length_multiplier: LengthMultiplier = None,
        moon_roi_reduction: RoiReduction = None,
        scenario: Annotated[list[str] | None, Query(description="only these scenarios (bear, base, moon)")] = None,
    ) -> dict[str, Any]:
        overrides = {
            "bear": (bear_length_multiplier, bear_roi_reduction),
            "base": (base_length_multiplier, base_roi_reduction),
            "moon": (moon_length_multiplier, moon_roi_reduction),
        }
        wanted = scenario or list(DEFAULT_SCENARIOS)
        unknown = sorted(set(wanted) - set(DEFAULT_SCENARIOS))
        if unknown:
            raise ApiError(400, "unknown_scenario", f"unknown scenario {', '.join(unknown)}; use bear, base or moon")
        scenarios = {
            name: (overrides[name][0] or DEFAULT_SCENARIOS[name][0], overrides[name][1] or DEFAULT_SCENARIOS[name][1])
            for name in DEFAULT_SCENARIOS
            if name in wanted
        }
        try:
            params = CycleParams(
                as_of=as_of,
                basis=basis,
                confirm_drawdown=confirm_drawdown,
                start=start,
                start_price=start_price,
                start_market_cap=start_market_cap,
                previous_length_days=previous_length_days,
                previous_roi=previous_roi,
                previous_market_roi=previous_market_roi,
                scenarios=scenarios,
            )
        except ValidationError as exc:  # bounds the query does not state (the dates' range)
            err = exc.errors()[0]
            raise ApiError(400, "invalid_parameters", f"{err['loc'][0]}: {err['msg']}") from exc
        history = await data()
        if not history.btc:
            raise ApiError(503, "no_history", "no BTC daily history loaded yet; retry after the backfill")
        is_default = params == CycleParams()
        if is_default and cache["default"] is not None:
            return cache["default"]  # type: ignore[no-any-return]
        try:
            result = await asyncio.to_thread(report, halvings, history, params)
        except CycleInputError as exc:
            raise ApiError(400, "invalid_parameters", str(exc)) from exc
        body = result.model_dump(mode="json")
        if is_default:
            cache["default"] = body
        return body

    return router
