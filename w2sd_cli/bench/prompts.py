"""Prompt sets: registry entries (a URL pinned by sha256, fetched into the store) or the user's own files.

A registry entry is a small YAML card in ``registry/prompts`` or ``$W2SD_HOME/prompts``. A user file is
CSV (a header naming a ``prompt``/``caption``/``text`` column, else an error; optional ``category``), TXT (one
prompt a line) or JSONL (``{"prompt": ..., "category": ...}`` a line); a pipe (``--prompts <(...)``) has its
format sniffed from its first line. Empty prompts are skipped; ``limit`` takes
the first N non-empty ones (the paper uses the first 100 Pick-a-Pic test captions).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from w2sd_cli.bench.grid import Prompt
from w2sd_cli.cards import NAME_PATTERN, Strict, format_validation_error
from w2sd_cli.errors import CardError, InputError, OfflineError, suggest
from w2sd_cli.paths import home, registry_dir

TEXT_COLUMNS = ("prompt", "prompts", "caption", "text")
SUFFIXES = {".csv": "csv", ".txt": "txt", ".jsonl": "jsonl", ".json": "jsonl"}
CATEGORY_COLUMNS = ("category", "categories")


class PromptFile(Strict):
    """Where a prompt set's file comes from: a URL pinned by its sha256."""

    url: str = Field(pattern=r"^https?://")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int | None = Field(None, gt=0)


class PromptSetCard(Strict):
    """A named prompt set in the registry."""

    schema_version: Literal[1] = Field(alias="schema")
    name: str = Field(pattern=NAME_PATTERN)
    aliases: list[str] = Field(default_factory=list)
    description: str
    file: PromptFile
    format: Literal["csv", "txt", "jsonl"] = "csv"
    text_column: str | None = None
    category_column: str | None = None
    limit: int | None = Field(None, ge=1, description="keep the first N non-empty prompts")
    source: str | None = None
    licence: str | None = None


@dataclass(frozen=True)
class PromptSet:
    """Loaded prompts plus what they came from (recorded in a run's ``run.json``)."""

    name: str
    origin: str
    sha256: str | None
    prompts: list[Prompt]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "origin": self.origin, "sha256": self.sha256, "count": len(self.prompts)}


def prompt_cards() -> dict[str, PromptSetCard]:
    """Every prompt-set card by name and alias; the user's cards override shipped ones of the same name."""
    found: dict[str, PromptSetCard] = {}
    for folder in (registry_dir() / "prompts", home() / "prompts"):
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            card = _load_card(path)
            for name in (card.name, *card.aliases):
                found[name] = card
    return found


def _load_card(path: Path) -> PromptSetCard:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return PromptSetCard.model_validate(data)
    except (OSError, yaml.YAMLError) as err:
        raise CardError(f"{path}: cannot read this prompt-set card ({err}).") from None
    except ValidationError as err:
        raise CardError(format_validation_error(err, str(path))) from None


def load_prompt_set(spec: str, *, limit: int | None = None, offline: bool = False,
                    progress: Callable[[dict[str, Any]], None] | None = None) -> PromptSet:
    """Prompts from a registry name (downloaded and verified if needed) or a CSV/TXT/JSONL file.

    Args:
        spec: a prompt-set name (``w2sd bench --list-prompts``) or a file path.
        limit: keep the first ``limit`` non-empty prompts (overrides the card's ``limit``).
        offline: make no network call; a set not yet downloaded is an ``OfflineError``.
        progress: download progress callback (the store's dicts).
    """
    path = Path(spec).expanduser()
    cards = prompt_cards()
    if spec in cards:
        card = cards[spec]
        blob = fetch_card(card, offline, progress)
        prompts = parse_prompts(blob.read_bytes(), card.format, card.text_column, card.category_column,
                                origin=f"prompt set {card.name}")
        return PromptSet(card.name, card.file.url, card.file.sha256, _take(prompts, limit or card.limit))
    if path.exists() and not path.is_dir():
        return _user_file(path, limit)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in SUFFIXES)[:5]
        hint = f" It holds {', '.join(inside)}." if inside else " It holds no .csv, .txt or .jsonl file."
        raise InputError(f"{path} is a folder, not a prompt file: give one .csv/.txt/.jsonl file, e.g. "
                         f"--prompts {path / (inside[0] if inside else 'prompts.txt')}.{hint}")
    known = ", ".join(sorted({c.name for c in cards.values()} | set(local_names()))) or "none"
    shipped = named_file(spec)
    if shipped is not None:
        return load_prompt_set(str(shipped), limit=limit)
    raise InputError(f"No prompt set or file called {spec!r}.{suggest(spec, cards)} Known sets: {known}; "
                     "or give a .csv/.txt/.jsonl path.")


