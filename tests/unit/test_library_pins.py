"""Adapters over a library's internals name the release they were written for: an upgrade fails here, loudly,
with what to check, before anything misbehaves quietly."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from tokenpulse_gateway import window_storage
from tokenpulse_shared import fastmodel

PINS = [
    pytest.param(
        "limits",
        window_storage.LIMITS_VERSION,
        "WindowMemoryStorage (services/gateway/tokenpulse_gateway/window_storage.py)",
        "It subclasses limits.aio.storage.MemoryStorage and uses its storage, expirations and locks dicts and the "
        "acquire_entry, get_moving_window, incr, clear and reset methods the strategies call: re-check those in the "
        "new release, run test_the_window_storage_answers_like_the_limits_memory_storage, then set LIMITS_VERSION.",
        id="limits",
    ),
    pytest.param(
        "pydantic",
        fastmodel.PYDANTIC_VERSION,
        "trusted() (shared/tokenpulse_shared/fastmodel.py)",
        "It writes BaseModel's __dict__, __pydantic_fields_set__, __pydantic_extra__ and __pydantic_private__ slots "
        "as model_construct does: re-check model_construct in the new release, run tests/unit/test_batches.py, "
        "test_scoring_events.py and test_exchange_parsers.py, then set PYDANTIC_VERSION.",
        id="pydantic",
    ),
]


@pytest.mark.parametrize(("package", "written_for", "adapter", "what_to_check"), PINS)
def test_the_adapter_is_for_the_installed_release(
    package: str, written_for: str, adapter: str, what_to_check: str
) -> None:
    installed = version(package)
    assert installed == written_for, (
        f"{package} is {installed}, {adapter} was written for {written_for}. {what_to_check}"
    )
