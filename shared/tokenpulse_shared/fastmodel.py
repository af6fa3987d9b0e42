"""The one module that writes pydantic's model storage directly, for events built from values already valid.

pydantic has no public constructor that skips both validation and per-field default resolution
(``model_construct`` resolves defaults field by field, which costs more than validating); this writes the
four storage slots ``model_construct`` writes. It depends on those slot names, so it names the pydantic
release it was written for and tests/unit/test_library_pins.py fails on any other.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

PYDANTIC_VERSION = "2.14.3"

M = TypeVar("M", bound=BaseModel)

# a model's storage slots, set directly: what pydantic's model_construct does through object.__setattr__
_SLOTS = BaseModel.__dict__
_set_dict = _SLOTS["__dict__"].__set__
_set_fields_set = _SLOTS["__pydantic_fields_set__"].__set__
_set_extra = _SLOTS["__pydantic_extra__"].__set__
_set_private = _SLOTS["__pydantic_private__"].__set__


def trusted(cls: type[M], fields: dict[str, Any], fields_set: set[str] | None = None) -> M:
    """An event built from values that are valid by construction (taken from validated events, or
    computed by the service), without validating them again: pydantic's ``model_construct`` minus its
    per-field default resolution, which cost more than the work of the hot paths that use this.
    ``fields`` must hold every field of ``cls``; unit tests check the result equals the validated event.
    ``fields_set`` (every field name) may be one set shared by all events of a hot path: the models are
    frozen, nothing adds to it in place (``model_copy(update=...)`` copies it first)."""
    m = cls.__new__(cls)
    _set_dict(m, fields)
    _set_fields_set(m, set(fields) if fields_set is None else fields_set)
    _set_extra(m, None)
    _set_private(m, None)
    return m
