"""``GET /v1/indices`` and ``GET /v1/indices/{id}``: rule-based indices simulated walk-forward on the stored
history, with their NAV, constituents, rebalances and statistics vs BTC and the equal-weight basket."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from tokenpulse_gateway import examples as ex
from tokenpulse_gateway.analytics.indices import BY_ID, INDICES, IndexDetail, IndexRules, IndexSummary, index_detail
from tokenpulse_gateway.analytics.series import MarketData
from tokenpulse_gateway.answers import answer, encode
from tokenpulse_gateway.bodies import JsonBodyRoute
from tokenpulse_gateway.deps import Authed, MarketDep
from tokenpulse_gateway.errors import ApiError

router = APIRouter(route_class=JsonBodyRoute, tags=["analytics"])
SUMMARY_FIELDS = ("history", "rebalances")


class IndexList(BaseModel):
    data: list[IndexSummary]
    next_cursor: None = Field(None, description="always null: every index is on the one page")


def detail_body(data: MarketData, rules: IndexRules) -> dict[str, Any]:
    return index_detail(data, rules).model_dump(mode="json")


@router.get(
    "/v1/indices",
    response_model=IndexList,
    summary="The indices: rules, latest NAV, constituents and statistics",
    responses=ex.responses("indices", 200, 304, 401, 429),
)
async def indices(request: Request, _: Authed, market: MarketDep) -> Response:
    """Every index with its rules (fixed in advance), start, latest NAV (100 at the start), current
    constituents and return / volatility / max drawdown vs BTC and the equal-weight basket."""
    data = await market.data()
    items = []
    for rules in INDICES:
        body = await market.computed(("index", rules.id), detail_body, data, rules)
        items.append({k: v for k, v in body.items() if k not in SUMMARY_FIELDS})
    return answer(request, encode({"data": items, "next_cursor": None}), 300)


@router.get(
    "/v1/indices/{index_id}",
    response_model=IndexDetail,
    summary="One index: NAV history vs BTC and the equal-weight basket, rebalances and weights",
    responses=ex.responses("index", 200, 304, 401, 404, 429),
)
async def index(request: Request, _: Authed, index_id: str, market: MarketDep) -> Response:
    """The index's daily NAV with BTC and the equal-weight basket on the same base, every rebalance with the
    weights it set and the costs it paid, and the statistics. Walk-forward: a day's weights use data up to
    that day only."""
    rules = BY_ID.get(index_id)
    if rules is None:
        raise ApiError(404, "unknown_index", f"no index {index_id[:40]!r}; see GET /v1/indices ({', '.join(BY_ID)})")
    data = await market.data()
    body = await market.computed(("index", rules.id), detail_body, data, rules)
    return answer(request, encode(body), 300)
