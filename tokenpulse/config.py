"""The command line's settings: the environment, with the options given on the command line on top.

Options are passed into the :class:`Settings` constructor (pydantic-settings gives them priority
over the environment), so loading settings changes nothing around it: no ``os.environ`` writes.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from tokenpulse_shared.settings import Settings

console = Console(stderr=True)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with every override that is not None on top; exit 2 on a bad value."""
    try:
        return Settings(**{name: value for name, value in overrides.items() if value is not None})
    except ValueError as exc:  # pydantic's ValidationError, or an environment value that cannot be read
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
