"""Adapters over a library's internals name the release they were written for: an upgrade fails here, loudly,
with what to check, before anything misbehaves quietly."""

from __future__ import annotations

from importlib.metadata import version

from tokenpulse_gateway import window_storage
from tokenpulse_shared import fastmodel


def test_the_window_storage_is_for_the_installed_limits() -> None:
    installed = version("limits")
    assert installed == window_storage.LIMITS_VERSION, (
        f"limits is {installed}, WindowMemoryStorage (services/gateway/tokenpulse_gateway/window_storage.py) was "
        f"written for {window_storage.LIMITS_VERSION}. It subclasses limits.aio.storage.MemoryStorage and uses its "
        "storage, expirations and locks dicts and the acquire_entry, get_moving_window, incr, clear and reset "
        "methods the strategies call: re-check those in the new release, run "
        "test_the_window_storage_answers_like_the_limits_memory_storage, then set LIMITS_VERSION."
    )


def test_trusted_construction_is_for_the_installed_pydantic() -> None:
    installed = version("pydantic")
    assert installed == fastmodel.PYDANTIC_VERSION, (
        f"pydantic is {installed}, trusted() (shared/tokenpulse_shared/fastmodel.py) was written for "
        f"{fastmodel.PYDANTIC_VERSION}. It writes BaseModel's __dict__, __pydantic_fields_set__, __pydantic_extra__ "
        "and __pydantic_private__ slots as model_construct does: re-check model_construct in the new release, run "
        "tests/unit/test_fastdecode.py, test_scoring_events.py and test_exchange_parsers.py, then set PYDANTIC_VERSION."
    )
