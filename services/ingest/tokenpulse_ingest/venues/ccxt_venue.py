"""Any exchange ccxt knows, as a venue: ``ccxt:<exchange id>`` (``ccxt:gate``, ``ccxt:bitstamp``, ...).

ccxt (https://github.com/ccxt/ccxt, MIT) speaks the REST API of 100+ exchanges and, through its
``ccxt.pro`` module (free, in the same package), their WebSockets: the long tail of venues without
a native connector here. Pairs are ccxt's unified symbols (``BTC/USDT``).

Live: ``watch_trades`` (ccxt.pro) where the exchange has it and ``TOKENPULSE_CCXT_WATCH`` is on;
else ``fetch_trades`` polled every ``TOKENPULSE_CCXT_POLL_S`` with ``since`` = the last trade seen.
Both through the connector machinery: dedupe by trade id, strict trades (no id, time, price,
size or side: a bad message), reconnect with backoff after any failure (reported as a gap),
stall detection: watching, no trade on any pair for ``stall_s`` (ccxt hides heartbeats, so a
quiet market looks like a stall and costs a reconnect and a backfill); polling, no answer.

What holds and what does not: ids are exchange-specific strings, not known to be consecutive, so
there is no trade-id gap detection; watching, ccxt buffers trades between two calls and drops
the oldest beyond ``tradesLimit`` (1000) unnoticed. Polling, a full page (``POLL_LIMIT`` trades)
that does not reach back to the last trade seen reveals a hole (reported as a gap from that
trade to the page's oldest); an exchange that answers fewer trades than asked per page can hide
one. Rate limits: ccxt's own (``enableRateLimit``: its per-exchange request spacing).

History: ``fetch_ohlcv`` (the exchange's candle endpoint, paged by ``since``); intervals the
exchange lacks are rolled up from a finer one by :class:`CandleApi`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import cache
from typing import Any, ClassVar, cast

from tokenpulse_shared.batches import from_epoch_us
from tokenpulse_shared.events import Interval, Side
from tokenpulse_shared.settings import CcxtSettings, Settings

from tokenpulse_ingest.bundle import Bar
from tokenpulse_ingest.rest.client import CallStats, RestClient, RestError, Sleep
from tokenpulse_ingest.venues.connector import RECONNECTS, BadMessage, Connector, Row, side_of
from tokenpulse_ingest.venues.history import CandleApi, PageHook
from tokenpulse_ingest.venues.spec import AnyVenue, ListingError, Listings, PairNaming, Venue, by_base

log = logging.getLogger("tokenpulse_ingest.venues")
PREFIX = "ccxt:"
POLL_LIMIT = 1000  # trades asked per poll
_SIDES = {"buy": Side.BUY, "sell": Side.SELL}
_INTERVALS = {
    Interval.M1: "1m",
    Interval.M5: "5m",
    Interval.M15: "15m",
    Interval.H1: "1h",
    Interval.H4: "4h",
    Interval.D1: "1d",
}


def exchange_ids() -> list[str]:
    import ccxt

    return list(ccxt.exchanges)


def _point_at(urls: Any, base: str) -> Any:
    """Every URL of a ccxt ``urls['api']`` tree replaced by ``base`` (a mirror, a test server)."""
    if isinstance(urls, dict):
        return {k: _point_at(v, base) for k, v in urls.items()}
    return base if isinstance(urls, str) else urls


def make_exchange(exchange_id: str, *, pro: bool, rest_url: str = "", ws_url: str = "") -> Any:
    """A ccxt (or ccxt.pro) exchange with ccxt's rate limiting on and, when given, its URLs replaced."""
    import ccxt.async_support
    import ccxt.pro

    module: Any = ccxt.pro if pro else ccxt.async_support
    exchange = getattr(module, exchange_id)({"enableRateLimit": True})
    api = exchange.urls.get("api")
    if rest_url and isinstance(api, dict):
        exchange.urls["api"] = {k: (v if k == "ws" else _point_at(v, rest_url)) for k, v in api.items()}
    elif rest_url:
        exchange.urls["api"] = rest_url
    if ws_url and isinstance(exchange.urls.get("api"), dict) and "ws" in exchange.urls["api"]:
        exchange.urls["api"]["ws"] = _point_at(exchange.urls["api"]["ws"], ws_url)
    return exchange


