"""Wiring: which services run in this process, on which bus, with which store.

``SERVICES`` is the module map: every service by name, built on demand, so a process imports only
what it runs; ``up`` runs all of them, ``run SERVICE`` one. What a service needs it declares on the
:class:`~tokenpulse_shared.service.Service` protocol: the store (:class:`StoreAccess`), an HTTP API
(``http_app``), a warm-up (``ready``). ``embedded`` puts them on the in-process bus, otherwise they
run on Kafka: that is the only difference in wiring; the business code is the same either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from typing import Any

import uvicorn
from tokenpulse_shared.bus import Bus
from tokenpulse_shared.bus.memory import InMemoryBus
from tokenpulse_shared.service import ASGIApp, Context, Service, StoreAccess
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.store import Store
from tokenpulse_shared.telemetry import setup_logging, setup_tracing

from tokenpulse.httpserver import server_config

log = logging.getLogger("tokenpulse")


def _ingest() -> Service:
    from tokenpulse_ingest.service import IngestService

    return IngestService()


def _scoring() -> Service:
    from tokenpulse_scoring.service import ScoringService

    return ScoringService()


def _alerts() -> Service:
    from tokenpulse_alerts.service import AlertsService

    return AlertsService()


def _gateway() -> Service:
    from tokenpulse_gateway.service import GatewayService

    return GatewayService()


# the module map, in start order (stop runs in reverse): `up` is all of them
SERVICES: dict[str, Callable[[], Service]] = {
    "ingest": _ingest,
    "scoring": _scoring,
    "alerts": _alerts,
    "gateway": _gateway,
}


def build_services(names: list[str]) -> list[Service]:
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise ValueError(f"unknown service {unknown[0]!r}; choose one of {', '.join(SERVICES)}")
    return [SERVICES[name]() for name in names]


async def open_store(settings: Settings, services: list[Service]) -> Store | None:
    """The store the most demanding service asks for: read-write for an owner, a read-only server for a warm-up."""
    access = {s.store_access for s in services}
    if StoreAccess.OWNER in access:
        return await Store(settings.store.dsn).open()
    url = settings.store.server_url  # chDB belongs to one process: a warm-up reads only a shared server
    if StoreAccess.WARM_UP in access and url:
        return await Store(url).open(migrate=False)
    return None


def make_kafka_bus(settings: Settings, service: str) -> Bus:
    from opentelemetry import trace
    from tokenpulse_shared.bus.kafka import KafkaBus

    return KafkaBus(
        settings.bus.require_kafka(),
        client_id=f"tokenpulse-{service}",
        group_prefix=settings.bus.consumer_group_prefix,
        tracer_provider=trace.get_tracer_provider(),  # type: ignore[arg-type]
        retries=settings.bus.bus_retries,
        max_batch=settings.bus.bus_max_batch,
        replication=settings.bus.kafka_replication,
        graceful_timeout_s=settings.runtime.shutdown_grace_s,
        partitions=settings.bus.kafka_partitions,
        session_timeout_s=settings.bus.kafka_session_timeout_s,
    )


async def embedded_backfill(ctx: Context) -> None:
    """First start: load the bundled history (candles, market caps) unless the store already has it."""
    from tokenpulse_ingest.backfill import plan, publish_history, publish_marketcaps
    from tokenpulse_shared.universe import configured_symbols

    assert ctx.store is not None
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    have_candles = (await ctx.store.query("SELECT count() FROM candles WHERE source != 'ticks'"))[0][0]
    have_caps = (await ctx.store.query("SELECT count() FROM market_caps"))[0][0]
    if have_candles and have_caps:
        ctx.status["backfill"] = "done"
        log.info("history already loaded (%d candles, %d market caps); skipping backfill", have_candles, have_caps)
        return
    ctx.status["backfill"] = "running"
    symbols = configured_symbols(ctx.settings)  # only the tokens with bundled history have any to load
    if not have_candles:
        series = await asyncio.to_thread(plan, ctx.settings.runtime.bundle_dir, symbols)
        result = await publish_history(ctx.bus, series)
        log.info("loaded %d candles of bundled history", result.candles)
    if not have_caps:
        caps = await publish_marketcaps(ctx.bus, ctx.settings.runtime.bundle_dir, symbols)
        log.info("loaded %d market-cap points", caps)
    if isinstance(ctx.bus, InMemoryBus):
        await ctx.bus.drain(timeout=600)
    ctx.status["backfill"] = "done"
    log.info("bundled history loaded in %.1fs", loop.time() - t0)


class Runtime:
    def __init__(self, settings: Settings, services: list[str], *, embedded: bool) -> None:
        self.settings = settings
        self.names = services
        self.embedded = embedded
        self.services: list[Service] = build_services(services)
        self.ctx: Context | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.frozen = False

    async def start(self) -> Context:
        s = self.settings
        setup_tracing("tokenpulse" if self.embedded else f"tokenpulse-{self.names[0]}", s.telemetry.otel_exporter)
        store = await open_store(s, self.services)
        if self.embedded:
            bus: Bus = InMemoryBus(retries=s.bus.bus_retries, max_batch=s.bus.bus_max_batch)
        else:
            bus = make_kafka_bus(s, self.names[0])
        self.ctx = Context(settings=s, bus=bus, store=store, embedded=self.embedded)
        for service in self.services:
            service.register(self.ctx)
        await bus.start()
        for service in self.services:
            await service.start(self.ctx)
        if self.embedded and s.runtime.backfill_on_start and store is not None:
            self.ctx.status["backfill"] = "pending"  # not ready until the history is in (readyz)
            self.tasks.append(asyncio.create_task(self._backfill(), name="backfill"))
        if s.runtime.gc_freeze:
            self.tasks.append(asyncio.create_task(self._freeze_when_warm(), name="gc-freeze"))
        log.info("tokenpulse started: %s (%s)", ", ".join(self.names), "embedded" if self.embedded else "kafka")
        return self.ctx

    async def _backfill(self) -> None:
        assert self.ctx is not None
        try:
            await embedded_backfill(self.ctx)
        except Exception:
            self.ctx.status["backfill"] = "failed"
            log.exception("backfill failed")

    async def _freeze_when_warm(self) -> None:
        """Once every service is warm (its ``ready`` event) and the bundled history is in, the objects alive
        then (rules, indicator state, caches) live as long as the process: ``gc.freeze`` keeps the collector's
        full passes from walking them again. Without it, a full pass over 100,000 alert rules paused the alerts
        process 0.4-0.8 s at a time (``docs/benchmarks.md``): the tail of its alert latency. One full
        collection first, so no garbage is frozen with them."""
        waits: list[Awaitable[Any]] = [s.ready.wait() for s in self.services]
        waits += [asyncio.shield(t) for t in self.tasks if t.get_name() == "backfill"]
        await asyncio.gather(*waits, return_exceptions=True)
        t0 = time.perf_counter()
        gc.collect()
        gc.freeze()
        self.frozen = True
        log.info(
            "gc: %d start-up objects frozen out of full collections (%.2f s)",
            gc.get_freeze_count(),
            time.perf_counter() - t0,
        )

    async def stop(self) -> None:
        """Graceful shutdown, in this order: stop consuming (the batches in hand finish and their offsets
        are committed), stop the services' own work, flush the producer, close the store."""
        for t in self.tasks:
            t.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await t
        if self.ctx is not None:
            try:
                await self.ctx.bus.stop_consuming()
            except Exception:
                log.exception("stopping the consumers failed")
        for service in reversed(self.services):
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %s failed", service.name)
        if self.frozen:  # the state frozen at start-up is released now (matters where the process goes on)
            gc.unfreeze()
            self.frozen = False
        if self.ctx is not None:
            await self.ctx.bus.stop()
            if self.ctx.store is not None:
                await self.ctx.store.close()
        log.info("tokenpulse shut down cleanly: consumers left, producer flushed, store closed")

    def app(self) -> ASGIApp | None:
        """The HTTP API of the first service that has one (the gateway)."""
        return next((app for s in self.services if (app := s.http_app()) is not None), None)


