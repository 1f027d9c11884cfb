"""Hub references through huggingface_hub, into the user's standard HF cache (reused, never copied).

huggingface_hub is imported inside the functions: the CLI must start without it.
"""

from __future__ import annotations

import fnmatch
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w2sd_cli.cards import ModelRef
from w2sd_cli.errors import DownloadError, ModelError, OfflineError

COMMIT = re.compile(r"^[0-9a-f]{40}$")
SAFE_ETAG = re.compile(r"^[0-9A-Za-z_-][0-9A-Za-z._-]{0,127}$")
PARTIAL_SUFFIX = ".w2sd-partial"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Hub repo: its repo-relative path, its size, and what its bytes must hash to.

    ``sha256`` is the card's pin when it pins this file, else the listing's LFS sha256; ``listed`` is the
    listing's own LFS sha256 and ``blob_id`` its git blob id for a plain (non-LFS) file.
    """

    path: str
    size: int | None
    sha256: str | None
    blob_id: str | None = None
    listed: str | None = None

    @property
    def etag(self) -> str | None:
        """The ETag the Hub must answer for this file (the blob's name in the HF cache)."""
        return self.listed or self.blob_id


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


def resolve(ref: ModelRef, revision: str | None = None, lock: Path | None = None) -> tuple[str, list[RemoteFile]]:
    """Ask the Hub for the commit ``revision`` (default: the card's) points at, and the files ``ref`` needs.

    ``lock`` is the pair's lock file when ``revision`` is the commit it recorded (named if that commit is gone).
    A card's ``sha256`` pins its one ``filename``: the file must hash to it, whatever the listing says.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    assert ref.repo_id is not None
    check_ref(ref)
    api = HfApi()
    revision = revision or ref.revision or "main"
    pin = ref.sha256 if ref.filename else None
    with hub_errors(ref, locked=revision if lock else None, lock=lock):
        commit = revision if COMMIT.match(revision) else str(api.repo_info(ref.repo_id, revision=revision).sha)
        tree = api.list_repo_tree(ref.repo_id, path_in_repo=ref.subfolder or None, revision=commit, recursive=True)
        files = [RemoteFile(f.path, f.size, pin or (f.lfs.sha256 if f.lfs else None),
                            None if f.lfs else f.blob_id, f.lfs.sha256 if f.lfs else None)
                 for f in tree if isinstance(f, RepoFile) and wanted(ref, f.path)]
    if not COMMIT.match(commit):
        raise DownloadError(f"The Hub answered {describe(ref)} with commit {commit[:60]!r}, not a 40-hex sha; check "
                            "HF_ENDPOINT.")
    for remote in files:
        check_relative(remote.path, f"The Hub listed a file of {describe(ref)} at")
    if not files:
        raise ModelError(f"{describe(ref)} has no files matching the card (subfolder {ref.subfolder!r}, filename "
                         f"{ref.filename!r}, allow_patterns {ref.allow_patterns}); fix the card.")
    return commit, sorted(files, key=lambda f: f.path)


def check_ref(ref: ModelRef) -> None:
    """Refuse a card whose ``subfolder`` or ``filename`` would leave the repository's folder."""
    for field in ("subfolder", "filename"):
        value = getattr(ref, field)
        if value:
            check_relative(value.strip("/") if field == "subfolder" else value, f"The card's {field}")


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
    check_ref(ref)
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
             progress: Callable[[dict[str, Any]], None] | None = None, workers: int = 1,
             slots: threading.Semaphore | None = None) -> Path:
    """Download ``files`` of ``ref`` at ``commit`` (cached ones are reused as they are); returns the snapshot.

    Files are fetched by w2sd's resumable downloader into the standard HF cache layout, ``workers`` at a
    time (and never more than ``slots`` allows across a whole pull). A cut, a full disk, Ctrl-C or a killed
    process keeps ``blobs/<etag>.w2sd-partial``, and the next run resumes it with ``Range``.
    """
    from concurrent.futures import ThreadPoolExecutor

    assert ref.repo_id is not None
    repo_id = ref.repo_id
    root = snapshot_dir(repo_id, commit)

    def one(remote: RemoteFile) -> None:
        if slots is None:
            return _download_file(ref, repo_id, commit, remote, progress)
        with slots:
            return _download_file(ref, repo_id, commit, remote, progress)

    if workers <= 1 or len(files) <= 1:
        for remote in files:
            one(remote)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(one, remote) for remote in files]:
                future.result()
    return root


def repo_folder(repo_id: str) -> Path:
    """``models--org--name`` in the HF cache: huggingface_hub's documented cache layout."""
    return cache_dir() / ("models--" + repo_id.replace("/", "--"))


def snapshot_dir(repo_id: str, commit: str) -> Path:
    return repo_folder(repo_id) / "snapshots" / commit


def partial_path(repo_id: str, etag: str) -> Path:
    """Where w2sd keeps the resumable partial download of one Hub blob."""
    return repo_folder(repo_id) / "blobs" / f"{etag}{PARTIAL_SUFFIX}"