class CcxtConnector(Connector):
    """Live trades of one ccxt exchange: ccxt.pro's ``watch_trades``, else polled ``fetch_trades``."""

    exchange_id: ClassVar[str] = ""

    def __init__(
        self, url: str, pairs: Any, sink: Any, *, poll_s: float = 2.0, watch: bool = True, rest_url: str = "", **kw: Any
    ) -> None:
        super().__init__(url, pairs, sink, **kw)
        self.poll_s, self.watch, self.rest_url = poll_s, watch, rest_url
        self._since: dict[str, int] = {}  # per venue pair: the newest trade time seen (ms), where a poll resumes
        self._unlisted: set[str] = set()  # venue pairs already said to be missing from the exchange's markets
        self.mode = ""

    def endpoint(self) -> str:
        return self.url or self.name

    def subscriptions(self) -> list[str]:
        return []

    def parse(self, raw: str | bytes) -> None:
        raise BadMessage("not_a_frame")  # ccxt hands over decoded trades: see :meth:`ticks`

    def ticks(self, trades: list[dict[str, Any]]) -> list[Row]:
        """ccxt's unified trades → rows; a trade missing a required field is counted as a bad message, skipped."""
        self.health.last_message = time.monotonic()
        self._unflushed_messages += 1
        for trade in trades:
            try:
                self._add(trade)
            except BadMessage as exc:
                self.bad(exc.kind, str(exc))
        return self.take_rows()

    def _add(self, t: dict[str, Any]) -> None:
        maker = self.maker_for(str(t.get("symbol")))
        ident, ms, price, size = t.get("id"), t.get("timestamp"), t.get("price"), t.get("amount")
        if ident is None or str(ident) == "":
            raise BadMessage("missing_field", "id")
        if not isinstance(ms, int) or isinstance(ms, bool):
            raise BadMessage("missing_field", "timestamp")
        if not isinstance(price, int | float) or not isinstance(size, int | float):
            raise BadMessage("missing_field", "price or amount")
        side = side_of(_SIDES, str(t.get("side")))
        venue = str(t["symbol"])
        self._since[venue] = max(ms, self._since.get(venue, 0))
        self.time_seen(maker.symbol, ms * 1000)  # where a reconnect's gap starts
        maker.add(ms * 1000, float(price), float(size), side, str(ident))

    async def run(self) -> None:
        """Watch (or poll) until cancelled; any failure closes the exchange, waits the backoff, starts again."""
        attempt = 0
        while True:
            pro = self.watch
            exchange = make_exchange(self.exchange_id, pro=pro, rest_url=self.rest_url, ws_url=self.url)
            try:
                await exchange.load_markets()
                listed = self._listed(exchange.markets)
                self.mode = "watch" if pro and exchange.has.get("watchTrades") else "poll"
                self._on_connected()
                attempt = 0
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._watchdog())
                    for venue in listed:
                        group.create_task(self._follow(exchange, venue))
            except asyncio.CancelledError:
                self._on_disconnected(None)
                raise
            except Exception as exc:  # ccxt's network, exchange and stall errors alike: reconnect
                reason = "stall" if isinstance(exc, ExceptionGroup) and exc.subgroup(TimeoutError) else "closed"
                reason = reason if self.health.connected else "connect_failed"
                cause = first_cause(exc)
                self._on_disconnected(f"{type(cause).__name__}: {str(cause)[:200]}")
                RECONNECTS.labels(self.name, reason).inc()
                self.health.reconnects += 1
            finally:
                await exchange.close()
            delay = min(self.backoff_max_s, self.backoff_s * 2**attempt)
            attempt = min(attempt + 1, 30)
            await asyncio.sleep(delay / 2 + self.rng.uniform(0, delay / 2))

    def _listed(self, markets: dict[str, Any]) -> list[str]:
        """The venue pairs the exchange lists; ccxt refuses any other, so each is said once and not followed."""
        for pair in self.pairs:
            if pair.venue not in markets and pair.venue not in self._unlisted:
                self._unlisted.add(pair.venue)
                log.warning(
                    "%s does not list %s: %s is not followed there (map it with TOKENPULSE_FEED_PAIRS=%s:%s=PAIR)",
                    self.name, pair.venue, pair.symbol, self.name, pair.symbol,
                )  # fmt: skip
        listed = [p.venue for p in self.pairs if p.venue in markets]
        if not listed:
            raise LookupError(f"{self.name} lists none of the {len(self.pairs)} pairs asked for")
        return listed

    async def _watchdog(self) -> None:
        """A stall: nothing from the exchange (a trade watched, an answer polled) for ``stall_s``."""
        while True:
            await asyncio.sleep(min(1.0, self.stall_s / 4))
            if (self.health.age() or 0.0) > self.stall_s:
                self.health.stalls += 1
                log.warning("%s: nothing received for %.0fs: reconnecting", self.name, self.stall_s)
                raise TimeoutError(f"nothing received for {self.stall_s:.0f}s")

    async def _follow(self, exchange: Any, venue: str) -> None:
        while True:
            if self.mode == "watch":
                trades = await exchange.watch_trades(venue)
            else:
                await asyncio.sleep(self.poll_s)
                trades = await self._poll(exchange, venue)
            rows = self.ticks(trades)
            if self._pending_gaps:
                self._flush_gaps()
            await self.deliver(rows)

    async def _poll(self, exchange: Any, venue: str) -> list[dict[str, Any]]:
        since = self._since.get(venue)
        trades: list[dict[str, Any]] = await exchange.fetch_trades(venue, since=since, limit=POLL_LIMIT)
        self.health.last_message = time.monotonic()  # an answer, trades or not: the exchange is there
        full = len(trades) >= POLL_LIMIT
        if since is not None and full and min(t.get("timestamp") or 0 for t in trades) > since:
            maker = self.makers[venue]
            first = from_epoch_us(min(t["timestamp"] for t in trades) * 1000)
            self._gap(maker.symbol, from_epoch_us(since * 1000), first, "poll_page")  # the page stops short of ours
        return trades


