"""The market analytics in a real headless Chromium against ``tokenpulse up`` (trimmed bundle, BTC, ETH, SOL):
the dashboard's market, indices and token pages, the research report inside the dashboard, and the report's
own HTML page (``Accept: text/html``), each screenshot-tested."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tokenpulse_shared.settings import DEFAULT_BUNDLE

from testkit.procs import Proc, api_key, free_port, trimmed_bundle, wait_until
from tests.e2e.test_embedded import chromium

pytestmark = pytest.mark.e2e
# screenshots land in a temp dir; TOKENPULSE_SCREENSHOTS=docs/img keeps them
SHOTS = Path(os.environ.get("TOKENPULSE_SCREENSHOTS") or tempfile.mkdtemp(prefix="tokenpulse-shots-"))


class Up:
    base = ""
    key = ""


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    root = tmp_path_factory.mktemp("analytics-pages")
    env = {
        "TOKENPULSE_SYMBOLS": "BTC,ETH,SOL",
        "TOKENPULSE_BUNDLE_DIR": str(trimmed_bundle(DEFAULT_BUNDLE, root / "bundle")),
        "TOKENPULSE_LIVE_FEED": "off",
        "TOKENPULSE_LOG_FORMAT": "json",
    }
    port = free_port()
    proc = Proc(["up", "--port", str(port), "--data-dir", str(root / "data")], env, root / "up.log")
    running = Up()
    running.base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{running.base}/readyz", timeout=5).status_code == 200, 240, "ready", [proc])
        running.key = api_key(running.base)
        yield running
    finally:
        code = proc.stop()
    assert code == 0, proc.tail()
    assert "Traceback" not in proc.log.read_text(), proc.tail(80)


def test_the_analytics_pages_and_the_report_in_headless_chromium(up: Up) -> None:
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            body = page.locator("body")

            def shown(hash_: str, name: str) -> None:
                page.goto(f"{up.base}/dashboard{hash_}")
                expect(body).to_have_attribute("data-page", name, timeout=30_000)
                expect(body).to_have_attribute("data-ready", "true", timeout=60_000)

            shown("#/market", "market")
            expect(page.locator("#market-kpis")).to_contain_text("score")
            assert page.locator("#quant-all tbody tr").count() == 3
            assert page.locator("#correlation tbody tr").count() == 3
            assert page.locator("#market-chart canvas").count() > 0
            page.screenshot(path=str(SHOTS / "dashboard-market.png"), full_page=True)

            shown("#/indices", "indices")
            expect(page.locator("#indices tbody")).to_contain_text("Trader Grade 60+")
            assert page.locator("#indices tbody tr").count() == 2
            assert page.locator("#index-charts canvas").count() > 0
            page.screenshot(path=str(SHOTS / "dashboard-indices.png"), full_page=True)

            shown("#/token/ETH", "token")
            assert page.locator("#quant tbody tr").count() == 3
            expect(page.locator("#scenarios tbody")).to_contain_text("cycle base")
            page.fill("#scenario-form input[name=price]", "10000")
            page.click("#scenario-form button")
            expect(page.locator("#scenarios-note")).to_contain_text("needs a market cap")
            page.screenshot(path=str(SHOTS / "dashboard-token-analytics.png"), full_page=True)

            page.click("#report-link")
            expect(body).to_have_attribute("data-page", "report", timeout=30_000)
            expect(body).to_have_attribute("data-ready", "true", timeout=60_000)
            report = page.locator("#report-body")
            expect(report).to_contain_text("ETH (Ethereum): research report")
            expect(report).to_contain_text("not financial advice")
            report.locator('a[href="#method-quant-metrics"]').first.click()
            expect(page.locator("#method-quant-metrics")).to_be_in_viewport()
            assert body.get_attribute("data-page") == "report"  # a method link scrolls, it does not navigate
            page.screenshot(path=str(SHOTS / "dashboard-report.png"), full_page=True)

            own = browser.new_page(
                viewport={"width": 1100, "height": 900}, extra_http_headers={"X-API-Key": up.key, "Accept": "text/html"}
            )
            own.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            own.goto(f"{up.base}/v1/reports/SOL")
            expect(own.locator("h1")).to_have_text("SOL (Solana): research report")
            targets = {a.get_attribute("href") for a in own.locator('a[href^="#"]').all()}
            assert targets and all(own.locator(t).count() == 1 for t in targets), targets
            own.screenshot(path=str(SHOTS / "report-sol.png"), full_page=True)
        finally:
            browser.close()
    unexpected = [p for p in problems if "404" not in p]
    assert unexpected == [], unexpected
