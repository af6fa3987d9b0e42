"""The framework ceiling for bench/gateway.py: a bare FastAPI endpoint with a token-sized JSON answer."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI()
ROW = {
    "symbol": "BTC",
    "name": "Bitcoin",
    "price": 97012.5,
    "change_24h": 1.84,
    "volume_24h": 3.1e10,
    "trader_grade": 71.2,
    "investor_grade": 64.8,
    "signal": {"direction": "bullish", "strength": 0.62, "ts": "2026-11-20T00:00:00Z"},
    "updated_at": "2026-11-22T01:00:00Z",
}


@app.get("/bare")
async def bare() -> dict[str, Any]:
    return {"data": [ROW], "next_cursor": None}