def _download_file(ref: ModelRef, repo_id: str, commit: str, remote: RemoteFile,
                   progress: Callable[[dict[str, Any]], None] | None) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    from w2sd_cli.store import contain
    from w2sd_cli.store.layout import file_lock, record_verified

    if cached_file(repo_id, remote.path, commit):
        return
    refuse_listing(ref, remote)
    url = hf_hub_url(repo_id, remote.path, revision=commit)
    with hub_errors(ref):
        meta = get_hf_file_metadata(url, timeout=_timeout())
    etag = meta.etag or remote.etag or remote.sha256
    if not etag or not SAFE_ETAG.match(etag):
        raise DownloadError(f"The Hub gave no usable ETag for {remote.path} of {describe(ref)}; w2sd cannot place "
                            "it in the HF cache. Try again later, or check HF_ENDPOINT.")
    refuse_etag(ref, remote, etag)
    blob = repo_folder(repo_id) / "blobs" / etag
    link = snapshot_dir(repo_id, commit) / remote.path
    with file_lock(cache_dir() / ".locks" / repo_folder(repo_id).name / f"{etag}.lock"):
        if not blob.exists():
            part = _fetch_part(ref, url, remote, etag, meta.size, progress)
            contain.move(part, blob)
            if remote.sha256:
                record_verified(blob, remote.sha256)
        _link(link, blob)
    if progress:
        done = blob.stat().st_size
        progress({"file": remote.path, "bytes_done": done, "bytes_total": done, "status": "done"})


def _fetch_part(ref: ModelRef, url: str, remote: RemoteFile, etag: str, head_size: int | None,
                progress: Callable[[dict[str, Any]], None] | None) -> Path:
    """Download one Hub file to its partial file and check it (size, sha256 or git blob id); returns the part."""
    from w2sd_cli.store.checks import Expected, SourceMismatch, mismatch
    from w2sd_cli.store.fetch import download_to_part
    from w2sd_cli.store.layout import quarantine, sha256_file
    from w2sd_cli.store.plan import check_free
    from w2sd_cli.store.safety import WEIGHT_SUFFIXES

    size = remote.size if remote.size is not None else head_size
    part = partial_path(ref.repo_id or "", etag)
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    check_free(part.parent, (size or 0) - have, f"Downloading {remote.path} of {describe(ref)}")
    weights = Path(remote.path).suffix.lower() in WEIGHT_SUFFIXES
    download_to_part(url, part, size, progress, remote.path, hub_auth(url), weights=weights)
    digest = sha256_file(part, _verifying(progress, remote.path, part.stat().st_size)) if remote.sha256 else None
    why = mismatch(part, Expected(remote.sha256, remote.blob_id, remote.size), digest)
    if why is not None:
        moved = quarantine(part, "mismatch")
        raise SourceMismatch(f"{remote.path} of {describe(ref)} arrived with {why}. It was moved to {moved} and "
                             "not stored.", retry=True)
    return part


def refuse_listing(ref: ModelRef, remote: RemoteFile) -> None:
    """Refuse, before any byte, a file whose Hub listing gives another sha256 than the card pins."""
    from w2sd_cli.store.checks import SourceMismatch

    if remote.sha256 and remote.listed and remote.listed != remote.sha256:
        raise SourceMismatch(f"The Hub lists {remote.path} of {describe(ref)} with sha256 {remote.listed}, but the "
                             f"card pins {remote.sha256}: it is another file, so w2sd downloaded nothing from "
                             "there. If the file changed upstream on purpose, update the card's sha256 (or its "
                             "revision).", retry=False)


def refuse_etag(ref: ModelRef, remote: RemoteFile, etag: str) -> None:
    """Refuse a file whose ETag (its blob's name in the shared HF cache) contradicts the listing."""
    from w2sd_cli.store.checks import SourceMismatch

    if remote.etag and etag != remote.etag:
        raise SourceMismatch(f"The Hub answered {remote.path} of {describe(ref)} with ETag {etag}, but its listing "
                             f"says {remote.etag}. w2sd names HF-cache blobs by ETag, so it stored nothing rather "
                             "than file other bytes under that name. Try again later, or check HF_ENDPOINT.",
                             retry=False)


def _link(link: Path, blob: Path) -> None:
    """Point the snapshot entry ``link`` at ``blob`` with a relative link, as huggingface_hub does."""
    from w2sd_cli.store import contain

    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if os.path.realpath(link) == os.path.realpath(blob):
            return
        contain.remove(link)
    try:
        os.symlink(os.path.relpath(blob, link.parent), link)
    except OSError:  # no symlinks (some Windows setups): a hard link or a copy, like huggingface_hub
        try:
            os.link(blob, link)
        except OSError:
            import shutil

            shutil.copyfile(blob, link)


def hub_auth(url: str) -> Any:
    """The user's HF token for the Hub endpoint's own origin (never the storage hosts it redirects to)."""
    from huggingface_hub import get_token

    from w2sd_cli.store.fetch import Auth, may_carry_token, origin

    token = get_token()
    if not token or not may_carry_token(url):
        return None
    return Auth(origin(url), f"Bearer {token}")


