"""What an answer parsed by the SDK's models holds that the models do not know, and which model fields
answers ever fill: the two directions in which the SDK and the API can drift apart."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel


def unknown_fields(value: Any, path: str = "$") -> list[str]:
    """Every field the answer carried that no SDK model declares (kept by ``extra="allow"``), by path."""
    if isinstance(value, BaseModel):
        found = [f"{path}.{k} (not in {type(value).__name__})" for k in value.model_extra or {}]
        for name in type(value).model_fields:
            found += unknown_fields(getattr(value, name), f"{path}.{name}")
        return found
    if isinstance(value, (list, tuple)):
        return [f for item in value for f in unknown_fields(item, f"{path}[]")]
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in unknown_fields(v, f"{path}[{k}]")]
    return []


def models(value: Any) -> Iterator[BaseModel]:
    """Every model in ``value``, nested ones too (through lists, tuples and dicts)."""
    if isinstance(value, BaseModel):
        yield value
        for name in type(value).model_fields:
            yield from models(getattr(value, name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from models(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from models(item)


def filled_fields(value: Any, into: set[tuple[str, str]] | None = None) -> set[tuple[str, str]]:
    """(model, field) of every field an answer set, through the whole tree."""
    into = set() if into is None else into
    into.update((type(m).__name__, name) for m in models(value) for name in m.model_fields_set)
    return into


def models_in(value: Any, into: set[type[BaseModel]] | None = None) -> set[type[BaseModel]]:
    into = set() if into is None else into
    into.update(type(m) for m in models(value))
    return into


def never_filled(answers: Iterable[Any], allowed: set[tuple[str, str]], nullable_too: bool = True) -> list[str]:
    """Fields of the models seen in ``answers`` that none of them set (less ``allowed``): a field the API
    may have dropped or renamed. ``nullable_too=False`` skips the fields that may be absent (default None)."""
    seen: set[type[BaseModel]] = set()
    filled: set[tuple[str, str]] = set()
    for answer in answers:
        models_in(answer, seen)
        filled_fields(answer, filled)
    return sorted(
        f"{model.__name__}.{name}"
        for model in seen
        for name in model.model_fields
        if (model.__name__, name) not in filled and (model.__name__, name) not in allowed
        if nullable_too or model.model_fields[name].is_required()
    )
