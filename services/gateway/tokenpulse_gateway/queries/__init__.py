"""All of the gateway's SQL, one module per resource; :class:`Queries` holds one of each, on one store."""

from __future__ import annotations

from dataclasses import dataclass

from tokenpulse_shared.store import Store

from tokenpulse_gateway.queries.alerts import AlertQueries
from tokenpulse_gateway.queries.analytics import AnalyticsQueries
from tokenpulse_gateway.queries.market import MarketQueries
from tokenpulse_gateway.queries.predictions import PredictionQueries


@dataclass(frozen=True)
class Queries:
    market: MarketQueries
    analytics: AnalyticsQueries
    predictions: PredictionQueries
    alerts: AlertQueries

    @classmethod
    def on(cls, store: Store) -> Queries:
        return cls(MarketQueries(store), AnalyticsQueries(store), PredictionQueries(store), AlertQueries(store))
