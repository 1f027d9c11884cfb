"""What is on disk for which pair (``cache ls``), full re-hashing (``cache verify``) and pruning (plan, then delete).

Nothing here makes a network call. Prune only ever deletes inside w2sd's own store; the HF cache is shared with
other tools, so w2sd reports what it uses there and leaves deleting to ``hf cache``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2sd_cli.cards import PairCard
from w2sd_cli.store import pairlock
from w2sd_cli.store.layout import pair_lock_dir, quarantine_dir, read_json, record_verified, sha256_file, store_dir
from w2sd_cli.store.plan import plan_model

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
    """One entry of w2sd's own store: a blob, a partial download, a quarantined file or a stale lock file."""

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
    """One file re-hashed by ``cache verify``: ``ok``, ``mismatch``, ``missing`` or ``unrecorded``."""

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
    """What ``cache prune`` would delete, and how much that frees."""

    items: tuple[StoreItem, ...] = field(default_factory=tuple)

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
                _known(Path(path), expected[rel]) for rel, path in _paths(card, key, expected).items())
            rows.append(ModelStatus(card.name, key, planned.source, planned.present, planned.size, sure,
                                    len(planned.files)))
    return rows


def store_items(cards: Iterable[PairCard]) -> list[StoreItem]:
    """Everything in w2sd's store, each with the pairs that need it."""
    cards = list(cards)
    users: dict[str, list[str]] = {}
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
    names = {c.name for c in cards}
    for lock in sorted(pair_lock_dir().glob("*.json")) if pair_lock_dir().is_dir() else []:
        items.append(StoreItem("lockfile", lock, lock.stat().st_size, None,
                               (lock.stem,) if lock.stem in names else ()))
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
                results.append(VerifyResult(card.name, key, rel, "ok" if got == sha else "mismatch", sha, got))
    return results


def plan_prune(cards: Iterable[PairCard]) -> PrunePlan:
    """What no pair needs: unused blobs and partial downloads, quarantined files, lock files of unknown pairs."""
    return PrunePlan(tuple(i for i in store_items(list(cards)) if not i.used_by))


def execute_prune(plan: PrunePlan) -> int:
    """Delete what ``plan`` lists (and only that); returns the bytes freed."""
    freed = 0
    for item in plan.items:
        if not str(item.path.resolve()).startswith((str(store_dir().resolve()), str(pair_lock_dir().resolve()))):
            continue
        if item.path.is_dir():
            shutil.rmtree(item.path)
        elif item.path.exists():
            item.path.unlink()
        freed += item.size
    return freed


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


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _relay(progress: Progress | None, name: str, size: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda done: progress({"file": name, "bytes_done": done, "bytes_total": size, "status": "verifying"})
