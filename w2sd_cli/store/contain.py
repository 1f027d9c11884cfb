"""The one containment rule: w2sd moves or deletes a file only when it lies inside a folder it manages.

Managed folders are w2sd's store, its pair lock files and the HF hub cache (where huggingface_hub and w2sd put
the Hub downloads). The test compares real paths with ``os.path.commonpath``, never string prefixes. For a
move, the file's real target counts (a snapshot link to a user's own file is not w2sd's to move); for a
delete, the directory entry itself counts (a link inside the store is removed, never what it points to).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from w2sd_cli.errors import ModelError


def managed_roots() -> list[str]:
    """Real paths of the folders w2sd may change: its store, its lock files and the HF hub cache."""
    from w2sd_cli.store.layout import pair_lock_dir, store_dir

    roots = [store_dir(), pair_lock_dir()]
    try:
        from w2sd_cli.store.hub import cache_dir

        roots.append(cache_dir())
    except ImportError:  # a trimmed install without huggingface_hub
        pass
    return [os.path.realpath(r) for r in roots]


def _entry(path: Path | str) -> str:
    """The real path of the directory entry ``path`` (its folder resolved, its last component kept)."""
    absolute = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))


def inside(path: Path | str, root: Path | str) -> bool:
    """Whether ``path`` (already a real path) lies at or below ``root`` (already a real path)."""
    try:
        return os.path.commonpath([str(path), str(root)]) == str(root)
    except ValueError:  # different drives
        return False


def owns_entry(path: Path | str) -> bool:
    """Whether the directory entry ``path`` lies inside a managed folder (what a delete needs)."""
    entry = _entry(path)
    return any(inside(entry, root) and entry != root for root in managed_roots())


def owns_file(path: Path | str) -> bool:
    """Whether ``path`` and the file it really is both lie inside a managed folder (what a move needs)."""
    real = os.path.realpath(path)
    return owns_entry(path) and any(inside(real, root) and real != root for root in managed_roots())


def move(src: Path, dst: Path) -> Path:
    """Rename ``src`` (its real file) to ``dst``; refuses unless both lie inside w2sd's managed folders."""
    real = Path(os.path.realpath(src))
    if not (owns_file(src) and owns_entry(dst)):
        raise ModelError(_refusal("move", src))
    os.replace(real, dst)
    return dst


def remove(path: Path) -> bool:
    """Delete the entry ``path`` (a file, a link, or a folder tree) if w2sd manages it; False if it refuses.

    A link is removed as a link; a folder is removed without following links inside it.
    """
    if not owns_entry(path):
        return False
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)
    return True


def _refusal(verb: str, path: Path) -> str:
    real = os.path.realpath(path)
    shown = path if str(real) == str(path) else f"{path} (really {real})"
    return (f"w2sd will not {verb} {shown}: it lies outside the folders w2sd manages (its store under W2SD_HOME "
            "and the HF cache). Nothing was changed; check that file yourself.")
