"""``locate`` (one model, downloaded if needed, verified before use), ``ensure_models`` (a pair's models, a few
downloads at a time, with per-file and overall progress) and ``pull`` (every model of a pair)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2sd_cli.cards import ModelRef, PairCard
from w2sd_cli.errors import DownloadError, ModelError, OfflineError
from w2sd_cli.store import contain, hub, pairlock
from w2sd_cli.store.checks import Expected, SourceMismatch, mismatch
from w2sd_cli.store.fetch import broken_at_source, fetch_url, redact, unusable_reason
from w2sd_cli.store.layout import find_blob, hash_verified, part_path, quarantine
from w2sd_cli.store.plan import PlannedModel, check_free, files_under, human, plan_pull
from w2sd_cli.store.relay import Relay
from w2sd_cli.store.safety import WEIGHT_SUFFIXES, check_weights_file

Progress = Callable[[dict[str, Any]], None]
SINGLE_FILE_FORMATS = {"single-file", "lora", "vae"}


@dataclass
class Located:
    """A model found on disk: the path to hand to loaders, its files, and the hashes they must have."""

    path: Path
    commit: str | None = None
    files: dict[str, Path] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)
    listed: dict[str, Expected] = field(default_factory=dict)  # plain Hub files: size and git blob id


@dataclass
class _Fetch:
    """How one model is fetched: offline or not, where progress goes, how many downloads may run at once."""

    offline: bool
    progress: Progress | None = None
    pair: str | None = None
    key: str | None = None
    planned: PlannedModel | None = None
    workers: int = 1
    slots: threading.Semaphore | None = None


class _Quarantined(Exception):
    """A downloaded file failed its hash and was moved aside: fetching again can fix it."""

    def __init__(self, message: str) -> None:
        self.message = message


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
    found = _fetch(ref, _Fetch(offline or hub.env_offline(), progress, pair, key))
    _check_safety(found, allow_pickle)
    return found.path


def ensure_models(card: PairCard, keys: list[str] | None = None, *, offline: bool = False,
                  allow_pickle: bool = False, observer: Progress | None = None, workers: int = 3) -> dict[str, Path]:
    """Every model of ``card`` (or those in ``keys``) on disk and verified, downloading what is missing.

    Missing files are downloaded ``workers`` at a time (models in parallel, and a Hub model's files in
    parallel), after one free-space check. Nothing is printed: ``observer`` gets one dict per event, from the
    calling thread or a worker thread (never two at once):

    - ``{"event": "plan", "pair", "models": [key...], "files": N, "bytes_total": B, "unknown_sizes": bool}``
      once, before any download (``files``/``bytes_total`` count what is still missing);
    - ``{"event": "file", "pair", "key", "file", "bytes_done", "bytes_total", "status"}`` per file, with
      ``status`` ``downloading``, ``verifying`` (hashing) or ``done``;
    - ``{"event": "overall", "pair", "bytes_done", "bytes_total", "files_done", "files_total"}`` after each
      file event (bytes downloaded in this run plus what partial files already held);
    - ``{"event": "done", "pair", "paths": {key: str}}`` at the end.

    Args:
        card: the pair card.
        keys: model keys to fetch (default: every model of the card), in the order the result keeps.
        offline: make no network call; a missing model is an ``OfflineError`` naming ``w2sd pull``.
        allow_pickle: accept pickle checkpoints (else they are refused, at the end, as at use).
        observer: the event callback above, or ``None``.
        workers: how many files download at once.

    Returns:
        ``{key: local path}`` for the chosen models.
    """
    offline = offline or hub.env_offline()
    plan = plan_pull(card, keys, offline=True)
    if not plan.present and not offline:
        plan = plan_pull(card, keys, offline=False)
    if offline and not plan.present:
        missing = ", ".join(m.key for m in plan.models if not m.present)
        raise OfflineError(f"Pair {card.name} is missing {missing} and w2sd is offline. Run `w2sd pull {card.name}` "
                           "without --offline / HF_HUB_OFFLINE=1.")
    plan.check_space()
    relay = Relay(card.name, plan, observer)
    slots = threading.BoundedSemaphore(max(workers, 1))

    def one(model: PlannedModel) -> Located:
        job = _Fetch(offline, relay.for_key(model.key), card.name, model.key, model, max(workers, 1), slots)
        return _fetch(model.ref, job)

    found = _run_all(one, list(plan.models), workers)
    for located in found.values():
        _check_safety(located, allow_pickle)
    paths = {key: located.path for key, located in found.items()}
    relay.emit({"event": "done", "paths": {k: str(p) for k, p in paths.items()}})
    return paths


def pull(card: PairCard, keys: list[str] | None = None, *, progress: Progress | None = None,
         offline: bool = False, workers: int = 3) -> list[Path]:
    """Download and verify every model of ``card`` (or those in ``keys``), after checking free space.

    Pickle checkpoints are downloaded (and refused later, at use, without ``--allow-pickle``); HTML, JSON and
    broken safetensors files are refused here. ``progress`` gets ``ensure_models``'s events.

    Returns:
        One local path per model, in the order of ``keys`` (or of the card).
    """
    return list(ensure_models(card, keys, offline=offline, allow_pickle=True, observer=progress,
                              workers=workers).values())


def _run_all(one: Callable[[PlannedModel], Located], models: list[PlannedModel], workers: int) -> dict[str, Located]:
    """``one`` for every model, ``workers`` at a time; the first error is raised once all have stopped."""
    from concurrent.futures import ThreadPoolExecutor

    from w2sd_cli.store import fetch

    if workers <= 1 or len(models) <= 1:
        return {m.key: one(m) for m in models}
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="w2sd-download")
    futures = {m.key: pool.submit(one, m) for m in models}
    try:
        errors = [f.exception() for f in futures.values()]
    except KeyboardInterrupt:
        fetch.STOP.set()  # workers keep what they wrote and stop at their next chunk
        pool.shutdown(wait=True, cancel_futures=True)
        fetch.STOP.clear()
        raise
    pool.shutdown(wait=True)
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return {key: f.result() for key, f in futures.items()}


def _fetch(ref: ModelRef, job: _Fetch) -> Located:
    """Fetch ``ref`` from its source, then from each mirror in turn while a source refuses."""
    sources = _sources(ref)
    refusals: list[str] = []
    for source in sources:
        try:
            return _fetch_one(ref, source, job, last=source is sources[-1])
        except (DownloadError, OfflineError, SourceMismatch) as err:
            if source is sources[-1]:
                if not refusals:
                    raise
                refusals.append(f"{_name(source)}: {err}")
                kind = OfflineError if isinstance(err, OfflineError) else \
                    DownloadError if isinstance(err, DownloadError) else ModelError
                raise kind(f"No source of {job.pair or 'the pair'}/{job.key or 'model'} could deliver it. "
                           + " ".join(f"({i}) {r}" for i, r in enumerate(refusals, 1))) from None
            refusals.append(f"{_name(source)}: {err}")
    raise AssertionError("unreachable")


def _sources(ref: ModelRef) -> list[ModelRef]:
    """``ref`` itself, then one reference per mirror (same sha256, same format)."""
    out = [ref]
    for mirror in ref.mirrors:
        out.append(ref.model_copy(update={"url": mirror.url, "repo_id": mirror.repo_id, "revision": mirror.revision,
                                          "subfolder": mirror.subfolder, "filename": mirror.filename,
                                          "path": None, "allow_patterns": None, "mirrors": []}))
    return out


def _name(ref: ModelRef) -> str:
    return redact(ref.url) if ref.url else f"hf:{hub.describe(ref)}" if ref.repo_id else f"path:{ref.path}"


def _fetch_one(ref: ModelRef, source: ModelRef, job: _Fetch, last: bool = True) -> Located:
    """One source: fetch, verify, check it is usable, record.

    Bytes that fail their check are quarantined; the last source is then fetched once more in the same run
    (earlier ones give way to the next mirror at once).
    """
    recorded = pairlock.entry(job.pair, job.key, ref) if job.pair and job.key else None
    if recorded and ref.mirrors and recorded.get("source") != pairlock.source_of(source):
        recorded = None
    planned = job.planned if source is ref else None
    for attempt in (1, 2):
        try:
            found = _get(source, recorded, job, planned)
        except SourceMismatch as bad:
            if not (bad.retry and last and attempt == 1):
                raise
            planned = None
            continue
        if source.sha256 and found.path.is_file():
            found.expected[_rel(found)] = source.sha256  # the card's pin outranks any listing
        try:
            _verify(found, recorded, job.pair, own=not source.path, progress=job.progress)
            break
        except _Quarantined as bad:
            if job.offline or attempt == 2 or not last:
                raise SourceMismatch(bad.message + f" Run `w2sd pull {job.pair or 'PAIR'}` to download it "
                                     "again.", retry=True) from None
            planned = None
    _check_usable(found, source, job, own=not source.path)
    if job.pair and job.key and recorded is None and not (source.repo_id and found.commit is None):
        pairlock.record(job.pair, job.key, ref, found.commit, {
            rel: {"sha256": hash_verified(p, _hashing(job.progress, rel, p)), "size": p.stat().st_size}
            for rel, p in found.files.items()}, source=pairlock.source_of(source))
    return found


def _rel(found: Located) -> str:
    """The key of ``found.path`` among ``found.files`` (a Hub file is keyed by its repo path)."""
    return next((rel for rel, p in found.files.items() if p == found.path), found.path.name)


def _get(ref: ModelRef, recorded: dict[str, Any] | None, job: _Fetch, planned: PlannedModel | None) -> Located:
    if ref.path:
        return _local(ref)
    if ref.url:
        return _url(ref, job)
    return _hub(ref, recorded, job, planned)


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


def local_status(ref: ModelRef, pair: str | None = None, key: str | None = None) -> str:
    """``here``, ``partial (N of M)`` or ``not downloaded``, from disk only (no network, no hashing).

    With ``pair`` and ``key`` a Hub model is found at the commit the pair's lock recorded (an unpinned
    model pulled earlier), else at its card revision.
    """
    if ref.path:
        return "here" if local_path(ref).exists() else "missing (local path)"
    if ref.url and ref.sha256:
        if find_blob(ref.sha256):
            return "here"
        part = part_path(ref.sha256)
        if part.exists():
            return f"partial ({human(part.stat().st_size)} of {human(ref.size) if ref.size else '?'})"
        return "not downloaded"
    recorded = pairlock.entry(pair, key, ref) if pair and key else None
    if recorded and recorded.get("commit") and ref.repo_id:
        commit = str(recorded["commit"])
        if all(hub.cached_file(ref.repo_id, p, commit) for p in recorded.get("files", {})):
            return "here (HF cache)"
    return "here (HF cache)" if hub.local_snapshot(ref) else "not downloaded"


def _url(ref: ModelRef, job: _Fetch) -> Located:
    assert ref.url is not None and ref.sha256 is not None
    blob = find_blob(ref.sha256)
    if blob is None:
        if job.offline:
            raise _missing(redact(ref.url), job.pair)
        part = part_path(ref.sha256)
        check_free(part.parent, (ref.size or 0) - (part.stat().st_size if part.exists() else 0),
                   f"Downloading {redact(ref.url)}")
        if job.slots is None:
            blob = fetch_url(ref.url, ref.sha256, size=ref.size, progress=job.progress)
        else:
            with job.slots:
                blob = fetch_url(ref.url, ref.sha256, size=ref.size, progress=job.progress)
    return Located(blob, None, {blob.name: blob}, {blob.name: ref.sha256})


def _hub(ref: ModelRef, recorded: dict[str, Any] | None, job: _Fetch, planned: PlannedModel | None) -> Located:
    assert ref.repo_id is not None
    hub.check_ref(ref)
    commit = recorded.get("commit") if recorded else None
    if recorded and commit:
        cached = {p: hub.cached_file(ref.repo_id, p, commit) for p in recorded["files"]}
        if cached and all(cached.values()):
            first, path = next(iter(cached.items()))
            assert path is not None
            return Located(hub.result_path(ref, hub.snapshot_root(path, first)), commit,
                           {p: f for p, f in cached.items() if f is not None})
    if job.offline:
        root = None if recorded else hub.local_snapshot(ref)
        if root is None:
            raise _missing(f"hf:{hub.describe(ref)}", job.pair)
        target = hub.result_path(ref, root)
        return Located(target, None, {p.relative_to(root).as_posix(): p for p in files_under(target).values()})
    if planned is not None and planned.remotes and planned.commit:
        commit, remotes = planned.commit, list(planned.remotes)
    else:
        commit, remotes = hub.resolve(ref, commit, pairlock.lock_path(job.pair) if commit and job.pair else None)
    need = sum(r.size or 0 for r in remotes if hub.cached_file(ref.repo_id, r.path, commit) is None)
    check_free(hub.cache_dir(), need, f"Downloading {hub.describe(ref)}")
    root = hub.download(ref, commit, remotes, job.progress, workers=job.workers, slots=job.slots)
    return Located(hub.result_path(ref, root), commit, {r.path: root / r.path for r in remotes},
                   {r.path: r.sha256 for r in remotes if r.sha256},
                   {r.path: Expected(None, r.blob_id, r.size) for r in remotes if not r.sha256 and r.blob_id})


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
            _mismatch(path, sha, got, pair, own)
    for rel, want in found.listed.items():
        path = found.files.get(rel)
        why = mismatch(path, want) if path is not None and rel not in expected and path.exists() else None
        if path is not None and why is not None:
            _mismatch(path, str(want.blob_id), "", pair, own, why)


def _mismatch(path: Path, expected: str, got: str, pair: str | None, own: bool, why: str | None = None) -> None:
    """Quarantine a downloaded file that fails its hash (``_Quarantined``), or explain (``ModelError``).

    ``why`` replaces the sha256 wording (``has WHY``) for a check other than sha256.
    """
    size = human(path.stat().st_size)
    has = why or f"sha256 {got}, but {expected} was expected"
    if own and contain.owns_file(path):
        moved = quarantine(path, "mismatch")
        if path.is_symlink():
            contain.remove(path)
        raise _Quarantined(f"{path} ({size}) has {has}: it is corrupt or changed. It was moved to {moved}.")
    if own:
        raise ModelError(
            f"{path} ({size}) has {has}. It is a link to {path.resolve()}, "
            "a file outside the folders w2sd manages, so w2sd left it alone (nothing was moved or deleted). "
            f"Restore that file, or remove the link {path} and run `w2sd pull {pair or 'PAIR'}` to download a "
            "fresh copy.")
    lock = f" in {pairlock.lock_path(pair)}" if pair else ""
    raise ModelError(f"{path} ({size}) has {has}{lock}. w2sd does not touch "
                     "your own files: restore the original, or, if the change is intended, fix the card's sha256 "
                     "or delete the lock file so it is recorded again.")


def _check_usable(found: Located, source: ModelRef, job: _Fetch, own: bool) -> None:
    """A downloaded weights file that cannot be loaded is moved aside, never recorded, and named broken."""
    single = source.format in SINGLE_FILE_FORMATS
    for rel, path in found.files.items():
        expect = path.suffix.lower() in WEIGHT_SUFFIXES or (single and found.path == path)
        why = unusable_reason(path, expect_weights=expect)
        if why is None:
            continue
        if job.pair and job.key:
            pairlock.forget(job.pair, job.key)
        if not own or not contain.owns_file(path):
            raise ModelError(f"{path} is not usable weights: {why}. w2sd will not load it and did not record it; "
                             "it is your own file, so it was left where it is. Replace it, or fix the card.")
        moved = quarantine(path, "unusable")
        if path.is_symlink():
            contain.remove(path)
        raise ModelError(broken_at_source(rel, _name(source), why, moved))


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
