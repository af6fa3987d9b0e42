"""OpenAPI examples: one success example per endpoint and the error answers it can give."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.types import DecoratedCallable
from pydantic import BaseModel

ERRORS: dict[int, tuple[str, str, str]] = {
    304: ("", "", "not modified: your `If-None-Match` ETag is current"),
    400: ("invalid_symbol", "symbols are upper-case base assets such as BTC", "bad input"),
    401: ("missing_api_key", "send your key in X-API-Key; get one with POST /v1/keys", "no or unknown key"),
    403: ("tier_required", "intraday signals need the pro tier or higher; see GET /v1/usage", "not in your tier"),
    404: ("unknown_symbol", "FOO is not tracked; see GET /v1/tokens", "not found"),
    422: ("invalid_request", "limit: Input should be greater than or equal to 1", "invalid parameters"),
    503: ("no_history", "no BTC daily history loaded yet; retry after the backfill", "data not loaded yet"),
    429: ("rate_limited", "per-minute request limit reached; retry in 12 s", "over your limit (see Retry-After)"),
}

TOKEN = {
    "symbol": "BTC",
    "name": "Bitcoin",
    "price": 97012.5,
    "sources": ["binance", "coinbase", "kraken"],
    "stale": False,
    "change_24h": 1.8421,
    "volume_24h": 31_250_000_000.0,
    "market_cap": 1_921_000_000_000.0,
    "trader_grade": 71.2,
    "investor_grade": 64.8,
    "signal": {"direction": "bullish", "strength": 0.62, "ts": "2026-11-20T00:00:00Z"},
    "updated_at": "2026-11-22T01:00:00Z",
}

LEVEL_S = {"price": 91200.0, "touches": 4, "last_touch": "2026-10-02", "strength": 0.71}
LEVEL_R = {"price": 99800.0, "touches": 3, "last_touch": "2026-11-01", "strength": 0.58}

CYCLE_SCENARIO = {
    "name": "base",
    "length_multiplier": 1.25,
    "roi_reduction": 2.0,
    "length_days": 682,
    "roi": 3.9402,
    "end_date": "2026-03-03",
    "btc_price_target": 255993.59,
    "total_market_cap_target": 15385557633522.0,
}
SIGNAL_RECORD = {
    "symbol": "BTC",
    "interval": "1d",
    "horizon_bars": 30,
    "signals": 288,
    "hit_rate": 0.4965,
    "strategy_return": 306571.949,
    "buy_and_hold_return": 144171.0886,
    "max_drawdown": -0.7522,
    "sharpe": 1.5532,
    "buy_and_hold_sharpe": 1.3107,
    "turnover_per_year": 11.4,
    "days": 5636,
    "strategy_return_after_costs": 257116.1017,
}

RULE = {
    "id": "rule_5d1e0c9a7b3f2e41",
    "symbol": "BTC",
    "name": "BTC breaks 100k",
    "condition": {"kind": "price_above", "value": 100000.0},
    "description": "price above 100000",
    "channels": [{"type": "webhook", "target": "https://example.com/hooks/tokenpulse"}],
    "cooldown_s": 3600,
    "created_at": "2026-11-22T01:00:00Z",
    "readable": True,
}
UNREADABLE_RULE = {
    "id": "rule_0a9c41e2d7b85f36",
    "symbol": "BTC",
    "created_at": "2026-01-10T08:00:00Z",
    "readable": False,
    "error": "this rule cannot be read back and never fires (not JSON: Invalid JSON: recursion limit exceeded "
    "at line 1 column 7965); delete it",
}

FORECAST = {
    "horizon": "7d",
    "made_at": "2026-11-21T00:00:00Z",
    "target_ts": "2026-11-28T00:00:00Z",
    "point": 97012.5,
    "lower": 90100.0,
    "upper": 104300.0,
    "interval": 0.8,
    "lower_95": 86400.0,
    "upper_95": 108900.0,
    "model": "naive-rw@v20261122T014500Z",
    "kind": "live",
    "backtest": {"mase": 1.0, "coverage": 0.805, "coverage_95": 0.95, "n": 3099},
}

FREE_TIER = {
    "name": "free",
    "per_minute": 60,
    "per_month": 10000,
    "max_alert_rules": 10,
    "intraday": False,
    "max_streams": 2,
}
INDEX_WEIGHTS = [
    {"symbol": "BTC", "weight": 0.832755},
    {"symbol": "ETH", "weight": 0.142226},
    {"symbol": "SOL", "weight": 0.025019},
]
# The list's row and the detail share these fields, as IndexDetail extends IndexSummary.
INDEX_SUMMARY = {
    "id": "mcap-top5",
    "name": "Market-cap top 5",
    "rules": "Holds the 5 tracked tokens with the largest market cap, weighted by market cap; rebalanced on the "
    "first day of each month at the daily close; 0.2% of the value traded as costs.",
    "rebalance": "monthly",
    "cost_per_unit_traded": 0.002,
    "start": "2013-04-28",
    "as_of": "2026-06-27",
    "nav": 50018.9,
    "constituents": INDEX_WEIGHTS,
    "stats": {
        "index": {"total_return": 500.191, "cagr": 0.603139, "volatility": 0.733608, "max_drawdown": -0.848579},
        "equal_weight": {"total_return": 16108.6, "cagr": 1.08632, "volatility": 0.859704, "max_drawdown": -0.865228},
        "btc": {"total_return": 446.5, "cagr": 0.589408, "volatility": 0.726538, "max_drawdown": -0.848579},
    },
}
ADMIN_KEY = {"key_id": "9f2c41d07a5be613", "tier": "pro"}

SUCCESS: dict[str, Any] = {
    "admin_key": {
        "key": "tp_Xq3...",
        **ADMIN_KEY,
        "limits": {"name": "pro", "per_minute": 500, "per_month": 500000},
        "note": "store this key now: it is shown only once",
    },
    "admin_key_record": {
        "key_id": ADMIN_KEY["key_id"],
        "name": "Acme Research",
        "email": "ops@acme.example",
        "tier": "pro",
        "created_at": "2026-11-22T01:00:00Z",
        "revoked": False,
    },
    "admin_key_revoked": {"key_id": ADMIN_KEY["key_id"], "revoked": True},
    "usage": {
        "key_id": "9f2c41d07a5be613",
        "name": "my app",
        "tier": FREE_TIER,
        "usage": {
            "minute": {"limit": 60, "used": 3, "remaining": 57, "reset_s": 41},
            "month": {"limit": 10000, "used": 1250, "remaining": 8750, "reset_s": 1728000},
        },
        "shared": True,
    },
    "predictions": {"symbol": "BTC", "status": "ok", "horizons": [FORECAST]},
    "alert_created": {**RULE, "webhook_secret": "whsec_2b7f…"},
    "alert_rule": RULE,
    "alert_rules": {"data": [RULE, UNREADABLE_RULE], "next_cursor": None},
    "alert_deleted": {"id": RULE["id"], "deleted": True},
    "alert_events": {
        "data": [
            {
                "id": "8c1f0e27d9b34a6a9e0c5b71f2d4e813",
                "rule_id": RULE["id"],
                "symbol": "BTC",
                "ts": "2026-11-22T01:02:03Z",
                "price": 100012.5,
                "message": "BTC crossed above 100000 (now 100012.5) (BTC breaks 100k)",
                "status": "delivered",
                "deliveries": [
                    {
                        "channel": "webhook",
                        "target": "https://example.com/…",
                        "status": "delivered",
                        "attempts": 1,
                        "error": None,
                        "at": "2026-11-22T01:02:03.180Z",
                        "summary": False,
                    }
                ],
            }
        ],
        "next_cursor": None,
    },
    "create_key": {
        "key": "tp_3kq...shown-once",
        "key_id": "9f2c41d07a5be613",
        "tier": "free",
        "limits": FREE_TIER,
        "note": "store this key now: it is shown only once",
    },
    "tokens": {"data": [TOKEN], "next_cursor": "eyJ2IjoxLjkyMWUxMiwic3ltYm9sIjoiQlRDIiwiZiI6IjNhN2MwZDFlOWIyNCJ9"},
    "token": {
        **TOKEN,
        "roi": {"24h": 1.84, "7d": -3.1, "30d": 12.4, "1y": 104.2},
        "levels": {
            "support": [LEVEL_S],
            "resistance": [LEVEL_R],
            "key_support": LEVEL_S,
            "breakout_level": LEVEL_R,
        },
        "predictions": [FORECAST],
    },
    "candles": {
        "data": [
            {
                "ts": "2017-12-17T00:00:00Z",
                "open": 19106.4,
                "high": 19891.99,
                "low": 18750.0,
                "close": 19378.99,
                "volume": 1234.5,
            }
        ],
        "next_cursor": "eyJ0cyI6IDE1MTM0Njg4MDAwMDB9",
    },
    "indicators": {
        "data": [
            {
                "ts": "2024-12-05T00:00:00Z",
                "rsi_14": 71.3,
                "macd": 4100.2,
                "macd_signal": 3650.9,
                "macd_hist": 449.3,
                "ema_20": 93000.1,
                "ema_50": 85010.4,
                "sma_200": 67020.0,
                "bb_upper": 101200.0,
                "bb_middle": 94000.0,
                "bb_lower": 86800.0,
                "atr_14": 3100.5,
            }
        ],
        "next_cursor": None,
    },
    "grades": {
        "data": [
            {
                "ts": "2024-12-05T00:00:00Z",
                "trader_grade": 71.2,
                "investor_grade": 64.8,
                "components": {"trader.rsi": 71.3, "trader.trend_alignment": 100.0, "investor.liquidity": 68.0},
                "method": "v1",
            }
        ],
        "next_cursor": None,
    },
    "signals": {
        "data": [
            {
                "ts": "2024-11-06T00:00:00Z",
                "symbol": "BTC",
                "interval": "1d",
                "direction": "bullish",
                "strength": 0.62,
                "reasons": ["ema20>ema50", "macd_hist>0"],
            }
        ],
        "next_cursor": None,
    },
    "levels": {
        "symbol": "BTC",
        "price": 97012.5,
        "as_of": "2026-11-21",
        "support": [LEVEL_S],
        "resistance": [LEVEL_R],
        "key_support": LEVEL_S,
        "breakout_level": LEVEL_R,
        "method": {"window": 5, "tolerance": 0.03, "half_life_days": 180.0, "lookback_days": 730},
    },
    "cycles": {
        "as_of": "2026-06-27",
        "parameters": {"as_of": "2026-06-27", "basis": "halving", "confirm_drawdown": 0.75},
        "halvings": [
            {
                "number": 3,
                "date": "2020-05-11",
                "height": 630000,
                "price": 8572.4,
                "peak_date": "2021-11-08",
                "peak_price": 67554.84,
                "multiple": 7.8805,
                "days_to_peak": 546,
                "confirmed": True,
                "bottom_date": "2018-12-15",
                "bottom_price": 3183.0,
                "bottom_to_peak_days": 1059,
                "bottom_to_peak_multiple": 21.2236,
                "market_cap_at_halving": 243078805028.0,
                "peak_market_cap": 3069114721078.3,
                "peak_market_cap_date": "2021-11-09",
                "market_multiple": 12.626,
                "window_end": "2024-04-19",
            }
        ],
        "projection": {
            "start": "2024-04-20",
            "basis": "halving",
            "start_price": 64968.87,
            "start_market_cap": 2437123021308.7,
            "previous_run": 3,
            "previous_length_days": 546,
            "previous_roi": 7.8805,
            "previous_market_roi": 12.626,
            "scenarios": [CYCLE_SCENARIO],
        },
        "track_record": [
            {
                "made_at": "2024-04-20",
                "run": 4,
                "actual_peak_date": "2025-10-06",
                "actual_peak_price": 124723.0,
                "actual_peak_market_cap": 3908008997404.5,
                "actual_peak_confirmed": False,
                "scenarios": [
                    {
                        "name": "base",
                        "end_date": "2026-03-03",
                        "btc_price_target": 255993.59,
                        "total_market_cap_target": 15385557633522.0,
                        "days_error": 148,
                        "price_error_pct": 105.25,
                        "market_cap_error_pct": 293.69,
                    }
                ],
            }
        ],
        "altcoin_season": [
            {
                "run": 4,
                "start": "2024-04-20",
                "end": "2025-10-06",
                "btc_multiple": 1.9197,
                "altcoins": [
                    {"symbol": "ETH", "multiple": 1.4843, "relative_to_btc": 0.7732, "outperformed_btc": False}
                ],
                "not_covered": [],
            }
        ],
        "notes": ["total market cap history ends 2025-05-18: market-cap peaks after it are not known"],
    },
    "track_record": {
        "horizon_days": 30,
        "signals": [SIGNAL_RECORD],
        "signals_overall": {"signals": 288.0, "hit_rate": 0.4965, "tokens_beating_buy_and_hold": 1.0, "tokens": 1.0},
        "grades": [
            {"grade": "trader", "horizon_days": 7, "mean_ic": 0.031, "ic_sd": 0.21, "days": 1450, "t_stat": 5.6}
        ],
        "intraday": [{**SIGNAL_RECORD, "interval": "1h", "horizon_bars": 24}],
    },
}

REPORT_MARKDOWN = """# ETH (Ethereum): research report