def _user_file(path: Path, limit: int | None) -> PromptSet:
    """A prompt file the user names; read once, so a pipe (``--prompts <(...)``, ``/dev/fd/N``) works too."""
    import hashlib

    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read this prompt file ({err.strerror or err}).") from None
    fmt = SUFFIXES.get(path.suffix.lower()) or (sniff_format(data) if not path.is_file() else None)
    if fmt is None:
        raise InputError(f"{path}: give prompts as .csv, .txt or .jsonl.")
    prompts = parse_prompts(data, fmt, None, None, origin=str(path))
    origin = str(path.resolve()) if path.is_file() else str(path)
    return PromptSet(path.stem or path.name, origin, hashlib.sha256(data).hexdigest(), _take(prompts, limit))


def sniff_format(data: bytes) -> str:
    """The format of a file without a suffix (a pipe): JSONL when its first line is a JSON object or string,
    CSV when its first line is a header naming a prompt column, else one prompt a line."""
    first = next((line for line in data.decode("utf-8-sig", errors="replace").splitlines() if line.strip()), "")
    try:
        if isinstance(json.loads(first), dict | str):
            return "jsonl"
    except json.JSONDecodeError:
        pass
    header = next(csv.reader(io.StringIO(first)), [])
    return "csv" if {h.strip().lower() for h in header} & set(TEXT_COLUMNS) else "txt"


def local_names() -> list[str]:
    """Names of the prompt files shipped or put beside the cards."""
    found = set()
    for folder in (home() / "prompts", registry_dir() / "prompts"):
        for suffix in ("*.txt", "*.csv", "*.jsonl"):
            found |= {p.stem for p in folder.glob(suffix)} if folder.is_dir() else set()
    return sorted(found)


def named_file(name: str) -> Path | None:
    """A prompt file shipped in ``registry/prompts`` (or put in ``$W2SD_HOME/prompts``) called ``name``."""
    for folder in (home() / "prompts", registry_dir() / "prompts"):
        for suffix in (".txt", ".csv", ".jsonl"):
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    return None


def fetch_card(card: PromptSetCard, offline: bool = False,
               progress: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """The file of a registry prompt set: from the store if it is there, else downloaded and verified."""
    from w2sd_cli.store.fetch import fetch_url, redact
    from w2sd_cli.store.hub import env_offline
    from w2sd_cli.store.layout import find_blob

    blob = find_blob(card.file.sha256)
    if blob is not None:
        return blob
    if offline or env_offline():
        raise OfflineError(f"Prompt set {card.name} ({redact(card.file.url)}) is not downloaded yet and w2sd is "
                           "offline, so it made no network call. Run `w2sd pull PAIR` once while online (it "
                           "fetches the prompt set `w2sd pairs check PAIR` uses), or this command once online.")
    return fetch_url(card.file.url, card.file.sha256, size=card.file.size, progress=progress)


def parse_prompts(data: bytes, fmt: str, text_column: str | None = None, category_column: str | None = None,
                  origin: str = "prompts") -> list[Prompt]:
    """Prompts from raw file bytes (UTF-8, with or without a BOM); ``index`` counts kept prompts only."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{origin}: not UTF-8 text ({err}).") from None
    rows: list[tuple[str, str | None]]
    if fmt == "txt":
        rows = [(line, None) for line in text.splitlines()]
    elif fmt == "jsonl":
        rows = [_json_row(line, n, origin) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        rows = _csv_rows(text, text_column, category_column, origin)
    kept = [(t.strip(), c.strip() if c else None) for t, c in rows if t and t.strip()]
    return [Prompt(i, t, c or None) for i, (t, c) in enumerate(kept)]


def _csv_rows(text: str, text_column: str | None, category_column: str | None,
              origin: str) -> list[tuple[str, str | None]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return []
    lower = [h.strip().lower() for h in header]

    def column(wanted: str | None, defaults: tuple[str, ...]) -> int | None:
        if wanted is not None:
            if wanted.lower() not in lower:
                raise InputError(f"{origin}: no column {wanted!r} (columns: {', '.join(header)}).")
            return lower.index(wanted.lower())
        return next((lower.index(d) for d in defaults if d in lower), None)

    text_at = column(text_column, TEXT_COLUMNS)
    category_at = column(category_column, CATEGORY_COLUMNS)
    if text_at is None:
        found = ", ".join(repr(h) for h in header) or "none"
        raise InputError(f"{origin}: a CSV prompt file needs a header row naming its prompt column "
                         f"({', '.join(TEXT_COLUMNS)}; optional: category). Its first row is {found}. Add a "
                         "header line such as `prompt,category`, or give one prompt a line as a .txt file.")
    return [(row[text_at] if len(row) > text_at else "",
             row[category_at] if category_at is not None and len(row) > category_at else None) for row in reader]


def _json_row(line: str, number: int, origin: str) -> tuple[str, str | None]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"{origin}, line {number}: not JSON ({err}).") from None
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict):
        found = next((value[k] for k in TEXT_COLUMNS if isinstance(value.get(k), str)), None)
        if found is not None:
            category = value.get("category")
            return found, category if isinstance(category, str) else None
    raise InputError(f"{origin}, line {number}: give a string or an object with a \"prompt\" field.")


def _take(prompts: list[Prompt], limit: int | None) -> list[Prompt]:
    return prompts if limit is None else prompts[:limit]
