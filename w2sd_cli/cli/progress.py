"""Progress is an observer: the sampler calls back per phase, rich draws it here."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from w2sd_cli.cli.output import err_console, label


class ObserverProgress:
    """Rich bars on stderr fed by a library callback: subclasses pick the columns and write ``observe``.

    Every bar's text goes through ``output.label`` (``add``/``describe``): names come from servers and cards,
    and an escape code or newline in one must never reach the terminal.
    """

    def __init__(self, *columns: ProgressColumn | str, quiet: bool = False, console: Console | None = None) -> None:
        console = self.console = console or err_console
        # outside a terminal (a pipe, a CI log) a live bar only leaves fragments: subclasses log lines instead
        self.lines = not quiet and not console.is_terminal
        self.progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), *columns,
                                 console=console, disable=quiet or self.lines)
        self.tasks: dict[str, TaskID] = {}

    def add(self, key: str, text: str, **fields: Any) -> TaskID:
        """The bar for ``key``, made with the label ``text`` if it is new."""
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(label(text), **fields)
        return self.tasks[key]

    def describe(self, task: TaskID, text: str, **fields: Any) -> None:
        """Update a bar, relabelled with ``text``."""
        self.progress.update(task, description=label(text), **fields)

    def __enter__(self) -> Self:
        self.progress.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.__exit__(kind, err, tb)

    def observe(self, info: dict[str, Any]) -> None:
        raise NotImplementedError


class PhaseProgress(ObserverProgress):
    """One bar per method (or image), advanced on each ``denoise`` phase; shows the current phase."""

    def __init__(self, quiet: bool = False) -> None:
        super().__init__(MofNCompleteColumn(), TextColumn("{task.fields[phase]}"), TimeElapsedColumn(), quiet=quiet)

    def observe(self, info: dict[str, Any]) -> None:
        """The sampler's callback: ``i``, ``steps``, ``phase`` and optionally ``method``/``label``."""
        name = str(info.get("label") or info.get("method") or "w2sd")
        task = self.add(name, name, total=info.get("steps"), phase="")
        if info.get("phase") == "denoise":
            self.progress.update(task, completed=int(info["i"]) + 1, phase=label(info["phase"]))
        else:
            self.progress.update(task, phase=label(info.get("phase", "")))


class DownloadProgress(ObserverProgress):
    """Download bars on stderr, fed by the store's events (``store.ensure_models``, ``pull``, ``verify``).

    One overall bar (bytes of every file still to fetch) and one bar per file, with speed and time left.
    Takes ``{"event": "file"|"overall"|"plan"|"done", ...}`` dicts, and the bare per-file dicts
    (``{"file", "bytes_done", "bytes_total", "status"}``) that ``cache verify`` sends.
    """

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        from rich.progress import DownloadColumn, TimeRemainingColumn, TransferSpeedColumn

        super().__init__(DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), quiet=quiet, console=console)

    def observe(self, info: dict[str, Any]) -> None:
        event = info.get("event", "file")
        if self.lines:
            self._log(info)
        elif event in ("overall", "plan"):
            self._overall(info)
        elif event == "file":
            self._file(info)

    def _log(self, info: dict[str, Any]) -> None:
        """Outside a terminal: one line per finished file, nothing for bytes in flight."""
        if info.get("event", "file") != "file" or info.get("status") != "done":
            return
        from w2sd_cli.store import human

        size = info.get("bytes_total") or info.get("bytes_done")
        where = ":".join(str(info[k]) for k in ("pair", "key") if info.get(k))
        self.console.print(f"{label(where) + ': ' if where else ''}{label(info.get('file'))}"
                          f"{f' ({human(int(size))})' if isinstance(size, int) else ''} done", soft_wrap=True)

    def _overall(self, info: dict[str, Any]) -> None:
        total = info.get("bytes_total") or None
        if info.get("event") == "plan" and not info.get("files"):
            return
        text = f"{info.get('pair', 'all')}: {info.get('files_done', 0)}/{info.get('files_total', info.get('files'))}"
        task = self.add(f"\0overall:{info.get('pair')}", text, total=total)
        self.describe(task, text, completed=info.get("bytes_done", 0), total=total)

    def _file(self, info: dict[str, Any]) -> None:
        name = str(info.get("file"))
        status = str(info.get("status", ""))
        text = f"  {name} ({status})" if status in ("verifying",) else f"  {name}"
        task = self.add(f"{info.get('key', '')}\0{name}", text, total=info.get("bytes_total"))
        self.describe(task, text, completed=info.get("bytes_done", 0), total=info.get("bytes_total"))
