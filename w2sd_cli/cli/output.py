"""Rich consoles: human output on stderr, machine output (``--json``) on stdout."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

err_console = Console(stderr=True, highlight=False)


def render_error(message: str) -> None:
    """One paragraph, prefixed, on stderr."""
    err_console.print(f"[bold red]error:[/bold red] {message}", soft_wrap=True, markup=True, emoji=False)


def warn(message: str) -> None:
    """A warning line on stderr (the message is shown literally, never as markup)."""
    from rich.text import Text

    err_console.print(Text.assemble(("warning: ", "yellow"), message), soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine-readable output on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def cell(value: Any) -> str:
    """A compact text form of a table cell."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(cell(v) for v in value) + "]"
    return str(value)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
    """A plain rich table; the first column (a name) never wraps."""
    result = Table(title=title, title_justify="left", show_lines=False)
    for i, name in enumerate(columns):
        result.add_column(name, overflow="fold", no_wrap=i == 0)
    for row in rows:
        result.add_row(*(cell(v) for v in row))
    return result
