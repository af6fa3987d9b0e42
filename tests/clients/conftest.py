"""A real ``tokenpulse up`` for the client tests (the trimmed bundle, the synthetic feed so the stream moves,
limits relaxed), and keys on it: a free one and a pro one (intraday signals, ten open streams)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.security.conftest import RELAXED, UpServer, serving


@pytest.fixture(scope="session")
def sdk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpServer]:
    env = {**RELAXED, "TOKENPULSE_LIVE_FEED": "synthetic"}
    yield from serving(UpServer(tmp_path_factory.mktemp("clients"), env), "the server's log")


@pytest.fixture(scope="session")
def free_key(sdk_server: UpServer) -> str:
    return sdk_server.key()


@pytest.fixture(scope="session")
def pro_key(sdk_server: UpServer) -> str:
    return sdk_server.tier_key("sdk tests", "pro")
