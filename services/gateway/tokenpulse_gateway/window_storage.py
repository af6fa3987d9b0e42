"""The in-process storage of the request limits: `limits`' memory storage, each moving window kept as a deque.

An adapter over the library's internals: :class:`WindowMemoryStorage` subclasses ``limits.aio.storage.
MemoryStorage`` and reads and writes its ``storage``, ``expirations`` and ``locks`` dictionaries. It was
written for :data:`LIMITS_VERSION`; ``tests/unit/test_library_pins.py`` fails when another version is
installed, and ``test_the_window_storage_answers_like_the_limits_memory_storage`` holds its answers
against the library's own storage. Kept because the library's storage costs a request time in proportion
to its key's requests of the last minute (docs/benchmarks.md, "Gateway reads").
"""

from __future__ import annotations

import time
from collections import deque

from limits.aio.storage import MemoryStorage

LIMITS_VERSION = "5.8.0"
"""the `limits` release this adapter was written and checked against"""


class WindowMemoryStorage(MemoryStorage):
    """`limits`' in-process storage with each moving window kept as a deque of hit times, oldest first.

    The library's memory storage keeps a list, newest first: every hit inserts at its front and a
    clean-up task copies it (in a thread) after every hit, so a request costs time in proportion
    to the requests of the last minute. Here a hit appends, expired times leave from the left, and
    fixed-window counters expire when read or in a sweep every ``SWEEP_S``: the same answers at a
    constant cost. Strategies are the library's; only the storage differs.
    """

    SWEEP_S = 10.0

    def __init__(self) -> None:
        super().__init__()
        self.windows: dict[str, tuple[int, deque[float]]] = {}
        self._swept = time.time()

    def _current(self, key: str, now: float) -> deque[float] | None:
        found = self.windows.get(key)
        if found is None:
            return None
        expiry, hits = found
        cutoff = now - expiry
        while hits and hits[0] < cutoff:
            hits.popleft()
        return hits

    def _sweep(self, now: float) -> None:
        """Forget windows with no hit left in them and fixed windows that are over."""
        self._swept = now
        for key, (expiry, hits) in list(self.windows.items()):
            if not hits or hits[-1] < now - expiry:
                del self.windows[key]
        for key, ends in list(self.expirations.items()):
            if ends <= now:
                self.storage.pop(key, None)
                self.expirations.pop(key, None)
                self.locks.pop(key, None)

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        if now - self._swept > self.SWEEP_S:
            self._sweep(now)
        hits = self._current(key, now)
        if hits is None:
            hits = deque()
            self.windows[key] = (expiry, hits)
        if len(hits) + amount > limit:
            return False
        hits.extend([now] * amount)
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        hits = self._current(key, now)
        if hits:
            # like the library: a hit exactly one window old still blocks a new one but no longer counts here
            cutoff, first = now - expiry, 0
            while first < len(hits) and hits[first] <= cutoff:
                first += 1
            if first < len(hits):
                return hits[first], len(hits) - first
        return now, 0

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        # no clean-up task per call (the sweep and reads expire counters); nothing here awaits, so no lock
        now = time.time()
        if self.expirations.get(key, 0) <= now:
            self.storage.pop(key, None)
            self.expirations[key] = now + expiry
        self.storage[key] += amount
        return self.storage[key]

    async def clear(self, key: str) -> None:
        await super().clear(key)
        self.windows.pop(key, None)

    async def reset(self) -> int | None:
        count = max(len(self.windows), await super().reset() or 0)
        self.windows.clear()
        return count
