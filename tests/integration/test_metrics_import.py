"""Fundamentals: a CSV import through the pipeline into the store, used point-in-time by the Investor Grade."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError
from tokenpulse_scoring.grades import GradeState, fundamental_scores
from tokenpulse_scoring.service import ScoringService
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.events import MetricsEvent
from tokenpulse_shared.service import Context
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.timeutil import DAY_MS as DAY
from typer.testing import CliRunner

from tokenpulse.cli import app

JAN10 = 1704844800000  # 2024-01-10T00:00Z


def test_metrics_events_refuse_unknown_or_impossible_values() -> None:
    base = {"symbol": "ETH", "ts": "2024-01-10T00:00:00Z"}
    MetricsEvent.model_validate({**base, "metrics": {"staking_ratio": 0.27, "tvl_usd": 5e10}})
    for metrics in ({"pe_ratio": 3.0}, {"staking_ratio": 1.4}, {"tvl_usd": -1.0}, {"tvl_usd": float("nan")}, {}):
        with pytest.raises(ValidationError):
            MetricsEvent.model_validate({**base, "metrics": metrics})


def test_supplied_fundamentals_enter_the_investor_grade_and_say_so() -> None:
    ind = {"rsi_14": 50.0, "macd_hist": 0.0, "atr_14": 1.0, "ema_20": 1.0, "ema_50": 1.0, "sma_200": 1.0}
    without, with_ = GradeState(), GradeState()
    for i in range(40):
        a = without.update(1.0, 1.0 + i / 100, 100.0, ind, None, 5e11)
        b = with_.update(1.0, 1.0 + i / 100, 100.0, ind, None, 5e11, {"tvl_usd": 1e11, "staking_ratio": 0.6})
    assert a.components["investor.fundamentals"] is None
    assert b.components["investor.fundamentals"] == 100.0
    assert b.components["investor.fundamentals.tvl"] == 100.0 and b.components["investor.fundamentals.staking"] == 100
    assert b.investor_grade > a.investor_grade  # type: ignore[operator]
    assert fundamental_scores({"etf_net_flow_30d_usd": -5e9}, 5e11)["etf_flows"] < 50


def test_csv_import_reaches_the_store_and_scoring_uses_it_point_in_time(tmp_path: Path) -> None:
    csv = tmp_path / "eth.csv"
    csv.write_text(
        "date,symbol,tvl_usd,staking_ratio,etf_net_flow_usd\n"
        "2024-01-10,eth,5e10,0.27,\n2024-01-11,ETH,,,-2e8\n2024-01-12,ETH,,,3e8\n"
    )
    runner = CliRunner()
    result = runner.invoke(
        app, ["import-metrics", str(csv), "--data-dir", str(tmp_path / "data")], env={"TOKENPULSE_KAFKA_BOOTSTRAP": ""}
    )
    assert result.exit_code == 0, result.output
    assert "imported 3 metric rows" in result.output

    async def check() -> None:
        store = await Store(f"chdb://{(tmp_path / 'data' / 'clickhouse').resolve()}").open()
        try:
            scoring = ScoringService()
            scoring.ctx = Context(settings=Settings(), bus=InMemoryBus(), store=store)
            await scoring.warm_up()
        finally:
            await store.close()
        assert scoring.fundamentals_at("ETH", JAN10 - DAY) is None  # not known before its day
        assert scoring.fundamentals_at("ETH", JAN10) == {"tvl_usd": 5e10, "staking_ratio": 0.27}
        later = scoring.fundamentals_at("ETH", JAN10 + 2 * DAY)
        assert later == {"tvl_usd": 5e10, "staking_ratio": 0.27, "etf_net_flow_30d_usd": 1e8}
        assert scoring.fundamentals_at("ETH", JAN10 + 45 * DAY) is None  # too old to use

    asyncio.run(check())


def test_a_bad_csv_imports_nothing_and_names_the_rows(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("date,symbol,staking_ratio\n2024-01-10,ETH,0.3\n2024-13-01,ETH,0.3\n2024-01-12,ETH,2\n")
    result = CliRunner().invoke(
        app, ["import-metrics", str(csv), "--data-dir", str(tmp_path / "d")], env={"TOKENPULSE_KAFKA_BOOTSTRAP": ""}
    )
    assert result.exit_code == 1
    assert "line 3: month must be in 1..12" in result.output
    assert "line 4" in result.output and "staking_ratio must be within 0..1" in result.output
    assert "metric rows into" not in result.output
    assert not (tmp_path / "d").exists()