def first_cause(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups: what a task group's failure was about."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class CcxtRest:
    """A ccxt exchange behind a venue's candle history, with what the backfill reads of a REST client."""

    def __init__(self, exchange: Any) -> None:
        self.exchange = exchange
        self.stats = CallStats()

    async def aclose(self) -> None:
        await self.exchange.close()


class CcxtCandles(CandleApi):
    quote = "USDT"
    page_limit = 500
    exchange_id: ClassVar[str] = ""

    async def _fetch_native(
        self, symbol: str, interval: Interval, start_ms: int, end_ms: int, on_page: PageHook | None
    ) -> list[Bar]:
        exchange = cast(CcxtRest, self.client).exchange
        out: list[Bar] = []
        cursor = start_ms
        while cursor < end_ms:
            self.client.stats.requests += 1
            try:
                rows = await exchange.fetch_ohlcv(self.pair(symbol), self.native[interval], cursor, self.page_limit)
            except Exception as exc:
                raise RestError(f"{self.name} fetch_ohlcv: {type(exc).__name__}: {str(exc)[:200]}") from exc
            page = [_bar(r, self.name) for r in rows if cursor <= r[0] < end_ms]
            out.extend(page)
            if on_page:
                on_page(len(page))
            if not page or rows[-1][0] + interval.millis <= cursor:
                break
            cursor = int(rows[-1][0]) + interval.millis
        return out


def _bar(r: list[Any], name: str) -> Bar:
    return Bar(int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]), name)


LISTING_QUOTES = ("USDT", "USD", "USDC")


async def listings(client: RestClient) -> Listings:
    """ccxt's ``load_markets()`` (the exchange's own listing endpoints, read and unified by ccxt): the spot
    markets ccxt does not mark inactive, by ccxt's unified base and symbol (``BTC/USDT``)."""
    exchange = cast(CcxtRest, client).exchange
    try:
        markets = await exchange.load_markets()
    except Exception as exc:
        raise RestError(f"{exchange.id} load_markets: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if not isinstance(markets, dict):
        raise ListingError(f"{exchange.id} load_markets: not a table of markets")
    rows = [
        (m["base"], m["quote"], m["symbol"])
        for m in markets.values()
        if isinstance(m, dict) and m.get("spot") is True and m.get("active") is not False
        and all(isinstance(m.get(k), str) for k in ("base", "quote", "symbol"))
    ]  # fmt: skip
    return by_base(rows, LISTING_QUOTES)


@cache
def venue_for(name: str) -> AnyVenue:
    """The venue ``ccxt:<id>``; an id ccxt does not know is a configuration error."""
    exchange_id = name.removeprefix(PREFIX)
    if exchange_id not in exchange_ids():
        raise ValueError(f"{name!r}: ccxt knows no exchange {exchange_id!r} (see ccxt.exchanges)")
    attrs = {"name": name, "exchange_id": exchange_id}
    connector = type(f"CcxtConnector_{exchange_id}", (CcxtConnector,), attrs)
    native = {"native": _INTERVALS}
    candles = type(f"CcxtCandles_{exchange_id}", (CcxtCandles,), attrs | native)

    def rest_client(section: CcxtSettings, max_wait_s: float, sleep: Sleep | None) -> RestClient:
        exchange = make_exchange(exchange_id, pro=False, rest_url=section.rest_url)
        return cast(RestClient, CcxtRest(exchange))  # the backfill reads only stats and aclose of it

    def options(settings: Settings) -> dict[str, Any]:
        s = settings.ccxt
        return {"poll_s": s.poll_s, "watch": s.watch, "rest_url": s.rest_url}

    return Venue(
        name, connector=connector, candles=candles, rest_client=rest_client, section=lambda s: s.ccxt,
        pairs=PairNaming("{symbol}/USDT", r"^[A-Z0-9]+/([A-Z0-9]+)(?::[A-Z0-9]+)?$"), options=options,
        listings=listings,
    )  # fmt: skip
