"""The runtime's module map: services are chosen by name from it, and what each needs — the store, an HTTP
API, a warm-up — comes from what it declares on the Service protocol, never from its name. Fake services
on the in-process bus; the store is the real embedded engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from tokenpulse_shared.service import ASGIApp, Context, Service, StoreAccess
from tokenpulse_shared.settings import Settings

from tokenpulse import runtime
from tokenpulse.runtime import Runtime, build_services, open_store, ops_app

SERVICE_PACKAGES = Path(__file__).resolve().parents[2] / "services"


class Fake:
    """A service that only declares its needs; ``api`` stands for an HTTP API of its own."""

    def __init__(self, name: str, store_access: StoreAccess = StoreAccess.NONE, api: ASGIApp | None = None) -> None:
        self.name = name
        self.store_access = store_access
        self.ready = asyncio.Event()
        self.api = api
        self.ctx: Context | None = None

    def register(self, ctx: Context) -> None:
        self.ctx = ctx

    async def start(self, ctx: Context) -> None:
        return None

    async def stop(self) -> None:
        return None

    def http_app(self) -> ASGIApp | None:
        return self.api


def settings(tmp_path: Path) -> Settings:
    return Settings(runtime={"gc_freeze": False, "backfill_on_start": False}, store={"data_dir": tmp_path / "data"})


def test_services_come_from_the_module_map_and_an_unknown_one_is_refused() -> None:
    assert list(runtime.SERVICES) == ["ingest", "scoring", "alerts", "gateway"]
    with pytest.raises(ValueError, match="unknown service 'billing'; choose one of ingest, scoring"):
        build_services(["scoring", "billing"])


def test_every_service_package_has_its_entry_in_the_module_map_under_its_own_name() -> None:
    """A service package (``services/X/tokenpulse_X/service.py``) the map leaves out could never be run."""
    packages = {p.name for p in SERVICE_PACKAGES.iterdir() if (p / f"tokenpulse_{p.name}" / "service.py").is_file()}
    assert set(runtime.SERVICES) == packages
    for name, build in runtime.SERVICES.items():
        service = build()
        assert service.name == name and isinstance(service.store_access, StoreAccess)
        assert isinstance(service.ready, asyncio.Event) and not service.ready.is_set()


async def test_the_store_opened_is_the_one_the_most_demanding_service_declares(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert await open_store(s, [Fake("a"), Fake("b")]) is None
    # a warm-up reads only a ClickHouse server other processes share, never a chDB directory
    assert await open_store(s, [Fake("a", StoreAccess.WARM_UP)]) is None
    store = await open_store(s, [Fake("a", StoreAccess.WARM_UP), Fake("owner", StoreAccess.OWNER)])
    assert store is not None and store.dsn == s.store.dsn
    try:
        assert (await store.query("SELECT count() FROM candles"))[0][0] == 0  # opened read-write and migrated
    finally:
        await store.close()


async def test_readiness_waits_for_every_service_and_the_api_is_the_one_a_service_declares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = Starlette()
    fakes: dict[str, Service] = {"quiet": Fake("quiet"), "served": Fake("served", api=api)}
    monkeypatch.setattr(runtime, "SERVICES", {name: (lambda f=f: f) for name, f in fakes.items()})
    rt = Runtime(settings(tmp_path), ["quiet", "served"], embedded=True)
    await rt.start()
    try:
        assert rt.app() is api and rt.ctx is not None and rt.ctx.store is None
        transport = httpx.ASGITransport(app=ops_app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://ops") as ops:
            fakes["quiet"].ready.set()
            waiting = await ops.get("/readyz")
            assert waiting.status_code == 503 and waiting.json()["warmed_up"] is False
            fakes["served"].ready.set()
            ready = await ops.get("/readyz")
            assert ready.status_code == 200 and ready.json()["warmed_up"] is True
    finally:
        await rt.stop()


async def test_the_gateway_declares_the_store_it_owns_its_api_and_its_readiness(tmp_path: Path) -> None:
    """The real gateway, alone: the runtime opens the store for it, serves its API and sees it ready."""
    rt = Runtime(settings(tmp_path), ["gateway"], embedded=True)
    await rt.start()
    try:
        gateway = rt.services[0]
        assert gateway.store_access is StoreAccess.OWNER and rt.ctx is not None and rt.ctx.store is not None
        assert gateway.ready.is_set()
        api = rt.app()
        assert api is not None
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://gateway") as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/v1/tokens")).json()["error"]["code"] == "missing_api_key"
    finally:
        await rt.stop()
