"""Rich consoles: human output on stderr, machine output (``--json``) on stdout.

Everything printed through ``err_console`` is plain text: no markup, no highlighting, no emoji codes, so a
server's message, a file name or a card field containing ``[/]`` or ``[link=...]`` is shown as it is. Styled
text is built with ``rich.text.Text`` (``styled``, ``render_error``, ``warn``), never from markup strings.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


class PlainConsole(Console):
    """A console that never interprets markup in what it prints, even when a caller asks for it."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        kwargs["markup"] = False
        kwargs["emoji"] = False
        kwargs["highlight"] = False
        super().print(*(_plain(o) for o in objects), **kwargs)


def _plain(obj: Any) -> Any:
    """Strings become Text as written; other renderables pass through."""
    from w2sd_cli.store.redact import scrub

    return Text(_printable(scrub(obj))) if isinstance(obj, str) else obj


def _printable(text: str) -> str:
    """``text`` without terminal control sequences (escape codes, OSC 8 hyperlinks), newlines kept."""
    return "".join(c if c.isprintable() or c in "\n\t" else "?" for c in text)


ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def label(text: object) -> str:
    """Untrusted text (a file name, a card field) as a one-line printable label for bars and table cells.

    Every character that is not printable (escape, bell, newline, bidi and zero-width controls...) is shown
    escaped the way Python writes it in a string literal (``\\x1b``, ``\\n``, ``\\u202e``); a backslash is
    doubled so an escape in the output is always one w2sd wrote.
    """
    return "".join(ESCAPES.get(c) or (c if c.isprintable() else _escape(c)) for c in str(text))


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


err_console = PlainConsole(stderr=True, highlight=False, markup=False, emoji=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line from plain parts and ``(text, style)`` pairs; no part is ever read as markup."""
    return Text.assemble(*((_printable(p), "") if isinstance(p, str) else (_printable(p[0]), p[1]) for p in parts))


def render_error(message: str) -> None:
    """One paragraph, prefixed, on stderr."""
    from w2sd_cli.store.redact import scrub

    err_console.print(styled(("error:", "bold red"), " ", scrub(message)), soft_wrap=True)


def warn(message: str) -> None:
    """One warning paragraph on stderr."""
    err_console.print(styled(("warning:", "yellow"), " ", message), soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine-readable output on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def cell(value: Any) -> Text:
    """A compact, literal text form of a table cell."""
    if value is None:
        return Text("-")
    if isinstance(value, Text):
        return value
    if isinstance(value, float):
        return Text(f"{value:.4g}")
    if isinstance(value, list):
        return Text("[" + ", ".join(cell(v).plain for v in value) + "]")
    return Text(label(value))


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
    """A plain rich table; the first column (a name) never wraps; titles and cells are literal text."""
    result = Table(title=Text(label(title)) if title is not None else None, title_justify="left",
                   show_lines=False)
    for i, name in enumerate(columns):
        result.add_column(Text(label(name)), overflow="fold", no_wrap=i == 0)
    for row in rows:
        result.add_row(*(cell(v) for v in row))
    return result
