"""The market analytics in a real headless Chromium against ``tokenpulse up`` (trimmed bundle, BTC, ETH, SOL):
the dashboard's market, indices and token pages, the research report inside the dashboard, and the report's
own HTML page (``Accept: text/html``), each screenshot-tested."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tokenpulse_shared.settings import DEFAULT_BUNDLE

from testkit.browser import SHOTS, dashboard
from testkit.procs import api_key, trimmed_bundle, up_process

pytestmark = pytest.mark.e2e


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
    with up_process(root, env) as base:
        running = Up()
        running.base, running.key = base, api_key(base)
        yield running


def test_the_analytics_pages_and_the_report_in_headless_chromium(up: Up) -> None:
    from playwright.sync_api import expect

    with dashboard() as dash:
        page, body = dash.page, dash.body

        def shown(hash_: str, name: str) -> None:
            page.goto(f"{up.base}/dashboard{hash_}")
            dash.shown(name)

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
        dash.shown("report")
        report = page.locator("#report-body")
        expect(report).to_contain_text("ETH (Ethereum): research report")
        expect(report).to_contain_text("not financial advice")
        report.locator('a[href="#method-quant-metrics"]').first.click()
        expect(page.locator("#method-quant-metrics")).to_be_in_viewport()
        assert body.get_attribute("data-page") == "report"  # a method link scrolls, it does not navigate
        page.screenshot(path=str(SHOTS / "dashboard-report.png"), full_page=True)

        own = dash.browser.new_page(
            viewport={"width": 1100, "height": 900}, extra_http_headers={"X-API-Key": up.key, "Accept": "text/html"}
        )
        dash.watch(own)
        own.goto(f"{up.base}/v1/reports/SOL")
        expect(own.locator("h1")).to_have_text("SOL (Solana): research report")
        targets = {a.get_attribute("href") for a in own.locator('a[href^="#"]').all()}
        assert targets and all(own.locator(t).count() == 1 for t in targets), targets
        own.screenshot(path=str(SHOTS / "report-sol.png"), full_page=True)
