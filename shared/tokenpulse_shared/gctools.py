"""The cyclic garbage collector around bulk work: a replay or a scored batch makes many short-lived acyclic
objects (freed by reference counting), and the full passes they trigger over the long-lived state cost about as
much as the work itself (docs/benchmarks.md, "Scoring" and "Bulk backfill")."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """The collector off for the block (as it was before, after it)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
