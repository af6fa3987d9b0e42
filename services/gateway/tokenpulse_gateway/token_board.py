"""``/v1/tokens`` kept ready: the rows, their order per sort and the encoded pages, made off the request path.

At a large universe prices change the list many times a second, so the list is a *snapshot*, refreshed at
most every ``LIST_REFRESH_S`` by a background task while clients ask for it. The refresh builds the rows in
slices and yields to the event loop between slices, sorts, and pages (each a few milliseconds at 1,000 tokens),
so no request waits behind a whole rebuild: the embedded process shares its one event loop with ingest,
scoring and the store writer. A request is a lookup of an encoded page; it encodes one itself only for a page
nobody asked for since the last refresh. Small universes (tests, a handful of tokens) and universe changes
(a token added or removed) are shown at once, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Hashable
from contextlib import suppress
from typing import Any

from tokenpulse_gateway.answers import Encoded, encode
from tokenpulse_gateway.errors import ApiError
from tokenpulse_gateway.live import LARGE_LIST, LIST_REFRESH_S, LiveState, answer_row
from tokenpulse_gateway.token_list import TokenQuery, page, rank

log = logging.getLogger(__name__)

SLICE = 100
"""rows built between two yields to the event loop"""
IDLE_S = 10.0
"""the refresh stops when no client asked for the list this long (it starts again with the next request)"""
MAX_PAGES = 64
"""encoded pages kept per snapshot (a client can send many cursors; the useful pages are few)"""
PageKey = tuple[TokenQuery, int, str | None]


class Snapshot:
    """The list at one version of the live state: its rows by symbol, their order per sort, encoded pages."""

    def __init__(self, version: int, members: int, rows: list[dict[str, Any]]) -> None:
        self.version = version
        self.members = members
        self.rows = rows
        self.made_at = time.monotonic()
        self._ranked: dict[Hashable, list[dict[str, Any]]] = {}
        self.pages: OrderedDict[PageKey, Encoded] = OrderedDict()
        self.asked: set[PageKey] = set()
        """the pages clients asked this snapshot for: the next refresh makes these again, and only these"""

    def ranked(self, query: TokenQuery) -> list[dict[str, Any]]:
        order = (query.field, query.descending)
        got = self._ranked.get(order)
        if got is None:
            got = self._ranked[order] = rank(self.rows, query)
        return got

    def page(self, key: PageKey) -> Encoded:
        """The encoded page of (query, limit, cursor): kept, or made now (a bad cursor raises, nothing kept)."""
        enc = self.pages.get(key)
        if enc is None:
            query, limit, cursor = key
            enc = encode(page(self.ranked(query), query, limit, cursor))
            if len(self.pages) < MAX_PAGES:
                self.pages[key] = enc
        return enc


class TokenBoard:
    """The current :class:`Snapshot` of the token list, and the background task that refreshes it."""

    def __init__(self, live: LiveState, refresh_s: float = LIST_REFRESH_S) -> None:
        self.live = live
        self.refresh_s = refresh_s
        self.snapshot: Snapshot | None = None
        self.asked_at = 0.0
        self.refreshes = 0
        """background rebuilds done (tests and diagnostics)"""
        self._task: asyncio.Task[None] | None = None

    def page(self, query: TokenQuery, limit: int, cursor: str | None) -> Encoded:
        """The encoded ``/v1/tokens`` page, from the current snapshot."""
        self.asked_at = time.monotonic()
        snap, key = self.current(), (query, limit, cursor)
        enc = snap.page(key)
        if len(snap.asked) < MAX_PAGES:
            snap.asked.add(key)
        return enc

    def current(self) -> Snapshot:
        """The snapshot to answer from; built here only when there is none yet, the universe changed, the list
        is small (cheap to build: shown as soon as it changes) or the refresh fell far behind."""
        live, snap = self.live, self.snapshot
        if snap is None or snap.members != live.members_version:
            return self._build_now()
        if snap.version != live.version:
            if len(live.tokens) < LARGE_LIST or time.monotonic() - snap.made_at > 4 * self.refresh_s:
                return self._build_now()
            self._ensure_refreshing()
        return snap

    def _build_now(self) -> Snapshot:
        live = self.live
        self.snapshot = Snapshot(live.version, live.members_version, live.rows())
        if len(live.tokens) >= LARGE_LIST:
            self._ensure_refreshing()
        return self.snapshot

    def _ensure_refreshing(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refresh_loop(), name="token-board")

    async def _refresh_loop(self) -> None:
        while time.monotonic() - self.asked_at < IDLE_S:
            await asyncio.sleep(self.refresh_s)
            snap = self.snapshot
            if snap is None or snap.version != self.live.version:
                try:
                    await self.refresh()
                except Exception:  # the next request builds one itself; the loop goes on
                    log.exception("token list refresh failed")

    async def refresh(self) -> None:
        """Build the next snapshot in slices (yielding between them), with the pages clients asked the previous
        one for, then swap it in whole."""
        live, old = self.live, self.snapshot
        version, members = live.version, live.members_version
        removed = live.universe.removed
        symbols = sorted(s for s in live.tokens if s not in removed)
        rows: list[dict[str, Any]] = []
        for i in range(0, len(symbols), SLICE):
            if i:
                await asyncio.sleep(0)
            rows += [answer_row(s, row) for s in symbols[i : i + SLICE] if (row := live.tokens.get(s)) is not None]
        nxt = Snapshot(version, members, rows)
        for key in list(old.asked) if old is not None else []:
            await asyncio.sleep(0)
            with suppress(ApiError):  # a cursor page whose query no longer fits is not made again
                nxt.page(key)
        # a universe change or a rebuild by a request meanwhile: that one stands (the next refresh catches up)
        if self.snapshot is old and live.members_version == members:
            self.snapshot = nxt
            self.refreshes += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
