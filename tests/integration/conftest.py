"""Fixtures shared by the universe discovery and ranking tests: the REST fake exchange serving listings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.rest_exchange import FakeExchange, load_series
from testkit.server import ThreadedServer


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeExchange, str]]:
    """One REST fake per module, on loopback (a module defining its own ``served`` overrides this one)."""
    exchange = FakeExchange(load_series())
    with ThreadedServer(exchange.app()) as server:
        yield exchange, server.url


@pytest.fixture
def fake(served: tuple[FakeExchange, str]) -> Iterator[tuple[FakeExchange, str]]:
    """The module's REST fake, its listings restored after the test changed them."""
    exchange, url = served
    saved = dict(exchange.listings)
    yield exchange, url
    exchange.listings = saved
