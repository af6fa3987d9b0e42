"""A real headless Chromium (the system's, driven by Playwright) for the dashboard's end-to-end tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

# screenshots land in a temp dir; TOKENPULSE_SCREENSHOTS=docs/img refreshes the README's
SHOTS = Path(os.environ.get("TOKENPULSE_SCREENSHOTS") or tempfile.mkdtemp(prefix="tokenpulse-shots-"))


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("no Chromium found: install it (Debian: apt-get install chromium); scripts/test.sh does when root")


@contextmanager
def chromium_page() -> Iterator[tuple[Browser, Page]]:
    """A launched headless Chromium and a desktop-sized page of it, closed on exit."""
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser, browser.new_page(viewport={"width": 1300, "height": 900})
        finally:
            browser.close()


@dataclass
class Dashboard:
    browser: Browser
    page: Page
    body: Locator
    problems: list[str] = field(default_factory=list)
    """script errors and console errors of every page watched"""

    def watch(self, page: Page) -> None:
        page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)

    def shown(self, name: str) -> None:
        """Wait until the dashboard shows page ``name`` with its data (no wait_for_function: the CSP forbids eval)."""
        from playwright.sync_api import expect

        expect(self.body).to_have_attribute("data-page", name, timeout=30_000)
        expect(self.body).to_have_attribute("data-ready", "true", timeout=60_000)


@contextmanager
def dashboard() -> Iterator[Dashboard]:
    """A Chromium page whose script and console errors fail the test on exit; 404s are expected (the optional
    alerts API answers 404 where it is absent), anything else (a CSP violation, a script error) is not."""
    with chromium_page() as (browser, page):
        seen = Dashboard(browser, page, page.locator("body"))
        page.on("pageerror", lambda e: seen.problems.append(f"page error: {e}"))
        seen.watch(page)
        yield seen
    unexpected = [p for p in seen.problems if "404" not in p]
    assert unexpected == [], unexpected
