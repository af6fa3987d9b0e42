"""Reconciliation: one reference price per token from the latest quotes of several sources.

For every token the reconciler keeps, per source (exchange), the latest trade
price converted to USD, the exchange time of that trade and a decayed USD
volume. On every update (a batch of ticks) and on a timer it computes:

1. **Clock.** ``now = newest tick time + wall seconds since that tick arrived``: event time
   while ticks flow (replays work), advancing with the wall clock when they stop (a silent
   source ages even when no tick arrives).
2. **Normalise.** ``p_usd = p x rate(quote)``; ``rate(USD) = 1``; ``rate(USDT)`` and
   ``rate(USDC)`` are the reconciled USDT/USD (USDC/USD) price when ticks of that pair are
   fresh, else the configured assumption (``TOKENPULSE_USDT_USD_RATE``, default 1.0). Ticks
   in any other quote are rejected (counted in ``rejected_quotes``).
3. **Fresh.** ``age_i = now - ts_i``; a source is stale when ``age_i > stale_after_s``.
4. **Outliers.** With ``m = median(p)``, ``MAD = median(|p_i - m|)`` over the fresh sources
   and ``n >= 3``: a source is an outlier when ``|p_i - m| > max(k x 1.4826 x MAD, floor x m)``
   (``k`` = ``outlier_k``, 3; ``floor`` = ``outlier_floor``, 0.5 %; the floor keeps sources
   agreeing to a few basis points from rejecting each other). With two sources nothing can
   be told apart, both are kept.
5. **Weights.** ``w_i = max(v_i, eps) x 2^(-age_i / half_life)``, ``v_i`` the source's USD
   volume decayed with time constant ``volume_tau_s`` (``eps`` gives sources without sizes
   equal volume). Reference ``P = sum(w_i p_i) / sum(w_i)`` over the kept sources (math.fsum,
   sorted by source: the result does not depend on the order ticks arrived in, and lies
   within [min, max] of the kept sources).
6. **Stale.** When no fresh source is left the token's last reference price is published
   once with ``stale=True`` and no sources (from :meth:`sweep`, the timer); the next fresh
   tick publishes a normal price again (``stale=False``).

``prev_price`` is always the previously published reference price of the token, so the
alerts service decides a crossing from one event (after a restart or a takeover by another
ingest replica, :meth:`PriceReconciler.replay` rebuilds the quotes from the ticks counted;
``prev_price`` is then the last price computed in that replay).

Each ingest replica holds the tokens of its ticks partitions. A USDT- or USDC-quoted tick
is converted with the stablecoin's reconciled price only where that stablecoin's own ticks
are held (its partition's owner); elsewhere with the configured assumption.

Live and synthetic quotes are never mixed: the first live tick of a token drops its
``synthetic`` source (``auto`` mode switching back from its synthetic fallback), and a
synthetic tick for a token that has a live source is ignored (counted in ``superseded``).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tokenpulse_shared.batches import TickBatch, chunked, epoch_us, from_epoch_us, price_row_id
from tokenpulse_shared.checkpoints import CheckpointPrice, CheckpointQuote
from tokenpulse_shared.events import PriceEvent, TickEvent

from tokenpulse_ingest.synthetic import SYNTHETIC

MAD_SCALE = 1.4826  # MAD of a normal distribution -> its standard deviation
VOLUME_EPS = 1e-9
STABLE_QUOTES = ("USDT", "USDC")


def price_event_id(
    symbol: str, at: datetime, price: float, sources: Iterable[str], stale: bool, prev: float | None
) -> str:
    """Deterministic: the same reconciled price published again (ticks redelivered after a restart)
    is the same event; a different price, source set or staleness at the same time is another. The id a
    ``tokenpulse.prices.v2`` row of it has (:func:`price_row_id`, exact microseconds)."""
    return price_row_id(symbol, epoch_us(at), price, tuple(sources), stale, prev)


def tie_breaks(trade_ids: Sequence[str | None], keys: Sequence[str]) -> list[tuple[str, str]]:
    """The ``ids`` of :meth:`PriceReconciler.update_rows` for rows with these trade ids and dedup keys."""
    return [(tid or "", key) for tid, key in zip(trade_ids, keys, strict=True)]


@dataclass(slots=True)
class SourceQuote:
    price_usd: float
    ts: float  # exchange time of the latest trade, epoch seconds
    volume_usd: float  # decayed USD volume
    vol_ts: float  # time the volume was last decayed to


@dataclass
class _Token:
    sources: dict[str, SourceQuote] = field(default_factory=dict)
    newest_ts: float = 0.0  # newest tick time seen
    newest_wall: float = 0.0  # wall time it arrived
    published: float | None = None
    stale: bool = False

    def now(self, wall: float) -> float:
        return self.newest_ts + max(0.0, wall - self.newest_wall)


@dataclass(frozen=True)
class Reference:
    price: float
    used: tuple[str, ...]
    outliers: tuple[str, ...]
    stale_sources: tuple[str, ...]


def reconcile(
    quotes: dict[str, SourceQuote],
    now: float,
    *,
    stale_after_s: float = 30.0,
    half_life_s: float = 10.0,
    volume_tau_s: float = 300.0,
    outlier_k: float = 3.0,
    outlier_floor: float = 0.005,
) -> Reference | None:
    """The reference price of one token from its sources' latest quotes (None: no fresh source)."""
    fresh: list[tuple[str, float, float, float]] = []  # (source, price, age, volume now)
    stale = []
    for name in sorted(quotes):
        q = quotes[name]
        age = max(0.0, now - q.ts)
        if age > stale_after_s:
            stale.append(name)
            continue
        volume = q.volume_usd * math.exp(-max(0.0, now - q.vol_ts) / volume_tau_s)
        fresh.append((name, q.price_usd, age, volume))
    if not fresh:
        return None
    outliers: list[str] = []
    if len(fresh) >= 3:
        prices = [p for _, p, _, _ in fresh]
        m = statistics.median(prices)
        mad = statistics.median([abs(p - m) for p in prices])
        limit = max(outlier_k * MAD_SCALE * mad, outlier_floor * m)
        outliers = [name for name, p, _, _ in fresh if abs(p - m) > limit]
        fresh = [row for row in fresh if row[0] not in outliers]
    weights = [max(v, VOLUME_EPS) * 2.0 ** (-age / half_life_s) for _, _, age, v in fresh]
    total = math.fsum(weights)
    price = math.fsum(w * p for w, (_, p, _, _) in zip(weights, fresh, strict=True)) / total
    lo, hi = min(p for _, p, _, _ in fresh), max(p for _, p, _, _ in fresh)
    price = min(max(price, lo), hi)  # rounding can step a hair outside the kept range
    return Reference(price, tuple(name for name, *_ in fresh), tuple(outliers), tuple(stale))


