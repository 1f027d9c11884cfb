"""A benchmark grid (prompts × seeds × methods) expanded into work items with stable ids."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from w2sd_cli.errors import InputError

SEED_INDEX = "index"
"""A seed spec that makes each prompt's seed its index in the prompt set (the paper's protocol)."""


@dataclass(frozen=True)
class Prompt:
    """One prompt of a prompt set: its position, text and (DrawBench) category."""

    index: int
    text: str
    category: str | None = None


@dataclass(frozen=True)
class WorkItem:
    """One image (or sample set) to make: a prompt, a seed and a method, named by a stable id."""

    id: str
    prompt: Prompt
    seed: int
    method: str

    def stem(self) -> str:
        """A readable, unique file stem: prompt index, seed, method and the id's start."""
        return f"p{self.prompt.index:04d}-s{self.seed}-{self.method}-{self.id[:8]}"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "prompt_index": self.prompt.index, "prompt": self.prompt.text,
                "category": self.prompt.category, "seed": self.seed, "method": self.method}


def digest(data: Any, length: int = 16) -> str:
    """A short sha256 of ``data``'s canonical JSON."""
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def work_id(prompt: str, seed: int, method: str, card_digest: str, settings_digest: str) -> str:
    """The id of one item: a hash of what determines its output, never of its position in a list."""
    return digest({"prompt": prompt, "seed": seed, "method": method, "card": card_digest,
                   "settings": settings_digest})


def parse_seeds(spec: str) -> list[int] | str:
    """``"0,1,5"``, ``"0-3"`` (inclusive), a mix of both, or ``"index"`` (seed = prompt index)."""
    spec = spec.strip()
    if spec == SEED_INDEX:
        return SEED_INDEX
    seeds: list[int] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise InputError(f"--seeds {spec!r}: give seeds like 0,1,2 or 0-7, or `index` (seed = prompt index).")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low:
            raise InputError(f"--seeds {spec!r}: the range {part} runs backwards; write {high}-{low}.")
        seeds += [s for s in range(low, high + 1) if s not in seeds]
    if not seeds:
        raise InputError("--seeds is empty: give at least one seed, e.g. --seeds 0-3.")
    return seeds


def expand(prompts: Sequence[Prompt], seeds: list[int] | str, methods: Sequence[str], card_digest: str,
           settings_digest: str) -> list[WorkItem]:
    """Every item of the grid in canonical order (prompt, seed, method).

    Args:
        prompts: the prompt set.
        seeds: the seeds of every prompt, or ``"index"`` for one seed per prompt equal to its index.
        methods: sampling methods (see ``w2sd_cli.methods.METHODS``).
        card_digest, settings_digest: what else an output depends on; part of every id.
    """
    items = []
    for prompt in prompts:
        chosen: list[int] = [prompt.index] if seeds == SEED_INDEX else [int(s) for s in seeds]
        for seed in chosen:
            for method in methods:
                items.append(WorkItem(work_id(prompt.text, seed, method, card_digest, settings_digest),
                                      prompt, seed, method))
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise InputError("the grid repeats an item (a prompt listed twice?); remove duplicate prompts.")
    return items


def prompt_dicts(prompts: Sequence[Prompt]) -> list[dict[str, Any]]:
    return [asdict(p) for p in prompts]
