"""Per-pair lock files (``W2SD_HOME/lock/<pair>.json``): what each model resolved to, and its files' hashes.

An entry is written the first time a model is fetched and read on every later run: a branch revision stays at
the recorded commit, and every file is checked against its recorded sha256 (hashing again only when a file's
size or mtime changed). Editing the card's source for a model makes its entry stale, and it is re-recorded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from w2sd_cli.cards import ModelRef
from w2sd_cli.store.layout import blob_lock, pair_lock_dir, read_json, write_json_atomic

SOURCE_FIELDS = ("repo_id", "revision", "subfolder", "filename", "allow_patterns", "url", "sha256", "path")


def ref_digest(ref: ModelRef) -> str:
    """A short hash of the fields that say where ``ref``'s bytes come from."""
    data = {f: getattr(ref, f) for f in SOURCE_FIELDS}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def lock_path(pair: str) -> Path:
    return pair_lock_dir() / f"{pair}.json"


def read_lock(pair: str) -> dict[str, Any]:
    """The whole lock file of ``pair`` (``{"pair", "models": {key: entry}}``), empty when there is none."""
    return read_json(lock_path(pair))


def entry(pair: str, key: str, ref: ModelRef) -> dict[str, Any] | None:
    """The recorded entry for model ``key`` when it was recorded for this same source, else ``None``."""
    found = read_lock(pair).get("models", {}).get(key)
    return found if isinstance(found, dict) and found.get("ref") == ref_digest(ref) else None


def record(pair: str, key: str, ref: ModelRef, commit: str | None, files: dict[str, dict[str, Any]],
           source: str | None = None) -> None:
    """Write (or replace) the entry for model ``key`` of ``pair``.

    Args:
        pair: the pair's name.
        key: the key of the model in the card's ``models``.
        ref: the card's reference (its source fields are digested, so later edits are noticed).
        commit: the resolved Hub commit, or ``None`` for URL and local sources.
        files: ``{relative path: {"sha256", "size"}}`` for every file of the model.
        source: where the bytes came from when it was a mirror (default: ``ref``'s own source).
    """
    with blob_lock(f"pair-{pair}"):
        data = read_lock(pair)
        data.update({"schema": 1, "pair": pair})
        data.setdefault("models", {})[key] = {"ref": ref_digest(ref), "source": source or source_of(ref),
                                              "commit": commit,
                                              "files": files}
        write_json_atomic(lock_path(pair), data)


def forget(pair: str, key: str) -> None:
    """Drop the entry for model ``key`` of ``pair`` (its files turned out unusable)."""
    with blob_lock(f"pair-{pair}"):
        data = read_lock(pair)
        if isinstance(data.get("models"), dict) and data["models"].pop(key, None) is not None:
            write_json_atomic(lock_path(pair), data)


def source_of(ref: ModelRef) -> str:
    """A source's short, secret-free name as the lock file records it."""
    if ref.repo_id:
        where = "/".join(p for p in (ref.repo_id, ref.subfolder, ref.filename) if p)
        return f"hf:{where}" + (f"@{ref.revision}" if ref.revision else "")
    if ref.url:
        from w2sd_cli.store.redact import redact_url

        return redact_url(ref.url)
    return f"path:{ref.path}"
