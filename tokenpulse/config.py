"""The command line's settings: the environment, with the options given on the command line on top.

Options are passed into the :class:`Settings` constructor by section (pydantic-settings gives them
priority over the environment), so loading settings changes nothing around it: no ``os.environ``
writes. ``tokenpulse config`` prints every setting from :func:`tokenpulse_shared.settings.variables`.
"""

from __future__ import annotations

from itertools import groupby
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from tokenpulse_shared.settings import DEFAULT_BUNDLE, Settings, Variable, variables

console = Console(stderr=True)


def load_settings(**sections: dict[str, Any]) -> Settings:
    """Settings from the environment, each option that is not None on top (``store={"data_dir": ...}``);
    exit 2 on a bad value."""
    given = {name: {k: v for k, v in values.items() if v is not None} for name, values in sections.items()}
    try:
        return Settings(**{name: values for name, values in given.items() if values})
    except ValueError as exc:  # pydantic's ValidationError, or an environment value that cannot be read
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


def shown_default(variable: Variable) -> str:
    """A default as the docs show it: lists comma separated, the bundled data folder relative to the repository."""
    default = variable.default
    if default is None:
        return ""
    if isinstance(default, list):
        return ",".join(default)
    if isinstance(default, Path) and default == DEFAULT_BUNDLE:
        return "<repo>/data"
    return str(default)


def print_markdown() -> None:
    """The configuration table of the docs: one table per section, under the section's name and purpose."""
    for section, rows in groupby(variables(), key=lambda v: v.section):
        doc = (Settings.model_fields[section].annotation.__doc__ or "").strip().splitlines()[0]  # type: ignore[union-attr]
        print(f"\n## `{section}` — {doc.rstrip('.')}\n")
        print("| variable | default | meaning |\n|---|---|---|")
        for v in rows:
            default = shown_default(v)
            print(f"| `{v.name}` | {'`' + default + '`' if default else '—'} | {v.description} |")


def print_table() -> None:
    table = Table("section", "variable", "default", "meaning")
    for section, rows in groupby(variables(), key=lambda v: v.section):
        for v in rows:
            table.add_row(section, v.name, shown_default(v), v.description)
        table.add_section()
    Console().print(table)
