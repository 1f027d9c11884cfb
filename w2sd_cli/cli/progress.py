"""Progress is an observer: the sampler calls back per phase, rich draws it here."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from w2sd_cli.cli.output import err_console


class ObserverProgress:
    """Rich bars on stderr fed by a library callback: subclasses pick the columns and write ``observe``."""

    def __init__(self, *columns: ProgressColumn | str, quiet: bool = False) -> None:
        # outside a terminal (a pipe, a CI log) a live bar only leaves fragments: subclasses log lines instead
        self.lines = not quiet and not err_console.is_terminal
        self.progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), *columns,
                                 console=err_console, disable=quiet or self.lines)
        self.tasks: dict[str, TaskID] = {}

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
        label = str(info.get("label") or info.get("method") or "w2sd")
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=info.get("steps"), phase="")
        task = self.tasks[label]
        if info.get("phase") == "denoise":
            self.progress.update(task, completed=int(info["i"]) + 1, phase=info["phase"])
        else:
            self.progress.update(task, phase=info.get("phase", ""))


class DownloadProgress(ObserverProgress):
    """Download bars on stderr, fed by the store's events (``store.ensure_models``, ``pull``, ``verify``).

    One overall bar (bytes of every file still to fetch) and one bar per file, with speed and time left.
    Takes ``{"event": "file"|"overall"|"plan"|"done", ...}`` dicts, and the bare per-file dicts
    (``{"file", "bytes_done", "bytes_total", "status"}``) that ``cache verify`` sends.
    """

    def __init__(self, quiet: bool = False) -> None:
        from rich.progress import DownloadColumn, TimeRemainingColumn, TransferSpeedColumn

        super().__init__(DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), quiet=quiet)

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
        err_console.print(f"{where + ': ' if where else ''}{info.get('file')}"
                          f"{f' ({human(int(size))})' if isinstance(size, int) else ''} done", soft_wrap=True)

    def _overall(self, info: dict[str, Any]) -> None:
        total = info.get("bytes_total") or None
        if info.get("event") == "plan" and not info.get("files"):
            return
        label = f"{info.get('pair', 'all')}: {info.get('files_done', 0)}/{info.get('files_total', info.get('files'))}"
        key = f"\0overall:{info.get('pair')}"
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[key], description=label, completed=info.get("bytes_done", 0), total=total)

    def _file(self, info: dict[str, Any]) -> None:
        name = str(info.get("file"))
        status = str(info.get("status", ""))
        label = f"  {name} ({status})" if status in ("verifying",) else f"  {name}"
        key = f"{info.get('key', '')}\0{name}"
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(label, total=info.get("bytes_total"))
        self.progress.update(self.tasks[key], description=label, completed=info.get("bytes_done", 0),
                             total=info.get("bytes_total"))