def _verifying(progress: Callable[[dict[str, Any]], None] | None, name: str,
               size: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda done: progress({"file": name, "bytes_done": done, "bytes_total": size, "status": "verifying"})


def _timeout() -> float:
    from w2sd_cli.store.settings import download_timeout

    return download_timeout()


def check_relative(path: str, what: str) -> None:
    """Refuse a repo path that could leave its folder (``..``, absolute, backslashes, empty parts)."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts) or \
            re.match(r"^[A-Za-z]:", path) or "\0" in path:
        raise ModelError(f"{what} {path!r} would leave the repository's folder (absolute, `..` or empty parts); "
                         "w2sd downloads nothing for it. Fix the card (or, for a Hub listing, report the repo).")


@contextmanager
def hub_errors(ref: ModelRef, locked: str | None = None, lock: Path | None = None) -> Iterator[None]:
    """Turn huggingface_hub and network errors into w2sd errors that say what to do (its log lines muted).

    ``locked`` is the commit a pair's ``lock`` file recorded, when that is what is being asked for.
    """
    import logging

    from huggingface_hub import errors as hf

    name = describe(ref)
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    except hf.OfflineModeIsEnabled:
        raise OfflineError(f"{name} is not in the HF cache and HF_HUB_OFFLINE=1 forbids downloading it. Unset "
                           "HF_HUB_OFFLINE and run `w2sd pull` for the pair.") from None
    except hf.GatedRepoError as err:
        raise DownloadError(gated_message(ref, _status(err))) from None
    except hf.RepositoryNotFoundError as err:
        if _status(err) in (401, 403):
            raise DownloadError(gated_message(ref, _status(err), maybe=True)) from None
        raise DownloadError(f"{name}: the repository does not exist or is private; check the repo_id, or set "
                            "HF_TOKEN to a token that may read it.") from None
    except hf.RevisionNotFoundError:
        if locked:
            raise DownloadError(f"{name}: commit {locked}, which {lock} recorded for it, is gone from the "
                                "repository (its history was rewritten?). Delete that lock file to move the pair "
                                f"to what {ref.revision or 'main'} points at now (its files are hashed and "
                                "recorded again), or pin the card's revision to a commit that exists.") from None
        raise DownloadError(f"{name}: revision {ref.revision or 'main'!r} does not exist; fix the card's "
                            "revision (a branch, tag or 40-hex commit of that repository).") from None
    except hf.RemoteEntryNotFoundError:
        raise DownloadError(f"{name}: a file the card names is not in the repository; fix the card.") from None
    except hf.HfHubHTTPError as err:
        status = _status(err) or "?"
        if status in (401, 403):
            raise DownloadError(gated_message(ref, status, maybe=True)) from None
        raise DownloadError(f"The Hub refused {name} (HTTP {status}). Try again later; for HTTP 401/403 set "
                            "HF_TOKEN.") from None
    except OSError as err:
        raise _os_error(name, err) from None
    except Exception as err:
        if type(err).__module__.startswith("httpx") or isinstance(err, hf.LocalEntryNotFoundError):
            raise DownloadError(f"Cannot reach the Hub for {name} ({type(err).__name__}). Check your connection "
                                "(or HF_ENDPOINT), then run the same command again; finished files are kept.") from None
        raise
    finally:
        logger.setLevel(level)


def gated_message(ref: ModelRef, status: int | None, maybe: bool = False) -> str:
    """One paragraph for a refused gated repo (SD3.5, FLUX.1-dev): the page where the licence is accepted, and
    HF_TOKEN."""
    from huggingface_hub import constants, get_token

    page = f"{constants.ENDPOINT.rstrip('/')}/{ref.repo_id}"
    code = f" (HTTP {status})" if status else ""
    first = (f"The Hub refused {describe(ref)}{code}; if the repository is gated (as SD3.5 and FLUX.1-dev are), "
             if maybe else f"{describe(ref)} is gated{code}: ")
    if get_token():
        token = ("HF_TOKEN (or your `hf auth login` token) is set, so the Hub refused that token: accept the licence "
                 "with the account the token belongs to, and check that the token may read gated repos (a "
                 "fine-grained token needs \"read access to contents of all public gated repos you can access\").")
    else:
        token = (f"No token is set: make one at {constants.ENDPOINT.rstrip('/')}/settings/tokens and export it as "
                 "HF_TOKEN (or run `hf auth login`).")
    return (f"{first}its licence must be accepted before w2sd can download it. Open {page}, log in and accept the "
            f"licence there. {token} Then run the same command again; finished files are kept.")


def _status(err: Exception) -> int | None:
    response = getattr(err, "response", None)
    return int(response.status_code) if response is not None else None


def _os_error(name: str, err: OSError) -> DownloadError:
    import errno

    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError(f"The disk holding the HF cache ({cache_dir()}) filled up while downloading {name}. "
                             "Finished files and the partial one are kept; free space and run the same command "
                             "again: it resumes.")
    from w2sd_cli.store.redact import scrub

    return DownloadError(f"Downloading {name} failed: {scrub(str(err.strerror or err))}. Run the same command "
                         "again; finished files and partial downloads are kept and resumed.")
