"""Console tables of the report commands (track-record, cycles): right-aligned columns, "—" for no value."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table


def right_aligned(title: str, columns: Iterable[str]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    return table


def maybe(value: float | None, spec: str) -> str:
    """``value`` formatted, or a dash where there is none."""
    return format(value, spec) if value is not None else "—"
