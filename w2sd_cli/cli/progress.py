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
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), *columns, console=err_console,
                                 disable=quiet)
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
