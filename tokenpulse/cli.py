"""The ``tokenpulse`` command line: ``up``, ``run SERVICE``, ``backfill``, ``config``, ``mcp``."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tokenpulse_shared.events import Interval
from tokenpulse_shared.settings import Settings

from tokenpulse.config import console, load_settings, print_markdown, print_table
from tokenpulse.predictions_cli import app as predictions_app
from tokenpulse.runtime import SERVICES, serve

app = typer.Typer(help="Tokenpulse: open crypto market intelligence.", no_args_is_help=True, add_completion=False)
app.add_typer(predictions_app, name="predictions")


@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="Bind address of the gateway [TOKENPULSE_HOST, 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port of the gateway [TOKENPULSE_PORT, 8000].")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the embedded ClickHouse keeps its data [TOKENPULSE_DATA_DIR, .tokenpulse]."),
    ] = None,
) -> None:
    """Embedded mode: all four services in one process, in-process bus, embedded ClickHouse."""
    settings = load_settings(http={"host": host, "port": port}, store={"data_dir": data_dir})
    settings.store.data_dir = settings.store.data_dir.resolve()  # the embedded engine's and the models' home
    asyncio.run(serve(settings, list(SERVICES), embedded=True))


@app.command()
def run(
    service: Annotated[str, typer.Argument(help="ingest | scoring | alerts | gateway")],
) -> None:
    """Distributed mode: one service on Kafka (TOKENPULSE_KAFKA_BOOTSTRAP) and ClickHouse."""
    if service not in SERVICES:
        console.print(f"[red]unknown service {service!r}[/red]: choose one of {', '.join(SERVICES)}")
        raise typer.Exit(2)
    settings = load_settings()
    try:
        settings.bus.require_kafka()
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    asyncio.run(serve(settings, [service], embedded=False))


def _parse_day(value: str | None) -> int | None:
    if value is None:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)


@app.command()
def backfill(
    symbols: Annotated[str | None, typer.Option(help="Comma-separated symbols (default: all bundled).")] = None,
    intervals: Annotated[str | None, typer.Option(help="Comma-separated intervals, e.g. 1d,1h.")] = None,
    start: Annotated[str | None, typer.Option(help="ISO start time (inclusive).")] = None,
    end: Annotated[str | None, typer.Option(help="ISO end time (exclusive).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Embedded store (when no Kafka is configured).")] = None,
    marketcaps: Annotated[bool, typer.Option(help="Also load the market-cap history (tokens and total).")] = True,
    from_exchange: Annotated[
        str | None,
        typer.Option(
            help="Fetch candles from this venue's REST API instead (a name TOKENPULSE_FEED_EXCHANGES takes, "
            "e.g. okx or ccxt:gate); default window: the last 24 hours."
        ),
    ] = None,
    csv_file: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="Load this candle CSV instead (embedded store): one symbol (--symbols) and one interval "
            "(--intervals); columns date, open_time_utc or ts (epoch ms/µs), open, high, low, close[, volume, trades].",
        ),
    ] = None,
    source: Annotated[str, typer.Option(help="The source recorded for a --csv file's candles.")] = "csv",
) -> None:
    """Load bundled history (or, with --from-exchange, an exchange's candles; with --csv, a file) into the store.

    To Kafka when TOKENPULSE_KAFKA_BOOTSTRAP is set (as candle events), else into the embedded store by the
    columnar path (rows failing validation are counted and written to backfill-rejected.csv in the data dir)."""
    settings = load_settings(store={"data_dir": data_dir.resolve() if data_dir else None})
    try:
        wanted_intervals = [Interval(i.strip()) for i in intervals.split(",")] if intervals else None
        start_ms, end_ms = _parse_day(start), _parse_day(end)
        if from_exchange is not None:
            from tokenpulse_ingest.venues.registry import venue

            venue(from_exchange)  # an unknown name is a bad option
    except ValueError as exc:
        console.print(f"[red]bad option:[/red] {exc}")
        raise typer.Exit(2) from exc
    wanted = [s.strip().upper() for s in symbols.split(",")] if symbols else settings.runtime.symbols
    if csv_file is not None:
        if len(wanted) != 1 or not wanted_intervals or len(wanted_intervals) != 1 or settings.bus.kafka_bootstrap:
            console.print("[red]bad option:[/red] --csv takes one --symbols, one --intervals and the embedded store")
            raise typer.Exit(2)
        file = (csv_file, wanted[0], wanted_intervals[0], source)
        asyncio.run(_backfill_columnar(settings, wanted, None, None, None, False, csv_file=file))
        return
    if from_exchange:
        asyncio.run(_backfill_rest(settings, from_exchange, wanted, wanted_intervals, start_ms, end_ms))
        return
    asyncio.run(_backfill(settings, wanted, wanted_intervals, start_ms, end_ms, marketcaps))


async def _backfill_rest(
    settings: Settings,
    exchange: str,
    symbols: list[str],
    intervals: list[Interval] | None,
    start_ms: int | None,
    end_ms: int | None,
) -> None:
    from tokenpulse_ingest.rest.client import RestError
    from tokenpulse_ingest.rest_backfill import RestBackfiller
    from tokenpulse_shared.bus.memory import InMemoryBus

    now = datetime.now(UTC)
    until = datetime.fromtimestamp(end_ms / 1000, UTC) if end_ms is not None else now
    since = datetime.fromtimestamp(start_ms / 1000, UTC) if start_ms is not None else until - timedelta(days=1)
    bus, store, target = await _pipeline_target(settings, "backfill")
    # an explicit window is fetched whole (TOKENPULSE_REST_BACKFILL_MAX_BARS caps the automatic backfills)
    # into the embedded store by the columnar path (store is None when the target is Kafka: events then)
    backfiller = RestBackfiller(bus, settings, intervals=intervals or tuple(Interval), max_bars=10**9, store=store)
    failed: list[str] = []
    total = 0
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(label: str, done: int, of: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=of)
            progress.update(tasks[label], completed=done, total=of)

        for symbol in symbols:
            try:
                result = await backfiller.backfill_gap(exchange, symbol, since, until, progress=on_progress)
                total += result.total
            except (RestError, ValueError) as exc:
                failed.append(f"{symbol}: {exc}")
        if isinstance(bus, InMemoryBus):
            await bus.drain(timeout=600)
    await backfiller.aclose()
    await bus.stop()
    if store is not None:
        await store.close()
    console.print(f"backfilled {total} candles from {exchange} into {target}")
    if failed:
        console.print("[red]failed:[/red]\n" + "\n".join(failed))
        raise typer.Exit(1)


async def _pipeline_target(settings: Settings, client: str) -> tuple[Any, Any, str]:
    """Where loaded data goes: Kafka when configured, else the embedded store through the store writer."""
    from tokenpulse_shared.bus.memory import InMemoryBus
    from tokenpulse_shared.service import Context
    from tokenpulse_shared.store import Store

    from tokenpulse.runtime import make_kafka_bus

    if settings.bus.kafka_bootstrap:
        bus = make_kafka_bus(settings, client)
        await bus.start()
        return bus, None, f"Kafka at {settings.bus.kafka_bootstrap}"
    from tokenpulse_gateway.writer import StoreWriter

    try:
        store = await Store(settings.store.dsn).open()
    except Exception as exc:
        console.print(
            f"[red]cannot open {settings.store.where}:[/red] {exc}\n"
            "Is `tokenpulse up` running on this data dir? Stop it first, or point at Kafka."
        )
        raise typer.Exit(1) from exc
    bus = InMemoryBus()
    StoreWriter(store).register(Context(settings=settings, bus=bus, store=store, embedded=True))
    await bus.start()
    return bus, store, f"embedded store {settings.store.where}"


@app.command("import-metrics")
def import_metrics(
    path: Annotated[Path, typer.Argument(help="CSV: date,symbol and any of tvl_usd,staking_ratio,etf_net_flow_usd")],
    source: Annotated[str, typer.Option(help="Where the numbers come from (kept with each row).")] = "csv",
    data_dir: Annotated[Path | None, typer.Option(help="Embedded store (when no Kafka is configured).")] = None,
) -> None:
    """Import fundamental metrics for the Investor Grade (validated; bad rows are listed, none is loaded)."""
    import csv
    from datetime import date as date_cls

    from pydantic import ValidationError
    from tokenpulse_shared.events import KNOWN_METRICS, MetricsEvent

    settings = load_settings(store={"data_dir": data_dir.resolve() if data_dir else None})
    if not path.exists():
        console.print(f"[red]no such file:[/red] {path}")
        raise typer.Exit(2)
    events, errors = [], []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"date", "symbol"} - set(reader.fieldnames or [])
        unknown = set(reader.fieldnames or []) - {"date", "symbol"} - set(KNOWN_METRICS)
        if missing or unknown:
            console.print(
                f"[red]bad header:[/red] missing {sorted(missing)}, unknown {sorted(unknown)}; "
                f"metric columns are {', '.join(sorted(KNOWN_METRICS))}"
            )
            raise typer.Exit(2)
        for line, row in enumerate(reader, start=2):
            try:
                day = date_cls.fromisoformat(row["date"])
                metrics = {k: float(v) for k, v in row.items() if k in KNOWN_METRICS and v not in ("", None)}
                events.append(
                    MetricsEvent(
                        symbol=row["symbol"].strip().upper(),
                        ts=datetime(day.year, day.month, day.day, tzinfo=UTC),
                        metrics=metrics,
                        source=source,
                    )
                )
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"]) or "row"
                errors.append(f"line {line}: {where}: {err['msg']}")
            except ValueError as exc:
                errors.append(f"line {line}: {exc}")
    if errors:
        console.print("[red]nothing imported; fix these rows:[/red]\n" + "\n".join(errors[:50]))
        raise typer.Exit(1)
    asyncio.run(_publish_metrics(settings, events))


async def _publish_metrics(settings: Settings, events: list[Any]) -> None:
    from tokenpulse_shared.bus.memory import InMemoryBus
    from tokenpulse_shared.topics import METRICS

    bus, store, target = await _pipeline_target(settings, "import-metrics")
    await bus.publish(METRICS, events)
    if isinstance(bus, InMemoryBus):
        await bus.drain()
    await bus.stop()
    if store is not None:
        await store.close()
    console.print(f"imported {len(events)} metric rows into {target}")


async def _backfill(
    settings: Settings,
    symbols: list[str],
    intervals: list[Interval] | None,
    start_ms: int | None,
    end_ms: int | None,
    marketcaps: bool = True,
) -> None:
    from tokenpulse_ingest.backfill import plan, publish_history, publish_marketcaps
    from tokenpulse_shared.bus.memory import InMemoryBus

    if not settings.bus.kafka_bootstrap:
        await _backfill_columnar(settings, symbols, intervals, start_ms, end_ms, marketcaps)
        return
    series = plan(settings.runtime.bundle_dir, symbols, intervals, start_ms, end_ms)
    total = sum(len(bars) for _, _, bars in series)
    if not total:
        console.print("[yellow]nothing to load for that selection[/yellow]")
        return
    bus, store, target = await _pipeline_target(settings, "backfill")
    done_before: dict[str, int] = {}
    with _progress() as progress:
        task = progress.add_task(f"backfill -> {target}", total=total)

        def on_progress(label: str, done: int, of: int) -> None:
            progress.update(task, advance=done - done_before.get(label, 0))
            done_before[label] = done

        t0 = asyncio.get_running_loop().time()
        result = await publish_history(bus, series, progress=on_progress)
        caps = await publish_marketcaps(bus, settings.runtime.bundle_dir, symbols) if marketcaps else 0
        if isinstance(bus, InMemoryBus):
            await bus.drain(timeout=600)
        elapsed = asyncio.get_running_loop().time() - t0
    await bus.stop()
    if store is not None:
        await store.close()
    console.print(
        f"loaded {result.candles} candles in {len(series)} series in {elapsed:.1f}s "
        f"({result.candles / max(elapsed, 1e-9):,.0f} rows/s); rejected {result.rejected}; "
        f"{caps} market-cap points"
    )


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


async def _backfill_columnar(
    settings: Settings,
    symbols: list[str],
    intervals: list[Interval] | None,
    start_ms: int | None,
    end_ms: int | None,
    marketcaps: bool,
    csv_file: tuple[Path, str, Interval, str] | None = None,
) -> None:
    """Into the embedded store: the columnar path (Arrow, vectorised validation, insert_arrow)."""
    from tokenpulse_ingest.backfill import publish_marketcaps
    from tokenpulse_ingest.bulk import load_bundle, load_csv
    from tokenpulse_ingest.bundle import Selection

    bus, store, target = await _pipeline_target(settings, "backfill")
    with _progress() as progress:
        task = progress.add_task(f"backfill -> {target}", total=None)

        def on_progress(label: str, done: int, of: int) -> None:
            progress.update(task, completed=done, total=of)

        t0 = asyncio.get_running_loop().time()
        if csv_file is not None:
            path, symbol, interval, source = csv_file
            result = await load_csv(store, path, symbol, interval, source, progress=on_progress)
        else:
            selection = Selection(symbols, intervals, start_ms, end_ms)
            result = await load_bundle(store, settings.runtime.bundle_dir, selection, progress=on_progress)
        elapsed = asyncio.get_running_loop().time() - t0
        caps = await publish_marketcaps(bus, settings.runtime.bundle_dir, symbols) if marketcaps and not csv_file else 0
        await bus.drain(timeout=600)
    await bus.stop()
    await store.close()
    console.print(
        f"loaded {result.candles} candles in {result.series} series in {elapsed:.1f}s "
        f"({result.candles / max(elapsed, 1e-9):,.0f} rows/s); rejected {result.rejected}; {caps} market-cap points"
    )
    if result.rejected:
        errors = settings.store.data_dir / "backfill-rejected.csv"
        result.rejects.write(errors)
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(result.rejects.reasons.items()))
        console.print(f"[yellow]rejected rows ({reasons}) written to {errors}[/yellow]")


@app.command()
def cycles(
    as_of: Annotated[str | None, typer.Option(help="Use history up to this day only (YYYY-MM-DD).")] = None,
    basis: Annotated[str, typer.Option(help="Runs start at the 'halving' or the cycle 'bottom'.")] = "halving",
    confirm_drawdown: Annotated[float, typer.Option(help="Fall from the high that confirms a peak.")] = 0.75,
) -> None:
    """Bitcoin halving cycles from the bundled history: runs, projection, track record, altcoin seasons."""
    from datetime import date

    from pydantic import ValidationError
    from tokenpulse_gateway.analytics.cycles import CycleInputError, CycleParams, load_halvings, report

    from tokenpulse.cycles_cli import load_cycle_data, render

    settings = load_settings()
    try:
        params = CycleParams(
            as_of=date.fromisoformat(as_of) if as_of else None,
            basis=basis,  # type: ignore[arg-type]
            confirm_drawdown=confirm_drawdown,
        )
        result = report(
            load_halvings(settings.runtime.bundle_dir / "btc_cycles.json"),
            load_cycle_data(settings.runtime.bundle_dir),
            params,
        )
    except (ValueError, ValidationError, CycleInputError) as exc:
        console.print(f"[red]bad option:[/red] {exc}")
        raise typer.Exit(2) from exc
    render(result, Console())


JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON here.")]


def write_json(path: Path | None, text: str) -> None:
    """Writes a command's report where ``--json`` asked, and says so."""
    if path:
        path.write_text(text)
        console.print(f"wrote {path}")


@app.command("track-record")
def track_record_cmd(json_out: JsonOut = None) -> None:
    """Replay the bundled daily history through scoring and measure signals and grades (walk-forward)."""
    from tokenpulse.track_cli import render, replay

    settings = load_settings()
    report = replay(settings.runtime.bundle_dir, settings.runtime.symbols)
    render(report, Console())
    write_json(json_out, report.model_dump_json(indent=2))


@app.command("market-record")
def market_record_cmd(json_out: JsonOut = None) -> None:
    """Replay the bundled daily history, compute every day's market state (walk-forward) and measure it."""
    from tokenpulse.market_cli import market_record, render

    settings = load_settings()
    records = market_record(settings.runtime.bundle_dir, settings.runtime.symbols)
    render(records, Console())
    write_json(json_out, json.dumps([r.model_dump(mode="json") for r in records], indent=2) + "\n")


@app.command()
def mcp(
    base_url: Annotated[str, typer.Option(help="The Tokenpulse API to call.")] = "http://127.0.0.1:8000",
) -> None:
    """Serve the API to AI agents over stdio (Model Context Protocol); the key is TOKENPULSE_API_KEY."""
    from tokenpulse_client.mcp_server import run as serve_mcp

    serve_mcp(base_url)


@app.command()
def schemas(
    check: Annotated[bool, typer.Option(help="Fail if the committed schemas are out of date.")] = False,
) -> None:
    """Write the topics' JSON Schemas and AsyncAPI document to docs/schemas (or check them)."""
    from tokenpulse_shared import schemas as sch

    if check:
        stale = sch.drift()
        if stale:
            console.print(f"[red]schemas out of date:[/red] {', '.join(stale)}; run `tokenpulse schemas`")
            raise typer.Exit(1)
        console.print("schemas up to date")
        return
    for name in sch.write():
        console.print(f"wrote docs/schemas/{name}")


@app.command()
def config(markdown: Annotated[bool, typer.Option(help="Print Markdown tables (for the docs).")] = False) -> None:
    """Print every setting, section by section: its environment variable, default and meaning."""
    if markdown:
        print_markdown()
    else:
        print_table()


if __name__ == "__main__":
    app()
