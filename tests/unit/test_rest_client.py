"""Pieces of the REST client that need no server: Retry-After parsing, the monthly call budget."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from tokenpulse_ingest.marketcaps import MonthlyBudget
from tokenpulse_ingest.rest.client import parse_retry_after


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    assert 80 <= (parse_retry_after(later) or 0) <= 91
    assert parse_retry_after(format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)) == 0.0


def test_monthly_budget_counts_per_utc_month_and_persists(tmp_path: Path) -> None:
    now = [datetime(2026, 11, 30, 23, 59, tzinfo=UTC).timestamp()]
    path = tmp_path / "budget.json"
    budget = MonthlyBudget(5, path, clock=lambda: now[0])
    budget.spend(3)
    assert budget.remaining() == 2
    assert json.loads(path.read_text()) == {"month": "2026-11", "calls": 3}
    assert MonthlyBudget(5, path, clock=lambda: now[0]).remaining() == 2  # a restart keeps counting
    now[0] += 120  # December
    assert budget.remaining() == 5
    assert MonthlyBudget(5, path, clock=lambda: now[0]).remaining() == 5
    path.write_text("{not json")
    assert MonthlyBudget(5, path, clock=lambda: now[0]).remaining() == 5  # unreadable: counted from 0, logged