def all_quiet(quotes: dict[str, SourceQuote], now: float, stale_after_s: float) -> bool:
    """Whether :func:`reconcile` finds no fresh source (returns None), without reconciling: the timer asks it
    of every token each second."""
    return all(now - q.ts > stale_after_s for q in quotes.values())


class PriceReconciler:
    """Keeps every token's per-source quotes; ``update`` on ticks, ``sweep`` on a timer."""

    def __init__(
        self,
        stale_after_s: float = 30.0,
        *,
        half_life_s: float = 10.0,
        volume_tau_s: float = 300.0,
        outlier_k: float = 3.0,
        outlier_floor: float = 0.005,
        usdt_usd_rate: float = 1.0,
    ) -> None:
        self.stale_after_s = stale_after_s
        self.params = {
            "stale_after_s": stale_after_s,
            "half_life_s": half_life_s,
            "volume_tau_s": volume_tau_s,
            "outlier_k": outlier_k,
            "outlier_floor": outlier_floor,
        }
        self.assumed_rates = {"USD": 1.0, "USDT": usdt_usd_rate, "USDC": 1.0}
        self._tokens: dict[str, _Token] = {}
        self.rejected_quotes = 0
        self.superseded = 0  # synthetic ticks ignored because the token has live sources
        self.last: dict[str, Reference] = {}  # the latest reference per token (sources used, outliers)

    def empty_like(self) -> PriceReconciler:
        """A reconciler with this one's parameters and no tokens (to restore a partition's symbols into)."""
        other = PriceReconciler(self.stale_after_s)
        other.params, other.assumed_rates = dict(self.params), dict(self.assumed_rates)
        return other

    def symbols(self) -> set[str]:
        return set(self._tokens)

    def drop(self, symbols: set[str]) -> None:
        """Forget ``symbols`` (their partition went to another replica)."""
        for symbol in symbols:
            self._tokens.pop(symbol, None)
            self.last.pop(symbol, None)

    def adopt(self, other: PriceReconciler) -> None:
        """Take over ``other``'s tokens (a partition restored apart)."""
        self._tokens.update(other._tokens)
        self.last.update(other.last)

    def export(self, symbols: Iterable[str]) -> list[CheckpointPrice]:
        """A copy of the state of ``symbols`` (a checkpoint of their partition)."""
        out = []
        for symbol in sorted(set(symbols) & set(self._tokens)):
            token = self._tokens[symbol]
            sources = [
                CheckpointQuote(source=name, price_usd=q.price_usd, ts=q.ts, volume_usd=q.volume_usd, vol_ts=q.vol_ts)
                for name, q in sorted(token.sources.items())
            ]
            out.append(
                CheckpointPrice(
                    symbol=symbol,
                    newest_ts=token.newest_ts,
                    newest_wall=token.newest_wall,
                    published=token.published,
                    stale=token.stale,
                    sources=sources,
                )
            )
        return out

    def load(self, prices: Iterable[CheckpointPrice], wall: float | None = None) -> None:
        """Take the state :meth:`export` made; each token's last reference is computed again from its quotes."""
        wall = time.time() if wall is None else wall
        for p in prices:
            sources = {q.source: SourceQuote(q.price_usd, q.ts, q.volume_usd, q.vol_ts) for q in p.sources}
            token = self._tokens[p.symbol] = _Token(sources, p.newest_ts, p.newest_wall, p.published, p.stale)
            ref = None if p.stale else reconcile(token.sources, token.now(wall), **self.params)
            if ref is not None:
                self.last[p.symbol] = ref

    def replay(self, ticks: Iterable[TickEvent], wall: float | None = None, batch: int = 500) -> int:
        """Rebuild the quotes from ticks already counted, in their order on the bus, publishing nothing: the
        sources, volumes and last reference come out as the previous owner left them. Returns the ticks."""
        wall = time.time() if wall is None else wall
        n = 0
        for chunk in chunked(ticks, batch):
            self.update(chunk, wall)
            n += len(chunk)
        return n

    def rate(self, quote: str, wall: float) -> float | None:
        """USD per unit of ``quote``: the reconciled stablecoin price when fresh, else the assumption."""
        if quote == "USD":
            return 1.0
        token = self._tokens.get(quote)
        if token is not None and quote in STABLE_QUOTES:
            ref = reconcile(token.sources, token.now(wall), **self.params)
            if ref is not None:
                return ref.price
        return self.assumed_rates.get(quote)

    def update(self, ticks: list[TickEvent], wall: float | None = None) -> list[PriceEvent]:
        """:meth:`update_rows` for per-trade events."""
        return self.update_rows(
            [t.symbol for t in ticks],
            [t.source for t in ticks],
            [epoch_us(t.ts) for t in ticks],
            [t.price for t in ticks],
            [t.size for t in ticks],
            [t.quote for t in ticks],
            [(t.trade_id or "", t.event_id) for t in ticks],
            wall,
        )

    def update_batch(self, batch: TickBatch, wall: float | None = None) -> list[PriceEvent]:
        """:meth:`update_rows` for the rows of a ``tokenpulse.ticks.v2`` batch."""
        b = batch
        ids = tie_breaks(b.trade_id, b.dedup_keys())
        return self.update_rows(b.symbol, b.source, b.ts_us, b.price, b.size, b.quote, ids, wall)

    def update_rows(
        self,
        symbols: Sequence[str],
        sources: Sequence[str],
        ts_us: Sequence[int],
        prices: Sequence[float],
        sizes: Sequence[float],
        quotes: Sequence[str],
        ids: Sequence[tuple[str, str]],
        wall: float | None = None,
    ) -> list[PriceEvent]:
        """Trades given column by column (``ids``: (trade id, identity), breaking ties of time and source);
        one price per token touched, at the newest exchange time among its trades here."""
        wall = time.time() if wall is None else wall
        touched: dict[str, int] = {}
        # in event-time order (ties by trade id): a batch gives the same result whatever its order
        for i in sorted(range(len(symbols)), key=lambda i: (ts_us[i], sources[i], ids[i])):
            symbol, t_us = symbols[i], ts_us[i]
            counted = self._quote(symbol, sources[i], t_us / 1_000_000, prices[i], sizes[i], quotes[i], wall)
            if counted and t_us > touched.get(symbol, t_us - 1):
                touched[symbol] = t_us
        out = []
        for symbol, at_us in touched.items():
            token = self._tokens[symbol]
            ref = reconcile(token.sources, token.now(wall), **self.params)
            if ref is None:  # only old ticks arrived: nothing fresh to publish
                out.extend(self._stale(symbol, token, wall))
                continue
            self.last[symbol] = ref
            out.append(
                PriceEvent(
                    event_id=price_row_id(symbol, at_us, ref.price, ref.used, False, token.published),
                    symbol=symbol,
                    ts=from_epoch_us(at_us),
                    price=ref.price,
                    sources=list(ref.used),
                    stale=False,
                    prev_price=token.published,
                )
            )
            token.published, token.stale = ref.price, False
        return out

    def _quote(self, symbol: str, source: str, ts: float, price: float, size: float, quote: str, wall: float) -> bool:
        """One trade into its token's quote of ``source``; False when it is not counted (quote, synthetic)."""
        rate = self.rate(quote, wall)
        if rate is None:
            self.rejected_quotes += 1
            return False
        token = self._tokens.setdefault(symbol, _Token())
        if source == SYNTHETIC:
            if any(name != SYNTHETIC for name in token.sources):
                self.superseded += 1
                return False
        elif SYNTHETIC in token.sources:
            del token.sources[SYNTHETIC]  # live trades flow: the synthetic quote leaves for good
        price_usd = price * rate
        q = token.sources.get(source)
        if q is None:
            token.sources[source] = SourceQuote(price_usd, ts, size * price_usd, ts)
        else:
            tau = self.params["volume_tau_s"]
            decay_to = max(q.vol_ts, ts)
            q.volume_usd = q.volume_usd * math.exp(-(decay_to - q.vol_ts) / tau)
            q.volume_usd += size * price_usd * math.exp(-(decay_to - ts) / tau)
            q.vol_ts = decay_to
            if ts >= q.ts:  # an older trade (out of order) adds volume but not a price
                q.price_usd, q.ts = price_usd, ts
        if ts >= token.newest_ts:
            token.newest_ts, token.newest_wall = ts, wall
        return True

    def sweep(self, wall: float | None = None) -> list[PriceEvent]:
        """Timer: tokens whose every source has gone quiet get one ``stale=True`` price."""
        wall = time.time() if wall is None else wall
        out = []
        for symbol, token in self._tokens.items():
            if token.stale or token.published is None:
                continue
            if all_quiet(token.sources, token.now(wall), self.stale_after_s):
                out.extend(self._stale(symbol, token, wall))
        return out

    def _stale(self, symbol: str, token: _Token, wall: float) -> list[PriceEvent]:
        if token.stale or token.published is None:
            return []
        token.stale = True
        self.last.pop(symbol, None)
        at = datetime.fromtimestamp(token.now(wall), UTC)
        return [
            PriceEvent(
                event_id=price_event_id(symbol, at, token.published, (), True, token.published),
                symbol=symbol,
                ts=at,
                price=token.published,
                sources=[],
                stale=True,
                prev_price=token.published,
            )
        ]

    def forget(self, symbol: str) -> None:
        """Drop a token's sources (it left the universe): no price, not even a stale one, is published for it."""
        self._tokens.pop(symbol, None)

    def is_stale(self, symbol: str) -> bool:
        token = self._tokens.get(symbol)
        return token is None or token.stale
