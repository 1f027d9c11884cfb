"""Where the download store keeps things under ``W2SD_HOME``, and the small file tools every part shares.

``store/blobs/<sha256>/<name>``   finished files, content-addressed (the folder name is the hash)
``store/partial/<sha256>.part``   downloads in progress, resumed by the next run
``store/quarantine/``             files that failed verification (kept, never silently deleted)
``store/locks/``                  one file lock per blob
``store/verified.json``           sha256 of files already hashed, keyed by path, size and mtime
``lock/<pair>.json``              per-pair lock files: resolved commits and hashes (see ``pairlock``)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from w2sd_cli.errors import DownloadError
from w2sd_cli.files import write_text_atomic
from w2sd_cli.paths import home
from w2sd_cli.store.settings import lock_timeout

CHUNK = 1024 * 1024
LOCK_WAIT_S: float | None = None  # tests may set it; otherwise W2SD_LOCK_TIMEOUT (default 1 h)


def store_dir() -> Path:
    return home() / "store"


def blob_dir(sha256: str) -> Path:
    return store_dir() / "blobs" / sha256


def part_path(sha256: str) -> Path:
    return store_dir() / "partial" / f"{sha256}.part"


def quarantine_dir() -> Path:
    return store_dir() / "quarantine"


def pair_lock_dir() -> Path:
    return home() / "lock"


def find_blob(sha256: str) -> Path | None:
    """The finished file stored under ``sha256``, or ``None``."""
    folder = blob_dir(sha256)
    if not folder.is_dir():
        return None
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return files[0] if files else None


def blob_lock(name: str) -> contextlib.AbstractContextManager[None]:
    """Hold the file lock named ``name``; a lock left by a dead process is free (the OS drops it)."""
    return file_lock(store_dir() / "locks" / f"{name}.lock")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold the file lock at ``path``, waiting up to ``W2SD_LOCK_TIMEOUT`` for another process."""
    import filelock

    wait = LOCK_WAIT_S if LOCK_WAIT_S is not None else lock_timeout()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path), timeout=wait)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise DownloadError(
            f"Another process has held the lock {path} for over {wait:.0f} s (W2SD_LOCK_TIMEOUT). If no other "
            "w2sd or huggingface_hub download is running, delete that file and retry."
        ) from None
    try:
        yield
    finally:
        lock.release()


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """The sha256 of a file, read in 1 MiB chunks; ``progress`` gets the bytes read so far."""
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file, fsync it and rename it over ``path``."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; an empty dict when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def quarantine(path: Path, label: str) -> Path:
    """Move a file that failed verification aside (same filesystem, so nothing is copied).

    Only a file inside w2sd's managed folders is moved (``contain``); anything else is a ``ModelError``.
    """
    from w2sd_cli.store import contain

    target_dir = quarantine_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{label}"
    target = target_dir / f"{stamp}-{path.name}"
    for n in range(2, 1000):  # two failures of one file within a second must not overwrite each other
        if not (target.is_symlink() or target.exists()):
            break
        target = target_dir / f"{stamp}-{n}-{path.name}"
    try:
        return contain.move(path, target)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        real = Path(os.path.realpath(path))  # another disk (the HF cache): never copy GBs
        return contain.move(path, real.with_name(f"{real.name}.w2sd-quarantined"))


def hash_verified(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """The sha256 of ``path``, hashed once: later calls trust it while the size and mtime are unchanged."""
    real = path.resolve()
    stat = real.stat()
    index_path = store_dir() / "verified.json"
    key = str(real)
    known = read_json(index_path).get(key)
    if isinstance(known, dict) and known.get("size") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns:
        return str(known["sha256"])
    digest = sha256_file(real, progress)
    record_verified(real, digest)
    return digest


def record_verified(path: Path, sha256: str) -> None:
    """Remember that ``path`` (as it is now) has ``sha256``."""
    real = path.resolve()
    stat = real.stat()
    index_path = store_dir() / "verified.json"
    with blob_lock("verified-index"):
        index = read_json(index_path)
        index[str(real)] = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        index = {k: v for k, v in index.items() if Path(k).exists()}
        write_json_atomic(index_path, index)
