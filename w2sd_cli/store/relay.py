"""The serialised events of a pull with parallel downloads: per-file callbacks in, plan/file/overall events out."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Progress = Callable[[dict[str, Any]], None]


class Relay:
    """Turns the per-file callbacks of parallel downloads into ``ensure_models``'s serialised events."""

    def __init__(self, pair: str, plan: Any, observer: Progress | None) -> None:
        self.pair = pair
        self.observer = observer
        self.lock = threading.Lock()
        missing = [(m.key, f) for m in plan.models for f in m.files if not f.present]
        self.total = sum(f.size or 0 for _, f in missing)
        self.files_total = len(missing)
        self.done: dict[tuple[str, str], int] = {(k, f.name): f.partial for k, f in missing}
        self.sizes: dict[tuple[str, str], int] = {}
        self.finished: set[tuple[str, str]] = set()
        self.emit({"event": "plan", "models": [m.key for m in plan.models], "files": len(missing),
                   "bytes_total": self.total, "unknown_sizes": any(f.size is None for _, f in missing)})

    def emit(self, event: dict[str, Any]) -> None:
        if self.observer is not None:
            with self.lock:
                self.observer({**event, "pair": self.pair})

    def for_key(self, key: str) -> Progress:
        def observe(info: dict[str, Any]) -> None:
            name = (key, str(info.get("file")))
            status = info.get("status")
            with self.lock:
                if status == "downloading" or (status == "done" and name not in self.finished):
                    if name not in self.done and name not in self.finished:
                        self.files_total += 1
                        if isinstance(info.get("bytes_total"), int):
                            self.total += int(info["bytes_total"])
                    if status == "downloading":
                        self.done[name] = int(info.get("bytes_done") or 0)
                    else:
                        self.finished.add(name)
                        self.done[name] = int(info.get("bytes_done") or self.done.get(name, 0))
                overall = {"event": "overall", "pair": self.pair, "bytes_done": sum(self.done.values()),
                           "bytes_total": max(self.total, sum(self.done.values())),
                           "files_done": len(self.finished), "files_total": self.files_total}
                if self.observer is not None:
                    self.observer({**info, "event": "file", "pair": self.pair, "key": key})
                    self.observer(overall)
        return observe
