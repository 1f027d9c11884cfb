"""``locate`` (one model, downloaded if needed, verified before use) and ``pull`` (every model of a pair)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2sd_cli.cards import ModelRef, PairCard
from w2sd_cli.errors import ModelError, OfflineError
from w2sd_cli.store import hub, pairlock
from w2sd_cli.store.fetch import fetch_url, redact
from w2sd_cli.store.layout import find_blob, hash_verified, part_path, quarantine
from w2sd_cli.store.plan import PlannedModel, check_free, files_under, human, plan_pull
from w2sd_cli.store.safety import WEIGHT_SUFFIXES, check_weights_file

Progress = Callable[[dict[str, Any]], None]


@dataclass
class Located:
    """A model found on disk: the path to hand to loaders, its files, and the hashes they must have."""

    path: Path
    commit: str | None = None
    files: dict[str, Path] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)


def locate(ref: ModelRef, *, offline: bool = False, allow_pickle: bool = False, progress: Progress | None = None,
           pair: str | None = None, key: str | None = None) -> Path:
    """A local path (file or folder) for ``ref``, downloaded first if needed and verified before use.

    Args:
        ref: the card's model reference.
        offline: make no network call (also implied by ``HF_HUB_OFFLINE=1``); a missing model is an
            ``OfflineError`` naming the ``w2sd pull`` command.
        allow_pickle: accept pickle checkpoints (load them with ``safety.load_pickle_checkpoint``).
        progress: called with ``{"file", "bytes_done", "bytes_total", "status"}`` dicts while downloading.
        pair, key: the pair and model key ``ref`` belongs to; with them the pair's lock file pins the Hub
            commit, records hashes at the first download and checks them afterwards.

    Returns:
        The file, or the folder (a Hub snapshot or its subfolder), to load.
    """
    found = _fetch(ref, offline=offline or hub.env_offline(), progress=progress, pair=pair, key=key)
    _check_safety(found, allow_pickle)
    return found.path


def pull(card: PairCard, keys: list[str] | None = None, *, progress: Progress | None = None,
         offline: bool = False) -> list[Path]:
    """Download and verify every model of ``card`` (or those in ``keys``), after checking free space.

    Pickle checkpoints are downloaded (and refused later, at use, without ``--allow-pickle``); HTML, JSON and
    broken safetensors files are refused here.

    Returns:
        One local path per model, in the order of ``keys`` (or of the card).
    """
    offline = offline or hub.env_offline()
    plan = plan_pull(card, keys, offline=offline)
    if offline and not plan.present:
        missing = ", ".join(m.key for m in plan.models if not m.present)
        raise OfflineError(f"Pair {card.name} is missing {missing} and w2sd is offline. Run `w2sd pull {card.name}` "
                           "without --offline / HF_HUB_OFFLINE=1.")
    plan.check_space()
    paths = []
    for model in plan.models:
        found = _fetch(model.ref, offline=offline, progress=progress, pair=card.name, key=model.key, planned=model)
        _check_safety(found, allow_pickle=True)
        paths.append(found.path)
    return paths


def _fetch(ref: ModelRef, *, offline: bool, progress: Progress | None, pair: str | None, key: str | None,
           planned: PlannedModel | None = None) -> Located:
    recorded = pairlock.entry(pair, key, ref) if pair and key else None
    if ref.path:
        found = _local(ref)
    elif ref.url:
        found = _url(ref, offline, progress, pair)
    else:
        found = _hub(ref, recorded, offline, progress, pair, planned)
    if ref.sha256 and found.path.is_file():
        found.expected.setdefault(found.path.name, ref.sha256)
    _verify(found, recorded, pair, own=not ref.path, progress=progress)
    if pair and key and recorded is None and not (ref.repo_id and found.commit is None):
        pairlock.record(pair, key, ref, found.commit, {
            rel: {"sha256": hash_verified(p, _hashing(progress, rel, p)), "size": p.stat().st_size}
            for rel, p in found.files.items()})
    return found


def _hashing(progress: Progress | None, name: str, path: Path) -> Callable[[int], None] | None:
    """Report hashing of a big file as a ``verifying`` phase."""
    if progress is None:
        return None
    size = path.stat().st_size
    return lambda done: progress({"file": name, "bytes_done": done, "bytes_total": size, "status": "verifying"})


def _local(ref: ModelRef) -> Located:
    path = local_path(ref)
    if not path.exists():
        raise ModelError(f"{path} does not exist. Fix the card's path, or put the model there.")
    return Located(path, None, files_under(path))


def local_path(ref: ModelRef) -> Path:
    """A ``path`` reference's file or folder (with its ``subfolder`` and ``filename``, if any)."""
    path = Path(str(ref.path)).expanduser()
    return path.joinpath(*(p for p in (ref.subfolder, ref.filename) if p))


