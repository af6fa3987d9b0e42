"""``/v1/tokens`` kept ready by :class:`TokenBoard` over a real :class:`LiveState` (in-process bus, no store): a
large list is rebuilt in the background in slices that yield to the event loop, never in a request, with the
pages clients asked for made again; universe changes and small lists show at once."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from tokenpulse_gateway import token_board
from tokenpulse_gateway.live import LiveState
from tokenpulse_gateway.token_board import SLICE, TokenBoard
from tokenpulse_gateway.token_list import TokenQuery
from tokenpulse_shared.events import PriceEvent
from tokenpulse_shared.universe import Token

from testkit.wiring import live_state

BY_SYMBOL = TokenQuery()
BY_CHANGE = TokenQuery(field="change_24h", descending=True)
NEWEST_FIRST = TokenQuery(descending=True)


async def priced(live: LiveState, n: int, price: float = 1.0) -> None:
    now = datetime.now(UTC)
    await live.on_prices([PriceEvent(symbol=f"T{i:04d}", ts=now, price=price + i) for i in range(n)])


def prices_of(body: bytes) -> dict[str, float]:
    return {r["symbol"]: r["price"] for r in json.loads(body)["data"]}


def test_a_large_list_is_rebuilt_in_the_background_not_in_the_request() -> None:
    async def run() -> None:
        live = live_state()
        await priced(live, 1000)
        board = TokenBoard(live, refresh_s=1.0)  # long enough that no refresh comes before the second request
        first = board.page(BY_SYMBOL, 100, None)
        await priced(live, 1000, price=500.0)  # every price moves
        assert board.page(BY_SYMBOL, 100, None) is first  # answered from the snapshot: nothing built per request
        for _ in range(500):
            await asyncio.sleep(0.01)
            if board.refreshes:
                break
        assert board.refreshes >= 1
        snap = board.snapshot
        assert snap is not None and (BY_SYMBOL, 100, None) in snap.pages  # made again by the refresh
        assert prices_of(board.page(BY_SYMBOL, 100, None).body)["T0000"] == 500.0
        await board.stop()

    asyncio.run(run())


def test_the_refresh_yields_to_the_event_loop_between_slices() -> None:
    """Requests and bus handlers run while the list is rebuilt: other tasks get turns in the middle of it."""

    async def run() -> None:
        live = live_state()
        await priced(live, 1000)
        board = TokenBoard(live)
        board.page(NEWEST_FIRST, 100, None)
        await priced(live, 1000, price=7.0)
        turns = 0
        refresh = asyncio.ensure_future(board.refresh())
        while not refresh.done():
            turns += 1
            await asyncio.sleep(0)
        assert turns >= 1000 // SLICE - 1
        assert prices_of(board.page(NEWEST_FIRST, 100, None).body)["T0999"] == 1006.0

    asyncio.run(run())


def test_universe_changes_and_small_lists_show_at_once() -> None:
    async def run() -> None:
        live = live_state()
        await priced(live, 1000)
        board = TokenBoard(live, refresh_s=60)  # no background refresh within this test
        assert "T0001" in prices_of(board.page(BY_SYMBOL, 1000, None).body)
        await live.on_universe([Token("NEW", "New Coin")], ["T0001"])
        shown = prices_of(board.page(BY_SYMBOL, 1000, None).body)
        assert "T0001" not in shown and "NEW" in shown

        small = live_state()
        await priced(small, 10)
        board_small = TokenBoard(small, refresh_s=60)
        board_small.page(BY_SYMBOL, 100, None)
        await priced(small, 10, price=3.0)
        assert prices_of(board_small.page(BY_SYMBOL, 100, None).body)["T0000"] == 3.0
        await board.stop()

    asyncio.run(run())


def test_each_order_is_sorted_once_per_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = token_board.rank

    def counting(rows: list[dict[str, Any]], query: TokenQuery) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        return real(rows, query)

    async def run() -> None:
        live = live_state()
        await priced(live, 300)
        board = TokenBoard(live, refresh_s=60)
        page1 = json.loads(board.page(BY_CHANGE, 100, None).body)
        board.page(BY_CHANGE, 100, page1["next_cursor"])
        board.page(TokenQuery(field="change_24h", descending=True, q="t00"), 50, None)
        assert calls == 1
        await board.stop()

    monkeypatch.setattr(token_board, "rank", counting)
    asyncio.run(run())


def test_a_refresh_makes_again_only_the_pages_asked_since_the_last_one() -> None:
    """A page asked once (the whole list, say) is not encoded again at every refresh for ever."""

    async def run() -> None:
        live = live_state()
        await priced(live, 1000)
        board = TokenBoard(live, refresh_s=60)
        board.page(BY_SYMBOL, 1000, None)
        board.page(BY_SYMBOL, 100, None)
        await priced(live, 1000, price=2.0)
        await board.refresh()
        assert board.snapshot is not None and (BY_SYMBOL, 1000, None) in board.snapshot.pages
        board.page(BY_SYMBOL, 100, None)  # only this one is asked again
        await priced(live, 1000, price=3.0)
        await board.refresh()
        assert set(board.snapshot.pages) == {(BY_SYMBOL, 100, None)}

    asyncio.run(run())
