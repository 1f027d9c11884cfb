"""Rich consoles: human output on stderr, machine output (``--json``) on stdout.

Everything printed through ``err_console`` is plain text: no markup, no highlighting, no emoji codes, so a
server's message, a file name or a card field containing ``[/]`` or ``[link=...]`` is shown as it is. Styled
text is built with ``rich.text.Text`` (``styled``, ``render_error``, ``warn``), never from markup strings.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text


class PlainConsole(Console):
    """A console that never interprets markup in what it prints, even when a caller asks for it."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        kwargs["markup"] = False
        kwargs["emoji"] = False
        kwargs["highlight"] = False
        if not self.is_terminal:
            # a pipe or a log has no width: a line stays one line, a path or a number is never cut in two
            kwargs["soft_wrap"] = True
        if not self.is_terminal and any(isinstance(o, TableData) for o in objects):
            for obj in objects:
                for line in obj.plain_lines() if isinstance(obj, TableData) else [obj]:
                    super().print(_plain(line), **kwargs)
            return
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


PROSE = frozenset({"description", "summary", "source", "hooks", "used by", "origin", "error"})
"""Columns of free text: the only ones a narrow terminal may wrap, and only between words."""


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> TableData:
    """A table whose numbers and names are never split (see ``TableData``); titles and cells are literal."""
    return TableData(label(title) if title is not None else None, [label(c) for c in columns],
                     [[cell(v) for v in row] for row in rows])


KEYS = frozenset({"metric", "method", "name", "pair", "model", "key", "kind", "file"})
"""Column names that identify a row: a second leading one is repeated in every column group with the first."""


class TableData:
    """Rows that render as one rich table when they fit the terminal, else as column groups that each fit.

    Numbers and names are never wrapped or cut: only ``PROSE`` columns wrap, between words. Outside a
    terminal (a pipe, a log) ``PlainConsole`` prints ``plain_lines()``: one line per row, however long.
    """

    def __init__(self, title: str | None, columns: list[str], rows: list[list[Text]]) -> None:
        self.title, self.columns, self.rows = title, columns, rows

    def widths(self) -> list[int]:
        """Each column's natural width: its widest cell or header."""
        return [max([cell_len(name), *(r[i].cell_len for r in self.rows if i < len(r))])
                for i, name in enumerate(self.columns)]

    def plain_lines(self) -> list[str]:
        """Title, header and rows as aligned plain text; a row is one line at any width."""
        widths = self.widths()
        lines = [self.title] if self.title else []
        for values in [self.columns, *([c.plain for c in r] for r in self.rows)]:
            padded = [v + " " * (w - cell_len(v)) for v, w in zip(values, widths, strict=False)]
            lines.append("  ".join(padded).rstrip())
        return lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        groups = self._groups(options.max_width)
        for n, group in enumerate(groups):
            title = self.title if n == 0 else (f"{self.title} (continued)" if self.title else None)
            yield self._table(title, group, options.max_width)

    def _minimum(self, i: int, natural: int) -> int:
        if self.columns[i] not in PROSE:
            return natural
        words = [w for r in self.rows if i < len(r) for w in r[i].plain.split()] + self.columns[i].split()
        return max([cell_len(w) for w in words] or [1])

    def _groups(self, width: int) -> list[list[int]]:
        """Column indices per table: all in one when they fit, else the name columns plus what fits."""
        natural = self.widths()
        least = [self._minimum(i, w) for i, w in enumerate(natural)]

        def fits(chosen: list[int]) -> bool:
            return sum(least[i] for i in chosen) + 3 * len(chosen) + 1 <= width

        everything = list(range(len(self.columns)))
        keys = self._keys()
        if fits(everything) or len(everything) <= len(keys) + 1:
            return [everything]
        if not all(fits([*keys, i]) for i in everything[len(keys):]):
            keys = [0]
        groups: list[list[int]] = [list(keys)]
        for i in everything[len(keys):]:
            if len(groups[-1]) > len(keys) and not fits([*groups[-1], i]):
                groups.append(list(keys))
            groups[-1].append(i)
        return groups

    def _keys(self) -> list[int]:
        """The leading name columns (at least the first, at most two) that every column group repeats."""
        keys = [0]
        if len(self.columns) > 2 and self.columns[1] in KEYS:
            keys.append(1)
        return keys

    def _table(self, title: str | None, chosen: list[int], width: int) -> Table:
        natural = self.widths()
        boxed = sum(natural[i] if self.columns[i] not in PROSE else self._minimum(i, natural[i])
                    for i in chosen) + 3 * len(chosen) + 1 <= width
        # too wide even alone with its name: drop the borders rather than cut a value
        result = Table(title=Text(title) if title is not None else None, title_justify="left", show_lines=False)
        if not boxed:
            result.box, result.pad_edge = None, False
        for i in chosen:
            if self.columns[i] in PROSE:
                result.add_column(Text(self.columns[i]), overflow="fold", min_width=self._minimum(i, natural[i]))
            else:
                result.add_column(Text(self.columns[i]), no_wrap=True, width=natural[i])
        for row in self.rows:
            result.add_row(*(row[i] if i < len(row) else Text("") for i in chosen))
        return result
