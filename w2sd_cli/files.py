"""Writing files so that an interruption never leaves a partial one behind."""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is fsynced and renamed onto ``target``.

    On any exception (Ctrl-C included) the temporary file is removed and ``target`` is untouched.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs follow the umask like any file
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as err:
        if err.filename is None:  # a write or fsync says ENOSPC without saying where: name the file
            err.filename = str(target)
        raise
    finally:
        tmp.unlink(missing_ok=True)


@functools.cache
def current_umask() -> int:
    """The process umask (read once, by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text_atomic(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


PROBE = b"w2sd write probe\n"


def ensure_writable(folder: Path, what: str) -> Path:
    """Prove a file can be written in ``folder`` (made if missing): create, write, fsync and delete a probe.

    Called before any model loads or any sampling starts, so a read-only, full or misnamed folder is reported
    at once rather than after the work. Folders it had to make are removed again (when still empty).

    Args:
        folder: where outputs will go.
        what: the folder's role in the message, e.g. ``"the bench run folder"``.

    Returns:
        ``folder``.

    Raises:
        PathError: naming the folder, what is wrong (errno) and the fix.
    """
    from w2sd_cli.errors import from_os_error

    made = [p for p in (folder, *folder.parents) if not os.path.lexists(p)]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".w2sd-probe.", suffix=".tmp", dir=folder)
        try:
            os.write(fd, PROBE)
            os.fsync(fd)
        finally:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
    except OSError as err:
        raise from_os_error(err, path=folder, action=f"write {what}") from None
    finally:
        for created in made:  # deepest first: the probe leaves no empty folders behind
            with contextlib.suppress(OSError):
                created.rmdir()
    return folder
