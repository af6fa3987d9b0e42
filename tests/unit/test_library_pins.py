"""Adapters over a library's internals name the release they were written for: an upgrade fails here, loudly,
with what to check, before anything misbehaves quietly."""

from __future__ import annotations

from importlib.metadata import version

from tokenpulse_gateway import window_storage


def test_the_window_storage_is_for_the_installed_limits() -> None:
    installed = version("limits")
    assert installed == window_storage.LIMITS_VERSION, (
        f"limits is {installed}, WindowMemoryStorage (services/gateway/tokenpulse_gateway/window_storage.py) was "
        f"written for {window_storage.LIMITS_VERSION}. It subclasses limits.aio.storage.MemoryStorage and uses its "
        "storage, expirations and locks dicts and the acquire_entry, get_moving_window, incr, clear and reset "
        "methods the strategies call: re-check those in the new release, run "
        "test_the_window_storage_answers_like_the_limits_memory_storage, then set LIMITS_VERSION."
    )
