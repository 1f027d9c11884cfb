"""The Ray actor: loads the pair once, renders batches of items in a scratch folder and ships the files back.

It runs on any node of the cluster; nothing it writes outlives a call, so workers need no shared folder.
The actor class is plain Python here; the driver wraps it with ``ray.remote`` (this module imports no Ray).
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from w2sd_cli.plugin import BenchJob, WorkItem, render_batch


@dataclass(frozen=True)
class Fault:
    """Test hook: the actor that renders item ``item`` (an id or its start) exits abruptly, once.

    The item is rendered first, so the process dies with the result made but not delivered; ``marker``
    (a file the test can see) records that the fault has fired, so the item's retry succeeds.
    """

    item: str
    marker: str


class RenderWorker:
    """One actor: ``ready()`` loads the pair (once); ``render(batch)`` returns the batch's files and lines."""

    def __init__(self, job: BenchJob, fault: Fault | None = None) -> None:
        self.job, self.fault = job, fault
        self.engine: Any = None

    def ready(self) -> dict[str, Any]:
        """Load the pair; say where this actor runs (host, pid, device) and with which versions."""
        from w2sd_cli.plugin import library_versions

        started = time.perf_counter()
        if self.engine is None:
            self.engine = self.job.open_engine()
        provenance = self.engine.loaded.provenance()
        return {"host": socket.gethostname(), "pid": os.getpid(), "versions": library_versions(),
                "device": str(provenance.get("device", self.job.load.device)),
                "load_seconds": round(time.perf_counter() - started, 3)}

    def render(self, batch: list[WorkItem]) -> dict[str, Any]:
        """Render one batch; return ``files`` (path in the run folder -> bytes), ``lines`` and ``seconds``."""
        if self.engine is None:
            self.ready()
        with tempfile.TemporaryDirectory(prefix="w2sd-ray-") as scratch:
            root = Path(scratch)
            started = time.perf_counter()
            lines = render_batch(replace(self.job, run_dir=root), self.engine, batch, None)
            seconds = time.perf_counter() - started
            files = {path.relative_to(root).as_posix(): path.read_bytes()
                     for path in sorted(root.rglob("*")) if path.is_file()}
        self._maybe_fail(batch)
        return {"files": files, "lines": lines, "seconds": seconds}

    def _maybe_fail(self, batch: list[WorkItem]) -> None:
        if self.fault is None or not any(i.id.startswith(self.fault.item) for i in batch):
            return
        marker = Path(self.fault.marker)
        if marker.exists():
            return
        marker.write_text(f"{os.getpid()}\n", encoding="utf-8")
        os._exit(17)
