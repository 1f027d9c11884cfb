"""Hub references through huggingface_hub, into the user's standard HF cache (reused, never copied).

huggingface_hub is imported inside the functions: the CLI must start without it.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w2sd_cli.cards import ModelRef
from w2sd_cli.errors import DownloadError, ModelError, OfflineError

COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Hub repo: its repo-relative path, size and (for LFS files) sha256."""

    path: str
    size: int | None
    sha256: str | None


def cache_dir() -> Path:
    """The HF hub cache huggingface_hub uses (``HF_HUB_CACHE`` / ``HF_HOME``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def env_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for no network at all."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def describe(ref: ModelRef) -> str:
    """``repo_id[/subfolder][/filename]@revision`` for messages."""
    where = "/".join(p for p in (ref.repo_id, ref.subfolder, ref.filename) if p)
    return f"{where}@{ref.revision or 'main'}"


def wanted(ref: ModelRef, path: str) -> bool:
    """Whether repo file ``path`` belongs to ``ref`` (subfolder, filename, then ``allow_patterns``)."""
    prefix = f"{ref.subfolder.strip('/')}/" if ref.subfolder else ""
    if not path.startswith(prefix):
        return False
    rel = path[len(prefix):]
    if ref.filename:
        return rel == ref.filename
    return not ref.allow_patterns or any(fnmatch.fnmatch(rel, p) for p in ref.allow_patterns)


def resolve(ref: ModelRef, revision: str | None = None) -> tuple[str, list[RemoteFile]]:
    """Ask the Hub for the commit ``revision`` (default: the card's) points at, and the files ``ref`` needs."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    assert ref.repo_id is not None
    api = HfApi()
    revision = revision or ref.revision or "main"
    with hub_errors(ref):
        commit = revision if COMMIT.match(revision) else str(api.repo_info(ref.repo_id, revision=revision).sha)
        tree = api.list_repo_tree(ref.repo_id, path_in_repo=ref.subfolder or None, revision=commit, recursive=True)
        files = [RemoteFile(f.path, f.size, f.lfs.sha256 if f.lfs else None)
                 for f in tree if isinstance(f, RepoFile) and wanted(ref, f.path)]
    if not files:
        raise ModelError(f"{describe(ref)} has no files matching the card (subfolder {ref.subfolder!r}, filename "
                         f"{ref.filename!r}, allow_patterns {ref.allow_patterns}); fix the card.")
    return commit, sorted(files, key=lambda f: f.path)


def cached_file(repo_id: str, path: str, revision: str) -> Path | None:
    """The cached copy of one repo file at ``revision`` (a commit, branch or tag), or ``None``; no network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, path, revision=revision)
    return Path(found) if isinstance(found, str) and os.path.exists(found) else None


def snapshot_root(file_path: Path, repo_path: str) -> Path:
    """The snapshot folder holding ``file_path`` (the cached copy of ``repo_path``)."""
    root = file_path
    for _ in repo_path.split("/"):
        root = root.parent
    return root


def result_path(ref: ModelRef, root: Path) -> Path:
    """What ``locate`` returns for ``ref`` inside snapshot ``root``: the file or the (sub)folder."""
    path = root / ref.subfolder if ref.subfolder else root
    return path / ref.filename if ref.filename else path


def local_snapshot(ref: ModelRef) -> Path | None:
    """The cached snapshot for ``ref``'s revision when no lock file lists its files; no network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    assert ref.repo_id is not None
    revision = ref.revision or "main"
    if ref.filename:
        path = "/".join(p for p in (ref.subfolder, ref.filename) if p)
        found = cached_file(ref.repo_id, path, revision)
        return snapshot_root(found, path) if found else None
    try:
        root = Path(snapshot_download(ref.repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    target = result_path(ref, root)
    return root if target.exists() and any(target.iterdir()) else None


def download(ref: ModelRef, commit: str, files: list[RemoteFile],
             progress: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Download ``files`` of ``ref`` at ``commit`` (cached ones are reused as they are); returns the snapshot."""
    from huggingface_hub import hf_hub_download

    assert ref.repo_id is not None
    root: Path | None = None
    for remote in files:
        with hub_errors(ref):
            got = Path(hf_hub_download(ref.repo_id, remote.path, revision=commit,
                                       tqdm_class=_relay(progress, remote.path, remote.size)))
        root = snapshot_root(got, remote.path)
        if progress:
            size = got.stat().st_size
            progress({"file": remote.path, "bytes_done": size, "bytes_total": size, "status": "done"})
    assert root is not None
    return root


@contextmanager
def hub_errors(ref: ModelRef) -> Iterator[None]:
    """Turn huggingface_hub and network errors into w2sd errors that say what to do."""
    from huggingface_hub import errors as hf

    name = describe(ref)
    try:
        yield
    except hf.OfflineModeIsEnabled:
        raise OfflineError(f"{name} is not in the HF cache and HF_HUB_OFFLINE=1 forbids downloading it. Unset "
                           "HF_HUB_OFFLINE and run `w2sd pull` for the pair.") from None
    except hf.GatedRepoError:
        raise DownloadError(f"{name} is gated: accept its licence on the Hub page, then set HF_TOKEN (or run "
                            "`hf auth login`) and try again.") from None
    except hf.RepositoryNotFoundError:
        raise DownloadError(f"{name}: the repository does not exist or is private; check the repo_id, or set "
                            "HF_TOKEN to a token that may read it.") from None
    except hf.RevisionNotFoundError:
        raise DownloadError(f"{name}: revision {ref.revision!r} does not exist; fix the card.") from None
    except hf.RemoteEntryNotFoundError:
        raise DownloadError(f"{name}: a file the card names is not in the repository; fix the card.") from None
    except hf.HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise DownloadError(f"The Hub refused {name} (HTTP {status}). Try again later; for HTTP 401/403 set "
                            "HF_TOKEN.") from None
    except OSError as err:
        raise _os_error(name, err) from None
    except Exception as err:
        if type(err).__module__.startswith("httpx") or isinstance(err, hf.LocalEntryNotFoundError):
            raise DownloadError(f"Cannot reach the Hub for {name} ({type(err).__name__}). Check your connection "
                                "(or HF_ENDPOINT), then run the same command again; finished files are kept.") from None
        raise


def _os_error(name: str, err: OSError) -> DownloadError:
    import errno

    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError(f"The disk holding the HF cache ({cache_dir()}) filled up while downloading {name}. "
                             "Files already finished are kept; free space and run the same command again.")
    return DownloadError(f"Downloading {name} failed: {err}. Run the same command again; finished files are kept.")


def _relay(progress: Callable[[dict[str, Any]], None] | None, label: str, size: int | None) -> type:
    """A tqdm-shaped class that forwards huggingface_hub's byte counts to ``progress``."""

    class Relay:
        def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kwargs: Any) -> None:
            self.n = initial
            self.total = total or size

        def update(self, n: int | None = 1) -> None:
            self.n += n or 0
            if progress:
                progress({"file": label, "bytes_done": self.n, "bytes_total": self.total, "status": "downloading"})

        def close(self) -> None:
            return None

        def __enter__(self) -> Relay:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    return Relay
