"""The tracked-token universe: which tokens Tokenpulse follows, their names and their pairs per venue.

A universe comes from a CSV file (``TOKENPULSE_UNIVERSE``: columns ``symbol,name`` then one column per
venue, a blank cell meaning "not listed there") or, as the short form, from ``TOKENPULSE_SYMBOLS``
(names from the built-in table, every venue's default pair). Ingest publishes it on the compacted
``tokenpulse.universe.v1`` topic (key = symbol, ``deleted=True`` then a tombstone on removal) with
:class:`UniversePublisher`; every service that needs it follows that topic with :class:`UniverseFollower`,
so all of them see the same universe in embedded and distributed mode (docs/design/0002-universe.md).
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from tokenpulse_shared.bus import Bus, Delivery
from tokenpulse_shared.events import SYMBOL_PATTERN, UniverseTokenEvent
from tokenpulse_shared.settings import Settings
from tokenpulse_shared.tokens import token_name
from tokenpulse_shared.topics import UNIVERSE

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 10_000_000
MAX_TOKENS = 100_000
_SYMBOL = re.compile(SYMBOL_PATTERN)
_VENUE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class UniverseError(ValueError):
    """A universe file that cannot be used, with the line and what to fix."""


@dataclass(frozen=True)
class Token:
    """One tracked token: ``pairs`` per venue (a pair, or None where not listed; a venue left out takes its default)."""

    symbol: str
    name: str
    rank: int | None = None
    pairs: Mapping[str, str | None] = field(default_factory=dict)

    def event(self) -> UniverseTokenEvent:
        return UniverseTokenEvent(symbol=self.symbol, name=self.name, rank=self.rank, pairs=dict(self.pairs))

    @classmethod
    def of(cls, event: UniverseTokenEvent) -> Token:
        return cls(event.symbol, event.name, event.rank, dict(event.pairs))


# ------------------------------------------------------------------------------------------ reading


def _header(row: list[str], where: str) -> list[str]:
    cols = [c.strip().lower() for c in row]
    if cols[:2] != ["symbol", "name"]:
        raise UniverseError(f"{where}:1: the header must start with `symbol,name` (found {','.join(cols[:2])!r})")
    venues = cols[2:]
    for venue in venues:
        if not _VENUE.fullmatch(venue):
            raise UniverseError(f"{where}:1: venue column {venue!r} is not a venue name (lower case, e.g. binance)")
    if len(set(venues)) != len(venues):
        raise UniverseError(f"{where}:1: a venue column appears twice")
    return venues


def _token(row: list[str], line: int, venues: list[str], where: str) -> Token:
    if len(row) != 2 + len(venues):
        raise UniverseError(f"{where}:{line}: {len(row)} fields, the header has {2 + len(venues)}")
    symbol, name = row[0].strip().upper(), row[1].strip()
    if not _SYMBOL.fullmatch(symbol):
        raise UniverseError(f"{where}:{line}: symbol {row[0]!r} is not 1-15 letters or digits")
    pairs = {venue: (cell.strip() or None) for venue, cell in zip(venues, row[2:], strict=True)}
    try:  # the wire contract decides what a name and a pair may be
        UniverseTokenEvent(symbol=symbol, name=name or symbol, pairs=pairs)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UniverseError(f"{where}:{line}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from exc
    return Token(symbol, name or symbol, line - 1, pairs)


def parse_csv(text: str, where: str = "universe") -> list[Token]:
    """The tokens of a universe file's text, in file order (rank = position); UniverseError names the line."""
    rows = [(n, r) for n, r in enumerate(csv.reader(io.StringIO(text)), start=1)]
    rows = [(n, r) for n, r in rows if any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if not rows:
        raise UniverseError(f"{where}: empty; write a header `symbol,name[,venue...]` and one token per line")
    venues = _header(rows[0][1], where)
    if len(rows) - 1 > MAX_TOKENS:
        raise UniverseError(f"{where}: more than {MAX_TOKENS} tokens")
    tokens: list[Token] = []
    seen: dict[str, int] = {}
    pair_seen: dict[tuple[str, str], int] = {}
    for rank, (line, row) in enumerate(rows[1:], start=1):
        token = _token(row, line, venues, where)
        if token.symbol in seen:
            raise UniverseError(f"{where}:{line}: {token.symbol} already on line {seen[token.symbol]}")
        seen[token.symbol] = line
        for venue, pair in token.pairs.items():
            if pair is not None and (venue, pair) in pair_seen:
                raise UniverseError(f"{where}:{line}: {venue} pair {pair} already on line {pair_seen[(venue, pair)]}")
            if pair is not None:
                pair_seen[(venue, pair)] = line
        tokens.append(Token(token.symbol, token.name, rank, token.pairs))
    return tokens


def load_file(path: Path) -> list[Token]:
    """A universe file (UTF-8, a BOM allowed); UniverseError when it is missing, too big or malformed."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise UniverseError(f"{path}: {size} bytes, more than {MAX_FILE_BYTES}")
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UniverseError(f"universe file {path}: {exc}") from exc
    return parse_csv(text, str(path))


def from_symbols(symbols: Iterable[str]) -> list[Token]:
    """The short form (``TOKENPULSE_SYMBOLS``): built-in names, every venue's default pair."""
    return [Token(s, token_name(s), rank) for rank, s in enumerate(dict.fromkeys(symbols), start=1)]


def top_n(tokens: Sequence[Token], n: int, score: Mapping[str, float] | None = None) -> list[Token]:
    """The first ``n`` tokens (0 = all): by ``score`` descending where given (e.g. quote volume), else by rank."""
    if n <= 0 or n >= len(tokens):
        return list(tokens)
    if score is None:
        return sorted(tokens, key=lambda t: t.rank or 0)[:n]
    return sorted(tokens, key=lambda t: (-score.get(t.symbol, -1.0), t.rank or 0))[:n]


def source(settings: Settings) -> list[Token]:
    """The whole universe the settings name, uncut: the file when TOKENPULSE_UNIVERSE is set, else
    TOKENPULSE_SYMBOLS."""
    path = settings.runtime.universe
    return load_file(path) if path is not None else from_symbols(settings.runtime.symbols)


def configured(settings: Settings) -> list[Token]:
    """:func:`source` cut to TOKENPULSE_UNIVERSE_TOP_N by rank (ingest's discovery may cut by volume or market
    cap instead, once it read those figures)."""
    return top_n(source(settings), settings.runtime.universe_top_n)


def configured_symbols(settings: Settings) -> list[str]:
    """The symbols of :func:`configured` (start-up work that needs only the names: bundled history)."""
    return [t.symbol for t in configured(settings)]


# ------------------------------------------------------------------------------------------ the topic

Listener = Callable[[list[Token], list[str]], Awaitable[None]]
"""called with the tokens added or changed and the symbols removed, after the follower applied them"""


class UniverseFollower:
    """The universe as the topic says, in memory: every instance reads the whole compacted topic
    (a *broadcast* subscription), so each replica of each service holds the same table."""

    def __init__(self) -> None:
        self.tokens: dict[str, Token] = {}
        self.removed: set[str] = set()
        """symbols removed while this process ran (their ticks are no longer taken)"""
        self.version = 0
        self.listeners: list[Listener] = []
        self.loaded = False
        """True once the topic delivered anything: until then a service may stand in its own configuration"""
        self._arrived = asyncio.Condition()

    def follow(self, bus: Bus, group: str) -> UniverseFollower:
        bus.subscribe(UNIVERSE, group, self.on_events, delivery=Delivery.BROADCAST)
        return self

    def on_change(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def symbols(self) -> list[str]:
        """Members by rank (then symbol)."""
        return [t.symbol for t in sorted(self.tokens.values(), key=lambda t: (t.rank or 0, t.symbol))]

    async def wait_for(self, symbols: set[str], timeout: float) -> bool:
        """Wait until every one of ``symbols`` is a member (a publisher waiting for its own universe)."""
        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: symbols <= self.tokens.keys()), timeout)
            except TimeoutError:
                return False
        return True

    async def on_events(self, events: list[UniverseTokenEvent]) -> None:
        changed: dict[str, Token] = {}
        gone: dict[str, None] = {}
        for e in events:
            if e.deleted:
                if self.tokens.pop(e.symbol, None) is not None:
                    gone[e.symbol] = None
                changed.pop(e.symbol, None)
                self.removed.add(e.symbol)
            else:
                token = Token.of(e)
                if self.tokens.get(e.symbol) != token:
                    self.tokens[e.symbol] = changed[e.symbol] = token
                gone.pop(e.symbol, None)
                self.removed.discard(e.symbol)
        self.loaded = True
        async with self._arrived:
            self._arrived.notify_all()
        if changed or gone:
            self.version += 1
            for listener in self.listeners:
                await listener(list(changed.values()), list(gone))