Generated 2026-06-28T00:05:00Z; data up to 2026-06-27. This report is generated from stored market data by fixed,
published methods. It describes; it does not recommend. It is not financial advice.

## Quant metrics

| window | volatility | Sharpe | ... |
|---|---|---|---|
| 90d to 2026-06-27 | [+52%](#method-quant-metrics) | [-1.47](#method-quant-metrics) | ... |
"""
"""the start of a report (``GET /v1/reports/{symbol}``)"""

# the market analytics, as the bundled history answers them (ETH where one token is asked)
SUCCESS.update(
    {
        "quant": {
            "symbol": "ETH",
            "window": "90d",
            "as_of": "2026-06-27",
            "start": "2026-03-29",
            "volatility": 0.515684,
            "sharpe": -1.46922,
            "sortino": -1.96841,
            "max_drawdown": -0.351864,
            "cagr": -0.589756,
            "beta_btc": 1.25744,
            "corr_btc": 0.900675,
            "n": 90,
            "n_btc": 90,
        },
        "correlation": {
            "symbols": ["BTC", "ETH"],
            "window": "90d",
            "as_of": "2026-06-27",
            "matrix": [[1.0, 0.900675], [0.900675, 1.0]],
            "n": 90,
        },
        "market": {
            "state": "bearish",
            "score": 14.6385,
            "breadth": 0.0263008,
            "components": {"breadth": 2.63008, "trader_grade": 27.1595, "momentum_30d": 14.1261},
            "tracked_market_cap": 1434140000000.0,
            "tokens": ["BTC", "ETH", "SOL"],
            "total_market_cap": 3387150000000.0,
            "total_market_cap_date": "2025-05-18",
            "btc_dominance": 60.5323,
            "as_of": "2026-06-27",
            "track_record": [
                {
                    "state": "bullish",
                    "days": 2364,
                    "mean_forward_return": 0.152538,
                    "median_forward_return": 0.0606032,
                    "share_positive": 0.618866,
                },
                {
                    "state": "neutral",
                    "days": 337,
                    "mean_forward_return": 0.0380351,
                    "median_forward_return": 0.014301,
                    "share_positive": 0.52819,
                },
                {
                    "state": "bearish",
                    "days": 1661,
                    "mean_forward_return": 0.0205929,
                    "median_forward_return": 0.00174911,
                    "share_positive": 0.505719,
                },
                {
                    "state": "all",
                    "days": 4362,
                    "mean_forward_return": 0.0934487,
                    "median_forward_return": 0.0330731,
                    "share_positive": 0.568776,
                },
            ],
            "method": {
                "bullish_at": 60.0,
                "bearish_at": 40.0,
                "momentum_days": 30,
                "momentum_scale": 0.2,
                "min_components": 2,
                "forward_days": 30,
            },
            "history": [
                {
                    "date": "2026-06-26",
                    "state": "bearish",
                    "score": 18.4895,
                    "breadth": 0.0265094,
                    "total_market_cap": 3387150000000.0,
                    "btc_dominance": 60.5323,
                },
                {
                    "date": "2026-06-27",
                    "state": "bearish",
                    "score": 14.6385,
                    "breadth": 0.0263008,
                    "total_market_cap": 3387150000000.0,
                    "btc_dominance": 60.5323,
                },
            ],
        },
        "indices": {"data": [INDEX_SUMMARY], "next_cursor": None},
        "index": {
            **INDEX_SUMMARY,
            "history": [
                {"date": "2026-06-26", "nav": 49652.8, "btc": 44424.4, "equal_weight": 1603730.0},
                {"date": "2026-06-27", "nav": 50018.9, "btc": 44750.0, "equal_weight": 1607740.0},
            ],
            "rebalances": [{"date": "2026-06-01", "constituents": INDEX_WEIGHTS, "cost": 3.82305e-19}],
        },
        "scenarios": {
            "symbol": "ETH",
            "today": {
                "as_of": "2026-06-27",
                "price": 1593.19,
                "circulating_supply": 120858000.0,
                "supply_as_of": "2025-06-05",
                "market_cap": 192550000000.0,
                "total_market_cap": 3387150000000.0,
                "total_market_cap_date": "2025-05-18",
                "share_of_total": 0.0568473,
            },
            "scenarios": [
                {"price": 5000.0, "market_cap": 604292000000.0, "share_of_total": 0.178407, "multiple": 3.13836},
                {"price": 10000.0, "market_cap": 1208580000000.0, "share_of_total": 0.356814, "multiple": 6.27672},
            ],
            "cycle": [
                {
                    "name": "bear",
                    "end_date": "2026-01-08",
                    "total_market_cap_target": 12308400000000.0,
                    "market_cap": 699702000000.0,
                    "price": 5789.44,
                    "multiple": 3.63386,
                },
                {
                    "name": "base",
                    "end_date": "2026-03-03",
                    "total_market_cap_target": 15385600000000.0,
                    "market_cap": 874627000000.0,
                    "price": 7236.8,
                    "multiple": 4.54233,
                },
                {
                    "name": "moon",
                    "end_date": "2026-05-24",
                    "total_market_cap_target": 20514100000000.0,
                    "market_cap": 1166170000000.0,
                    "price": 9649.06,
                    "multiple": 6.05644,
                },
            ],
            "requirement": {
                "price": 10000.0,
                "market_cap": 1208580000000.0,
                "multiple": 6.27672,
                "total_market_cap_at_current_share": 21260200000000.0,
                "share_of_current_total": 0.356814,
            },
            "notes": [
                "circulating supply = market cap / price of the 2025-06-05 snapshot, held constant since",
                "the total crypto market cap is the 2025-05-18 snapshot, older than the price "
                "(2026-06-27): shares compare today's market cap with that total",
            ],
        },
    }
)

STREAM = (
    'id: 1763773200123\nevent: price\ndata: {"symbol":"BTC","price":97012.5,"ts":"2026-11-22T01:00:00Z"}\n\n: ping\n\n'
)
"""what ``/v1/stream`` sends: server-sent events and heartbeats"""


def success(name: str, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """The success example ``name`` as the OpenAPI ``responses`` entry of ``status``."""
    return {status: {"content": {"application/json": {"example": SUCCESS[name]}}}}


def responses(name: str, *statuses: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        if status in (200, 201):
            out.update(success(name, status))
        elif status == 304:
            out[status] = {"description": ERRORS[304][2]}
        else:
            code, message, description = ERRORS[status]
            example = {"error": {"code": code, "message": message}}
            out[status] = {"description": description, "content": {"application/json": {"example": example}}}
    return out


def analysis(
    router: APIRouter, path: str, name: str, model: type[BaseModel], summary: str
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """The ``GET path`` decorator of an analysis computed from the market data (example ``name``): answered
    from its cache (304 on a match), 404 for an unknown token, 422 when the data cannot support it."""
    answers = responses(name, 200, 304, 400, 401, 404, 422, 429)
    return router.get(path, response_model=model, summary=summary, responses=answers)
