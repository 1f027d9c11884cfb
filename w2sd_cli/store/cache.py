"""What is on disk for which pair (``cache ls``), full re-hashing (``cache verify``) and pruning (plan, then delete).

Nothing here makes a network call. Prune only ever deletes inside w2sd's own store; the HF cache is shared with
other tools, so w2sd reports what it uses there and leaves deleting to ``hf cache``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2sd_cli.cards import PairCard
from w2sd_cli.store import contain, pairlock
from w2sd_cli.store.layout import pair_lock_dir, quarantine_dir, read_json, record_verified, sha256_file, store_dir
from w2sd_cli.store.plan import plan_model
from w2sd_cli.store.safety import WEIGHT_SUFFIXES

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ModelStatus:
    """One model of one pair, as ``cache ls`` shows it."""

    pair: str
    key: str
    source: str
    present: bool
    size: int
    verified: bool
    files: int

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass(frozen=True)
class StoreItem:
    """One entry w2sd manages: a blob, a partial download, a quarantined file, a lock file, or in the HF cache a
    resumable Hub download of w2sd's (``hub-partial``) or a dead one of huggingface_hub's (``hub-orphan``)."""

    kind: str
    path: Path
    size: int
    sha256: str | None = None
    used_by: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "size": self.size, "sha256": self.sha256,
                "used_by": list(self.used_by)}


@dataclass(frozen=True)
class VerifyResult:
    """One file re-hashed by ``cache verify``: ``ok``, ``mismatch``, ``unusable`` (not loadable weights),
    ``missing``, ``unrecorded`` or ``not downloaded``."""

    pair: str
    key: str
    file: str
    status: str
    expected: str | None = None
    got: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass(frozen=True)
class PrunePlan:
    """What ``cache prune`` would delete, how much that frees, and what it keeps only for an invalid card."""

    items: tuple[StoreItem, ...] = field(default_factory=tuple)
    kept: tuple[tuple[StoreItem, str], ...] = field(default_factory=tuple)

    @property
    def bytes(self) -> int:
        return sum(i.size for i in self.items)


def model_status(cards: Iterable[PairCard]) -> list[ModelStatus]:
    """Every model of every card: here or not, its size, and whether its hashes are known to match."""
    rows = []
    for card in cards:
        for key, ref in card.models.items():
            planned = plan_model(card.name, key, ref, offline=True)
            expected = _expected(card, key)
            sure = planned.present and bool(expected) and all(
                _known(Path(path), expected[rel]) and _usable(Path(path))
                for rel, path in _paths(card, key, expected).items())
            rows.append(ModelStatus(card.name, key, planned.source, planned.present, planned.size, sure,
                                    len(planned.files)))
    return rows


def store_items(cards: Iterable[PairCard], others: Mapping[str, Sequence[str]] | None = None) -> list[StoreItem]:
    """Everything in w2sd's store, each with the pairs (and ``others``) that need it.

    Args:
        cards: the pair cards.
        others: ``{sha256 or lock-file name: [user...]}`` for stored files and lock files needed by something
            other than a pair (a prompt set is ``prompts:NAME``, a metric ``metrics:NAME``); they are listed as
            used and never pruned.
    """
    cards = list(cards)
    users: dict[str, list[str]] = {sha: list(names) for sha, names in (others or {}).items()}
    for card in cards:
        for ref in card.models.values():
            if ref.sha256:
                users.setdefault(ref.sha256, []).append(card.name)
    root = store_dir()
    items: list[StoreItem] = []
    for folder in sorted((root / "blobs").glob("*")) if (root / "blobs").is_dir() else []:
        sha = folder.name.lstrip(".").removesuffix(".staging")
        kind = "staging" if folder.name.startswith(".") else "blob"
        items.append(StoreItem(kind, folder, _size(folder), sha, tuple(users.get(sha, ()))))
    for part in sorted((root / "partial").glob("*.part")) if (root / "partial").is_dir() else []:
        sha = part.name.removesuffix(".part")
        items.append(StoreItem("partial", part, part.stat().st_size, sha, tuple(users.get(sha, ()))))
    for bad in sorted(quarantine_dir().glob("*")) if quarantine_dir().is_dir() else []:
        items.append(StoreItem("quarantine", bad, _size(bad)))
    items += _hub_items(cards)
    names = {c.name for c in cards}
    for lock in sorted(pair_lock_dir().glob("*.json")) if pair_lock_dir().is_dir() else []:
        items.append(StoreItem("lockfile", lock, lock.stat().st_size, None,
                               (lock.stem,) if lock.stem in names else tuple(users.get(lock.stem, ()))))
    return items


def verify(cards: Iterable[PairCard], progress: Progress | None = None) -> list[VerifyResult]:
    """Re-hash every present file of ``cards`` and compare it with its pinned or recorded sha256.

    The verified-hash index is updated with what was read, so a following ``w2sd pull`` or ``gen`` sees a
    corrupt file at once (and, for downloaded files, quarantines and re-downloads it).
    """
    results = []
    for card in cards:
        for key in card.models:
            expected = _expected(card, key)
            if not expected:
                present = plan_model(card.name, key, card.models[key], offline=True).present
                results.append(VerifyResult(card.name, key, "*", "unrecorded" if present else "not downloaded"))
            for rel, path in _paths(card, key, expected).items():
                sha = expected[rel]
                if not os.path.exists(path):
                    results.append(VerifyResult(card.name, key, rel, "missing", sha))
                    continue
                got = sha256_file(Path(path), _relay(progress, rel, os.path.getsize(path)))
                record_verified(Path(path), got)
                status = "mismatch" if got != sha else "ok" if _usable(Path(path)) else "unusable"
                results.append(VerifyResult(card.name, key, rel, status, sha, got))
    return results


def plan_prune(cards: Iterable[PairCard], invalid: Iterable[tuple[str, str]] = (),
               others: Mapping[str, Sequence[str]] | None = None) -> PrunePlan:
    """What no pair needs: unused blobs and partial downloads, quarantined files, lock files of unknown pairs,
    and huggingface_hub's dead ``*.incomplete`` files.

    Args:
        cards: the valid pair cards.
        invalid: ``(origin, text)`` of card files that exist but fail validation; whatever their text names
            (a sha256, a repo id, the pair's name) is kept, and listed in ``kept`` with the reason.
        others: files needed by something other than a pair, as for ``store_items``.
    """
    invalid = list(invalid)
    delete, kept = [], []
    for item in store_items(list(cards), others):
        if item.used_by or _busy(item):
            continue
        origin = next((o for o, text in invalid if _names(item, o, text)), None)
        if origin is None:
            delete.append(item)
        else:
            kept.append((item, origin))
    return PrunePlan(tuple(delete), tuple(kept))


def execute_prune(plan: PrunePlan) -> int:
    """Delete what ``plan`` lists (and only what lies inside w2sd's managed folders); returns the bytes freed."""
    freed = 0
    from w2sd_cli.store.fetch import validator_path

    for item in plan.items:
        if (item.path.is_symlink() or item.path.exists()) and contain.remove(item.path):
            freed += item.size
        if item.kind in ("partial", "hub-partial"):
            side = validator_path(item.path)
            if side.is_symlink() or side.exists():
                contain.remove(side)
    return freed


def _names(item: StoreItem, origin: str, text: str) -> bool:
    """Whether an invalid card's raw ``text`` names ``item`` (its hash, its repo, or its pair)."""
    if item.sha256 and item.sha256 in text:
        return True
    if item.kind == "lockfile":
        stem = item.path.stem
        return Path(origin).stem == stem or re.search(rf"(?m)^\s*name:\s*['\"]?{re.escape(stem)}['\"]?\s*$", text) \
            is not None
    if item.kind in ("hub-partial", "hub-orphan"):
        repo = item.path.parent.parent.name.removeprefix("models--").replace("--", "/")
        return repo in text
    return False


def _busy(item: StoreItem) -> bool:
    """Whether a partial download is being written right now (its download lock is held by a process)."""
    import filelock

    if item.kind == "partial" and item.sha256:
        lock = store_dir() / "locks" / f"{item.sha256}.lock"
    elif item.kind in ("hub-partial", "hub-orphan"):
        etag = item.path.name.split(".")[0]
        lock = item.path.parent.parent.parent / ".locks" / item.path.parent.parent.name / f"{etag}.lock"
    else:
        return False
    if not lock.exists():
        return False
    try:
        with filelock.FileLock(str(lock), timeout=0):
            return False
    except filelock.Timeout:
        return True


def _hub_items(cards: list[PairCard]) -> list[StoreItem]:
    """Partial Hub downloads in the HF cache: w2sd's resumable ones and huggingface_hub's dead ones."""
    try:
        from w2sd_cli.store.hub import PARTIAL_SUFFIX, cache_dir
    except ImportError:
        return []
    needs = _hub_needs(cards)
    items = []
    for path in sorted(cache_dir().glob("models--*/blobs/*")):
        repo = path.parent.parent.name.removeprefix("models--").replace("--", "/")
        if path.name.endswith(PARTIAL_SUFFIX):
            etag = path.name.removesuffix(PARTIAL_SUFFIX)
            done = (path.parent / etag).exists()  # the finished blob is there: the partial is stale
            users = () if done else tuple(dict.fromkeys(
                pair for pair, etags in needs.get(repo, []) if etags is None or etag in etags))
            items.append(StoreItem("hub-partial", path, _size(path), etag, users))
        elif path.name.endswith(".incomplete"):
            items.append(StoreItem("hub-orphan", path, _size(path)))
    return items


def _hub_needs(cards: list[PairCard]) -> dict[str, list[tuple[str, set[str] | None]]]:
    """``{repo: [(pair, etags)]}``: the LFS etags a pulled model's lock entry lists, ``None`` when not pulled yet.

    A model that has no lock entry (its pull has not finished) may still need any partial of its repo; a
    pulled one needs only the files its entry records (an LFS file's etag is its sha256).
    """
    needs: dict[str, list[tuple[str, set[str] | None]]] = {}
    for card in cards:
        for key, ref in card.models.items():
            entry = pairlock.entry(card.name, key, ref)
            etags = {str(info.get("sha256")) for info in entry.get("files", {}).values()} if entry else None
            for repo in [ref.repo_id, *(m.repo_id for m in ref.mirrors)]:
                if repo:
                    needs.setdefault(repo, []).append((card.name, etags))
    return needs


def _expected(card: PairCard, key: str) -> dict[str, str]:
    """``{file: sha256}`` the pair's lock file records for model ``key`` (plus the card's pin)."""
    ref = card.models[key]
    recorded = pairlock.entry(card.name, key, ref) or {}
    expected = {rel: info["sha256"] for rel, info in recorded.get("files", {}).items()}
    if ref.sha256 and ref.url and not expected:
        expected[ref.sha256] = ref.sha256
    return expected


def _paths(card: PairCard, key: str, expected: dict[str, str]) -> dict[str, str]:
    """Where each expected file of model ``key`` lives (missing files get a path that does not exist)."""
    from w2sd_cli.store import hub
    from w2sd_cli.store.layout import blob_dir, find_blob

    ref = card.models[key]
    recorded = pairlock.entry(card.name, key, ref) or {}
    out = {}
    for rel in expected:
        if ref.url and ref.sha256:
            found = find_blob(ref.sha256)
            out[rel] = str(found or blob_dir(ref.sha256) / rel)
        elif ref.path:
            base = Path(ref.path)
            out[rel] = str(base if base.is_file() else base / rel)
        else:
            found = hub.cached_file(str(ref.repo_id), rel, recorded.get("commit") or ref.revision or "main")
            out[rel] = str(found or Path("/nonexistent") / rel)
    return out


def _known(path: Path, sha: str) -> bool:
    """Whether the verified-hash index already holds ``sha`` for ``path`` as it is now (no hashing)."""
    try:
        real = path.resolve()
        stat = real.stat()
    except OSError:
        return False
    known = read_json(store_dir() / "verified.json").get(str(real))
    return isinstance(known, dict) and known.get("sha256") == sha and known.get("size") == stat.st_size and \
        known.get("mtime_ns") == stat.st_mtime_ns


def _usable(path: Path) -> bool:
    """Whether a file can be loaded as weights (files that are not weights by name or content pass)."""
    from w2sd_cli.store.fetch import unusable_reason

    try:
        return unusable_reason(path, expect_weights=path.suffix.lower() in WEIGHT_SUFFIXES) is None
    except OSError:
        return False


def _size(path: Path) -> int:
    """Bytes ``path`` holds itself: a link counts as its own small size, links inside folders are not followed."""
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size if path.is_symlink() or path.exists() else 0
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_symlink() or p.is_file())


def _relay(progress: Progress | None, name: str, size: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda done: progress({"file": name, "bytes_done": done, "bytes_total": size, "status": "verifying"})