class UniversePublisher:
    """Ingest's side: publish what differs between the wanted universe and what the topic holds."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.published: dict[str, Token] | None = None
        """what the topic holds (read from its log on the first publish; the in-process bus has none)"""

    async def _current(self) -> dict[str, Token]:
        if self.published is None:
            events = await self.bus.read_log(UNIVERSE)
            held: dict[str, Token] = {}
            for e in events:
                if isinstance(e, UniverseTokenEvent):
                    if e.deleted:
                        held.pop(e.symbol, None)
                    else:
                        held[e.symbol] = Token.of(e)
            self.published = held
        return self.published

    async def publish(self, wanted: Sequence[Token]) -> tuple[int, int]:
        """Publish the added or changed tokens and remove the others; returns (upserted, removed)."""
        current = await self._current()
        want = {t.symbol: t for t in wanted}
        upserts = [t for s, t in want.items() if current.get(s) != t]
        removals = [current[s] for s in current if s not in want]
        if upserts:
            await self.bus.publish(UNIVERSE, [t.event() for t in upserts])
        for token in removals:
            gone = UniverseTokenEvent(symbol=token.symbol, name=token.name, rank=token.rank, deleted=True)
            await self.bus.publish(UNIVERSE, [gone])
            await self.bus.publish_tombstone(UNIVERSE, token.symbol)
        self.published = dict(want)
        if upserts or removals:
            log.info("universe: %d tokens (%d added or changed, %d removed)", len(want), len(upserts), len(removals))
        return len(upserts), len(removals)
