"""A run's manifest: one JSON line per finished item, one part file per rank, merged by id.

An item's output is written atomically first; then its line is appended and fsynced. A kill therefore
loses at most the item in flight, and a torn last line is ignored (and cut off before the next append).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from w2sd_cli.files import write_text_atomic

MERGED = "manifest.jsonl"
PART_GLOB = "manifest.rank-*.jsonl"
TIMING_FIELDS = frozenset({"seconds", "warmup", "finished_at", "rank", "world", "host"})
"""Fields that differ between two runs of the same items (ignored when comparing manifests)."""


def part_path(run_dir: Path, rank: int) -> Path:
    return run_dir / f"manifest.rank-{rank}.jsonl"


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON objects in a JSONL file; a torn or garbled line is skipped."""
    if not path.exists():
        return []
    found = []
    for raw in path.read_bytes().split(b"\n"):
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            found.append(value)
    return found


def all_lines(run_dir: Path) -> list[dict[str, Any]]:
    """Lines of every part and of the merged manifest, parts first (sorted by name)."""
    lines: list[dict[str, Any]] = []
    for path in sorted(run_dir.glob(PART_GLOB)):
        lines += read_lines(path)
    return lines + read_lines(run_dir / MERGED)


def finished(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Finished items by id: a line whose output file is still there."""
    done: dict[str, dict[str, Any]] = {}
    for line in all_lines(run_dir):
        if line["id"] not in done and (run_dir / str(line.get("file", ""))).is_file():
            done[line["id"]] = line
    return done


class PartWriter:
    """Appends lines to one rank's part file, fsyncing each; repairs a torn tail first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(path)
        self._handle: IO[str] = path.open("a", encoding="utf-8")

    def append(self, line: dict[str, Any]) -> None:
        self._handle.write(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    with path.open("rb+") as handle:
        handle.truncate(data.rfind(b"\n") + 1)
        os.fsync(handle.fileno())


@dataclass(frozen=True)
class MergeResult:
    """The merged manifest: where, how many items of the grid are done, and which are missing."""

    path: Path
    done: int
    total: int
    missing: Collection[str]

    @property
    def complete(self) -> bool:
        return self.done == self.total


@contextlib.contextmanager
def merge_lock(run_dir: Path, name: str = ".merge.lock") -> Iterator[None]:
    """An exclusive lock in the run folder (ranks finishing together merge one after another)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / name).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def merge(run_dir: Path, order: Sequence[str]) -> MergeResult:
    """Union every part by id into ``manifest.jsonl``, in grid order; idempotent, safe to run on every rank.

    Args:
        run_dir: the run folder.
        order: the grid's ids in canonical order; lines for other ids are dropped. A run plan's ``ids``
            (``GridIds``) place each finished line by its ``locate`` instead, so merging costs the finished
            items, not the grid.
    """
    with merge_lock(run_dir):
        done = finished(run_dir)
        locate = getattr(order, "locate", None)
        if callable(locate):
            placed = sorted((at, line["id"]) for line in done.values() if (at := locate(line)) is not None)
            lines = [done[i] for _at, i in placed]
            missing: Collection[str] = _Missing(order, {i for _at, i in placed})
        else:
            lines = [done[i] for i in order if i in done]
            missing = [i for i in order if i not in done]
        text = "".join(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n" for line in lines)
        write_text_atomic(run_dir / MERGED, text)
    return MergeResult(run_dir / MERGED, len(lines), len(order), missing)


class _Missing(Collection[str]):
    """The unfinished ids of a grid, counted at once and listed only on demand."""

    def __init__(self, order: Sequence[str], done: set[str]) -> None:
        self.order, self.done = order, done

    def __len__(self) -> int:
        return len(self.order) - len(self.done)

    def __iter__(self) -> Iterator[str]:
        return (i for i in self.order if i not in self.done)

    def __contains__(self, item: object) -> bool:
        return item in self.order and item not in self.done


def comparable(lines: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lines without their timing fields (what must match between an interrupted and a clean run)."""
    return [{k: v for k, v in line.items() if k not in TIMING_FIELDS} for line in lines]
