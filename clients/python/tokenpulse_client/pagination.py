"""List answers that walk the API's cursor pages for you, and turn into pandas DataFrames.

``client.candles("BTC")`` returns a :class:`Pages` at once; requests are sent as you iterate, one per page of
up to ``page_size`` rows, following ``next_cursor`` until the last page or until ``limit`` rows. Iterating
again asks the API again (fresh data); keep ``to_list()`` to reuse rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tokenpulse_client.models import ApiModel, Page

if TYPE_CHECKING:
    import pandas

T = TypeVar("T", bound=ApiModel)


def page_sizes(limit: int | None, page_size: int) -> Iterator[int]:
    """The ``limit`` of each request: ``page_size`` until ``limit`` rows are asked for in all."""
    remaining = limit
    while remaining is None or remaining > 0:
        size = page_size if remaining is None else min(page_size, remaining)
        yield size
        if remaining is not None:
            remaining -= size


def _last(page: Page[Any]) -> bool:
    return not page.next_cursor or not page.data


class Pages(Generic[T]):
    """The rows of a list endpoint, across its pages (sync)."""

    def __init__(
        self, fetch: Callable[[str | None, int], Page[T]], item: type[T], limit: int | None, page_size: int
    ) -> None:
        self._fetch, self.item, self.limit, self.page_size = fetch, item, limit, page_size

    def pages(self) -> Iterator[Page[T]]:
        """The raw pages, each one request."""
        cursor: str | None = None
        for size in page_sizes(self.limit, self.page_size):
            page = self._fetch(cursor, size)
            yield page
            if _last(page):
                return
            cursor = page.next_cursor

    def __iter__(self) -> Iterator[T]:
        for page in self.pages():
            yield from page.data

    def to_list(self) -> list[T]:
        return list(self)

    def to_pandas(self) -> pandas.DataFrame:
        """A DataFrame with one column per field (times as UTC datetimes; nested objects as dicts).
        Needs pandas: ``pip install 'tokenpulse-client[pandas]'``."""
        return to_frame(self.to_list(), self.item)


class AsyncPages(Generic[T]):
    """The rows of a list endpoint, across its pages (async): ``async for``, ``await .to_list()``,
    ``await .to_pandas()``."""

    def __init__(
        self,
        fetch: Callable[[str | None, int], Awaitable[Page[T]]],
        item: type[T],
        limit: int | None,
        page_size: int,
    ) -> None:
        self._fetch, self.item, self.limit, self.page_size = fetch, item, limit, page_size

    async def pages(self) -> AsyncIterator[Page[T]]:
        cursor: str | None = None
        for size in page_sizes(self.limit, self.page_size):
            page = await self._fetch(cursor, size)
            yield page
            if _last(page):
                return
            cursor = page.next_cursor

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for row in page.data:
                yield row

    async def to_list(self) -> list[T]:
        return [row async for row in self]

    async def to_pandas(self) -> pandas.DataFrame:
        return to_frame(await self.to_list(), self.item)


def to_frame(rows: list[T], item: type[T]) -> pandas.DataFrame:
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("to_pandas() needs pandas: pip install 'tokenpulse-client[pandas]'") from exc
    columns = list(item.model_fields)
    records = [row.model_dump() for row in rows]
    extra = [k for r in records for k in r if k not in columns]  # fields of a newer server: kept, after ours
    return pd.DataFrame.from_records(records, columns=columns + list(dict.fromkeys(extra)))