def local_status(ref: ModelRef) -> str:
    """``here``, ``partial (N of M)`` or ``not downloaded``, from disk only (no network, no hashing)."""
    if ref.path:
        return "here" if local_path(ref).exists() else "missing (local path)"
    if ref.url and ref.sha256:
        if find_blob(ref.sha256):
            return "here"
        part = part_path(ref.sha256)
        if part.exists():
            return f"partial ({human(part.stat().st_size)} of {human(ref.size) if ref.size else '?'})"
        return "not downloaded"
    return "here (HF cache)" if hub.local_snapshot(ref) else "not downloaded"


def _url(ref: ModelRef, offline: bool, progress: Progress | None, pair: str | None) -> Located:
    assert ref.url is not None and ref.sha256 is not None
    blob = find_blob(ref.sha256)
    if blob is None:
        if offline:
            raise _missing(redact(ref.url), pair)
        part = part_path(ref.sha256)
        check_free(part.parent, (ref.size or 0) - (part.stat().st_size if part.exists() else 0),
                   f"Downloading {redact(ref.url)}")
        blob = fetch_url(ref.url, ref.sha256, size=ref.size, progress=progress)
    return Located(blob, None, {blob.name: blob}, {blob.name: ref.sha256})


def _hub(ref: ModelRef, recorded: dict[str, Any] | None, offline: bool, progress: Progress | None,
         pair: str | None, planned: PlannedModel | None) -> Located:
    assert ref.repo_id is not None
    commit = recorded.get("commit") if recorded else None
    if recorded and commit:
        cached = {p: hub.cached_file(ref.repo_id, p, commit) for p in recorded["files"]}
        if cached and all(cached.values()):
            first, path = next(iter(cached.items()))
            assert path is not None
            return Located(hub.result_path(ref, hub.snapshot_root(path, first)), commit,
                           {p: f for p, f in cached.items() if f is not None})
    if offline:
        root = None if recorded else hub.local_snapshot(ref)
        if root is None:
            raise _missing(f"hf:{hub.describe(ref)}", pair)
        target = hub.result_path(ref, root)
        return Located(target, None, {p.relative_to(root).as_posix(): p for p in files_under(target).values()})
    if planned is not None and planned.remotes and planned.commit:
        commit, remotes = planned.commit, list(planned.remotes)
    else:
        commit, remotes = hub.resolve(ref, commit)
    need = sum(r.size or 0 for r in remotes if hub.cached_file(ref.repo_id, r.path, commit) is None)
    check_free(hub.cache_dir(), need, f"Downloading {hub.describe(ref)}")
    root = hub.download(ref, commit, remotes, progress)
    return Located(hub.result_path(ref, root), commit, {r.path: root / r.path for r in remotes},
                   {r.path: r.sha256 for r in remotes if r.sha256})


def _verify(found: Located, recorded: dict[str, Any] | None, pair: str | None, own: bool,
            progress: Progress | None = None) -> None:
    """Check pinned and recorded hashes; a bad downloaded file is quarantined, a user's own file is not touched."""
    expected = dict(found.expected)
    for rel, info in (recorded or {}).get("files", {}).items():
        if rel not in found.files:
            raise ModelError(f"{rel}, recorded in {pairlock.lock_path(pair or '?')}, is gone from {found.path}. "
                             f"Run `w2sd pull {pair}` to fetch it again.")
        expected.setdefault(rel, info["sha256"])
    for rel, sha in expected.items():
        path = found.files.get(rel)
        if path is None:
            continue
        got = hash_verified(path, _hashing(progress, rel, path))
        if got != sha:
            raise ModelError(_mismatch(path, sha, got, pair, own))


def _mismatch(path: Path, expected: str, got: str, pair: str | None, own: bool) -> str:
    size = human(path.stat().st_size)
    if own:
        real = path.resolve()
        moved = quarantine(real, "mismatch")
        if path.is_symlink():
            path.unlink()
        return (f"{path} ({size}) has sha256 {got}, but {expected} was expected: it is corrupt or changed. It was "
                f"moved to {moved}; run `w2sd pull {pair or 'PAIR'}` to download it again.")
    lock = f" in {pairlock.lock_path(pair)}" if pair else ""
    return (f"{path} ({size}) has sha256 {got}, but {expected} was expected{lock}. w2sd does not touch your own "
            "files: restore the original, or, if the change is intended, fix the card's sha256 or delete the lock "
            "file so it is recorded again.")


def _check_safety(found: Located, allow_pickle: bool) -> None:
    if found.path.is_file():
        check_weights_file(found.path, allow_pickle)
        return
    for path in found.files.values():
        if path.suffix.lower() in WEIGHT_SUFFIXES:
            check_weights_file(path, allow_pickle)


def _missing(what: str, pair: str | None) -> OfflineError:
    how = f"`w2sd pull {pair}`" if pair else "`w2sd pull PAIR` for the pair that uses it"
    why = "HF_HUB_OFFLINE=1" if hub.env_offline() else "--offline"
    return OfflineError(f"{what} is not downloaded yet and w2sd is offline ({why}), so it made no network call. "
                        f"Run {how} while online, then run this again.")

