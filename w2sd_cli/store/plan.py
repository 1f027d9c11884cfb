"""Pull plans: which files a pair needs, how big they are, which are already here, and whether they fit."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from w2sd_cli.cards import ModelRef, PairCard
from w2sd_cli.errors import DownloadError, ModelError, suggest
from w2sd_cli.store import hub, pairlock
from w2sd_cli.store.fetch import file_label, redact
from w2sd_cli.store.layout import find_blob, part_path, store_dir
from w2sd_cli.store.settings import min_free_bytes


@dataclass(frozen=True)
class PlannedFile:
    """One file of a model: its name, size (``None`` when unknown), and how much of it is already here."""

    name: str
    size: int | None
    present: bool
    sha256: str | None = None
    partial: int = 0

    @property
    def missing_bytes(self) -> int:
        return 0 if self.present else max((self.size or 0) - self.partial, 0)


@dataclass(frozen=True)
class PlannedModel:
    """One model of a pair: where it comes from, what it resolved to, its files and where they land."""

    key: str
    ref: ModelRef
    source: str
    commit: str | None
    files: tuple[PlannedFile, ...]
    target: Path
    remotes: tuple[hub.RemoteFile, ...] = ()

    @property
    def present(self) -> bool:
        return all(f.present for f in self.files)

    @property
    def size(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def missing_bytes(self) -> int:
        return sum(f.missing_bytes for f in self.files)


@dataclass(frozen=True)
class PullPlan:
    """Everything ``w2sd pull PAIR`` would do, before it does any of it."""

    pair: str
    models: tuple[PlannedModel, ...]

    @property
    def present(self) -> bool:
        return all(m.present for m in self.models)

    @property
    def missing_bytes(self) -> int:
        return sum(m.missing_bytes for m in self.models)

    def space(self) -> list[tuple[Path, int, int]]:
        """``(folder, bytes still needed, bytes free)`` for each filesystem the pull writes to."""
        needs: dict[int, tuple[Path, int]] = {}
        for model in self.models:
            if model.missing_bytes:
                folder = _existing(model.target)
                dev = os.stat(folder).st_dev
                held = needs.get(dev, (folder, 0))
                needs[dev] = (held[0], held[1] + model.missing_bytes)
        return [(folder, need, shutil.disk_usage(folder).free) for folder, need in needs.values()]

    def check_space(self) -> None:
        """Refuse, with the figures, when a filesystem has less free space than the pull needs."""
        for folder, need, _ in self.space():
            check_free(folder, need, f"Pulling {self.pair}")


def check_free(folder: Path, need: int, what: str) -> None:
    """Refuse, with the figures, when the disk holding ``folder`` cannot take ``need`` more bytes."""
    if need <= 0:
        return
    folder = _existing(folder)
    free = shutil.disk_usage(folder).free
    reserve = min_free_bytes()
    if need + reserve > free:
        raise DownloadError(
            f"{what} needs {human(need)} more on the disk holding {folder}, but only {human(free)} is free (w2sd "
            f"keeps {human(reserve)} spare; W2SD_MIN_FREE_MB). Free some space (`w2sd cache prune --dry-run`), "
            "or point HF_HOME / W2SD_HOME at a bigger disk. Nothing was downloaded."
        )


def plan_pull(card: PairCard, keys: list[str] | None = None, *, offline: bool = False) -> PullPlan:
    """What pulling ``card``'s models (all, or ``keys``) involves; Hub repos are asked unless ``offline``.

    Args:
        card: the pair card.
        keys: model keys to plan for; ``None`` means every model of the card.
        offline: plan from the caches and lock file only, with no network call.

    Returns:
        The plan: per model, its files with sizes and whether each is already present.
    """
    chosen = list(card.models) if keys is None else keys
    for key in chosen:
        if key not in card.models:
            raise ModelError(f"Pair {card.name} has no model {key!r}.{suggest(key, card.models)} "
                             f"Its models: {', '.join(card.models) or 'none'}.")
    offline = offline or hub.env_offline()
    return PullPlan(card.name, tuple(plan_model(card.name, k, card.models[k], offline=offline) for k in chosen))


def plan_model(pair: str, key: str, ref: ModelRef, *, offline: bool) -> PlannedModel:
    """The plan for one model of ``pair``."""
    if ref.url:
        assert ref.sha256 is not None
        part = part_path(ref.sha256)
        name = file_label(ref.url, ref.sha256[:12])
        done = find_blob(ref.sha256) is not None
        partial = 0 if done or not part.exists() else part.stat().st_size
        files: tuple[PlannedFile, ...] = (PlannedFile(name, ref.size, done, ref.sha256, partial),)
        return PlannedModel(key, ref, redact(ref.url), None, files, store_dir())
    if ref.path:
        path = Path(ref.path).expanduser().joinpath(*(p for p in (ref.subfolder, ref.filename) if p))
        files = tuple(PlannedFile(rel, p.stat().st_size, True) for rel, p in files_under(path).items()) or (
            PlannedFile(path.name, None, False),)
        return PlannedModel(key, ref, f"path:{path}", None, files, path.parent)
    return _plan_hub(pair, key, ref, offline)


def _plan_hub(pair: str, key: str, ref: ModelRef, offline: bool) -> PlannedModel:
    assert ref.repo_id is not None
    hub.check_ref(ref)
    recorded = pairlock.entry(pair, key, ref)
    commit = recorded["commit"] if recorded else None
    source = f"hf:{hub.describe(ref)}"
    if offline:
        if recorded and commit:
            files = tuple(PlannedFile(p, info.get("size"), hub.cached_file(ref.repo_id, p, commit) is not None,
                                      info.get("sha256")) for p, info in recorded["files"].items())
            return PlannedModel(key, ref, source, commit, files, hub.cache_dir())
        root = hub.local_snapshot(ref)
        found = tuple(PlannedFile(rel, p.stat().st_size, True)
                      for rel, p in files_under(hub.result_path(ref, root)).items()) if root else ()
        return PlannedModel(key, ref, source, None, found or (PlannedFile(source, None, False),), hub.cache_dir())
    commit, remotes = hub.resolve(ref, commit, pairlock.lock_path(pair) if commit else None)
    files = tuple(PlannedFile(r.path, r.size, hub.cached_file(ref.repo_id, r.path, commit) is not None, r.sha256,
                              _hub_partial(ref.repo_id, r.etag)) for r in remotes)
    return PlannedModel(key, ref, source, commit, files, hub.cache_dir(), tuple(remotes))


def _hub_partial(repo_id: str, etag: str | None) -> int:
    """Bytes a resumable partial download of a Hub file already holds (named by its listed etag)."""
    if not etag:
        return 0
    part = hub.partial_path(repo_id, etag)
    return part.stat().st_size if part.exists() else 0


def files_under(path: Path) -> dict[str, Path]:
    """``{name: file}`` for a file, or ``{relative path: file}`` for every file in a folder."""
    if path.is_file():
        return {path.name: path}
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*")) if p.is_file()}
    return {}


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def human(n: float) -> str:
    """Bytes as ``1.2 GB`` (decimal units, as disks are sold)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
