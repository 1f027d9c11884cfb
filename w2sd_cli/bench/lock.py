"""One `w2sd bench` process per share of a run folder: a second one on the same share is refused at once.

A process rendering the whole grid holds ``.bench.lock`` exclusively; a sharded one (``--shard i/N``,
torchrun, SLURM) holds it shared, plus ``.bench.rank-I.lock`` exclusively, which also names it (pid, host,
share, start time). The locks are ``flock`` locks: the kernel drops them when the process ends, however it
ends (a SIGKILL included), so a crashed run never blocks the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from w2sd_cli.bench.shard import Shard
from w2sd_cli.errors import BusyError

WHOLE = ".bench.lock"


def rank_lock(run_dir: Path, rank: int) -> Path:
    return run_dir / f".bench.rank-{rank}.lock"


@contextlib.contextmanager
def hold_run(run_dir: Path, shard: Shard) -> Iterator[None]:
    """Hold ``run_dir`` for ``shard`` while the block runs, or raise ``BusyError`` naming the holder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        whole = stack.enter_context(_open(run_dir / WHOLE))
        mode = fcntl.LOCK_EX if shard.world == 1 else fcntl.LOCK_SH
        if not _try(whole, mode):
            raise BusyError(_busy_text(run_dir, shard, _holders(run_dir)))
        own = stack.enter_context(_open(rank_lock(run_dir, shard.rank)))
        if not _try(own, fcntl.LOCK_EX):
            raise BusyError(_busy_text(run_dir, shard, _holders(run_dir, [shard.rank])))
        _sign(own, shard)
        yield


@contextlib.contextmanager
def _open(path: Path) -> Iterator[IO[str]]:
    """The lock file, opened without truncating what its holder wrote."""
    with path.open("a+", encoding="utf-8") as handle:
        yield handle


def _try(handle: IO[str], mode: int) -> bool:
    try:
        fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _sign(handle: IO[str], shard: Shard) -> None:
    """Write who holds the lock into the lock file (read by a refused process)."""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "rank": shard.rank, "world": shard.world,
              "source": shard.source, "since": datetime.now(UTC).isoformat(timespec="seconds")}
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(record) + "\n")
    handle.flush()


def _holders(run_dir: Path, ranks: list[int] | None = None) -> list[dict[str, Any]]:
    """The records of the rank locks that are really held now (a record left by a killed process is not)."""
    found = []
    paths = [rank_lock(run_dir, r) for r in ranks] if ranks is not None else sorted(run_dir.glob(".bench.rank-*.lock"))
    for path in paths:
        with contextlib.suppress(OSError), _open(path) as handle:
            if _try(handle, fcntl.LOCK_SH):  # nobody holds it
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                continue
            handle.seek(0)
            with contextlib.suppress(ValueError):
                record = json.loads(handle.read() or "{}")
                if isinstance(record, dict):
                    found.append(record)
    return found


def _who(record: dict[str, Any]) -> str:
    share = "the whole grid" if record.get("world", 1) == 1 else f"share {record.get('rank')}/{record.get('world')}"
    return (f"pid {record.get('pid', '?')} on {record.get('host', '?')}, rendering {share} since "
            f"{record.get('since', '?')}")


def _busy_text(run_dir: Path, shard: Shard, holders: list[dict[str, Any]]) -> str:
    who = "; ".join(_who(r) for r in holders) or "another process (it has not said which yet)"
    mine = "the whole grid" if shard.world == 1 else f"share {shard.rank}/{shard.world}"
    return (f"Another `w2sd bench` is already working in {run_dir} ({who}), so this one, for {mine}, stops here: "
            "both would render the same items. Wait for it to finish and run the same command again to resume, "
            "or, to render in parallel, give every process its own share of one split: --shard 0/2 and "
            "--shard 1/2 (torchrun and SLURM set the shares themselves).")