def ops_app(runtime: Runtime) -> Any:
    """The operations endpoint of a service without an API: liveness, readiness, Prometheus metrics."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "service": runtime.names})

    async def readyz(request: Request) -> Response:
        assert runtime.ctx is not None
        bus = await runtime.ctx.bus.ready()
        # scoring's state rebuild, alerts' rules and firing log, ingest's open candles
        warm = all(s.ready.is_set() for s in runtime.services)
        ok = bus and warm
        body: dict[str, Any] = {"status": "ready" if ok else "not ready", "bus": bus, "warmed_up": warm}
        # ingest's feed state (live / synthetic-fallback / ...) and the records alerts quarantined at start:
        # information, not readiness conditions
        body.update({k: v for k, v in runtime.ctx.status.items() if k.startswith(("feed", "quarantined"))})
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)])


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its own shutdown, killing the process before our cleanup;
    here the runtime owns the signals and asks uvicorn to exit, so services stop and the store closes."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self) -> None:
        self.should_exit = True
        with suppress(ImportError):  # open server-sent-event streams end now rather than at the timeout
            from sse_starlette.sse import AppStatus

            AppStatus.should_exit = True


async def serve(
    settings: Settings, services: list[str], *, embedded: bool, on_ready: Callable[[Runtime], None] | None = None
) -> None:
    setup_logging(settings.telemetry.log_level, settings.telemetry.log_format)
    runtime = Runtime(settings, services, embedded=embedded)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    servers: list[_Server] = []

    def on_signal() -> None:
        # installed before anything starts consuming, so a SIGTERM at any moment takes the graceful path
        stop.set()
        for server in servers:
            server.request_exit()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await runtime.start()
        app = runtime.app()
        if on_ready:
            on_ready(runtime)
        if app is None and settings.http.metrics_port:
            # ingest, scoring, alerts: /healthz, /readyz and /metrics on their own small HTTP server
            app, port = ops_app(runtime), settings.http.metrics_port
        else:
            port = settings.http.port
        if app is not None and not stop.is_set():
            servers.append(_Server(server_config(app, settings, port)))
            log.info("%s listening on http://%s:%d", "/".join(services), settings.http.host, port)
            await servers[0].serve()
        else:
            await stop.wait()
    finally:
        await runtime.stop()
        log.info("tokenpulse stopped")
