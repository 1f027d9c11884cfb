"""A benchmark grid (prompts × seeds × methods): work items with stable ids, made on demand, never listed."""

from __future__ import annotations

import hashlib
import json
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import accumulate
from typing import Any, overload

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


class Seeds(Sequence[int]):
    """Seeds as inclusive ranges in order of first appearance, never listed: ``0-100000000`` costs nothing."""

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        merged: list[tuple[int, int]] = []
        for low, high in ranges:
            if merged and merged[-1][1] + 1 == low:
                merged[-1] = (merged[-1][0], high)
            else:
                merged.append((low, high))
        self.ranges = tuple(merged)
        self._starts = list(accumulate((h - lo + 1 for lo, h in self.ranges), initial=0))

    @classmethod
    def of(cls, seeds: Iterable[int]) -> Seeds:
        """Seeds from a listed sequence (a run plan of format 1), duplicates dropped."""
        return cls(_subtract_seen((s, s) for s in seeds))

    def __len__(self) -> int:
        return self._starts[-1]

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> list[int]: ...

    def __getitem__(self, index: int | slice) -> int | list[int]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        part = bisect_right(self._starts, index) - 1
        return self.ranges[part][0] + index - self._starts[part]

    def __iter__(self) -> Iterator[int]:
        for low, high in self.ranges:
            yield from range(low, high + 1)

    def position(self, seed: int) -> int | None:
        """Where ``seed`` stands in this order, or None when it is not one of these seeds."""
        for (low, high), start in zip(self.ranges, self._starts, strict=False):
            if low <= seed <= high:
                return start + seed - low
        return None

    def __contains__(self, seed: object) -> bool:
        return isinstance(seed, int) and self.position(seed) is not None

    def spec(self) -> str:
        """The canonical text form, e.g. ``0-3,7``: what a run plan stores."""
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Seeds) and other.ranges == self.ranges

    def __hash__(self) -> int:
        return hash(self.ranges)

    def __repr__(self) -> str:
        return f"Seeds({self.spec()!r})"


def _subtract_seen(parts: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """The parts with every seed an earlier part already gave removed (order kept)."""
    starts: list[int] = []  # the seeds seen so far: sorted, disjoint, non-touching ranges
    ends: list[int] = []
    for low, high in parts:
        cursor = low
        j = max(0, bisect_right(starts, low) - 1)
        while j < len(starts) and starts[j] <= high:
            if ends[j] >= cursor:
                if starts[j] > cursor:
                    yield cursor, starts[j] - 1
                cursor = ends[j] + 1
            j += 1
        if cursor <= high:
            yield cursor, high
        first, last = bisect_left(ends, low - 1), bisect_right(starts, high + 1)
        if first < last:
            low, high = min(low, starts[first]), max(high, ends[last - 1])
        starts[first:last], ends[first:last] = [low], [high]


def seed_ranges(spec: str) -> Seeds | str:
    """``"0,1,5"``, ``"0-3"`` (inclusive), a mix of both, or ``"index"`` (seed = prompt index), unlisted."""
    spec = spec.strip()
    if spec == SEED_INDEX:
        return SEED_INDEX
    parts = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise InputError(f"--seeds {spec!r}: give seeds like 0,1,2 or 0-7, or `index` (seed = prompt index).")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low:
            raise InputError(f"--seeds {spec!r}: the range {part} runs backwards; write {high}-{low}.")
        parts.append((low, high))
    if not parts:
        raise InputError("--seeds is empty: give at least one seed, e.g. --seeds 0-3.")
    return Seeds(_subtract_seen(parts))


def parse_seeds(spec: str) -> list[int] | str:
    """The seeds of ``spec`` listed (see ``seed_ranges``, which does not list them)."""
    seeds = seed_ranges(spec)
    return seeds if isinstance(seeds, str) else list(seeds)


def as_seeds(seeds: Sequence[int] | str) -> Seeds | str:
    """``"index"``, a ``Seeds``, a canonical spec string or a listed sequence (plans of format 1) as ``Seeds``."""
    if isinstance(seeds, Seeds) or seeds == SEED_INDEX:
        return seeds
    if isinstance(seeds, str):
        return seed_ranges(seeds)
    return Seeds.of(int(s) for s in seeds)


_MIX = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1


class Grid(Sequence[WorkItem]):
    """Every item of prompts × seeds × methods in canonical order (prompt, seed, method), made on demand.

    Nothing is listed, so a grid of any size plans at once; ``locate`` places a finished item by its
    manifest line, and ``share`` deals the grid to ranks.
    """

    def __init__(self, prompts: Sequence[Prompt], seeds: Sequence[int] | str, methods: Sequence[str],
                 card_digest: str, settings_digest: str) -> None:
        self.prompts = list(prompts)
        self.seeds = as_seeds(seeds)
        self.methods = list(methods)
        self.card_digest, self.settings_digest = card_digest, settings_digest
        self._per_prompt = 1 if self.seeds == SEED_INDEX else len(self.seeds)
        self._prompt_at = {p.index: n for n, p in enumerate(self.prompts)}
        self._method_at = {m: n for n, m in enumerate(self.methods)}

    def __len__(self) -> int:
        return len(self.prompts) * self._per_prompt * len(self.methods)

    def _seed(self, prompt: Prompt, n: int) -> int:
        return prompt.index if isinstance(self.seeds, str) else self.seeds[n]

    def item(self, prompt: Prompt, seed: int, method: str) -> WorkItem:
        return WorkItem(work_id(prompt.text, seed, method, self.card_digest, self.settings_digest), prompt, seed,
                        method)

    @overload
    def __getitem__(self, index: int) -> WorkItem: ...
    @overload
    def __getitem__(self, index: slice) -> list[WorkItem]: ...

    def __getitem__(self, index: int | slice) -> WorkItem | list[WorkItem]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        group, m = divmod(index, len(self.methods))
        p, n = divmod(group, self._per_prompt)
        prompt = self.prompts[p]
        return self.item(prompt, self._seed(prompt, n), self.methods[m])

    def __iter__(self) -> Iterator[WorkItem]:
        for prompt in self.prompts:
            for n in range(self._per_prompt):
                seed = self._seed(prompt, n)
                for method in self.methods:
                    yield self.item(prompt, seed, method)

    @property
    def ids(self) -> GridIds:
        return GridIds(self)

    def position(self, prompt_index: int, seed: int, method: str) -> int | None:
        """The canonical position of (prompt, seed, method), or None when the grid has no such item."""
        p, m = self._prompt_at.get(prompt_index), self._method_at.get(method)
        if p is None or m is None:
            return None
        n = (0 if seed == self.prompts[p].index else None) if isinstance(self.seeds, str) else \
            self.seeds.position(seed)
        return None if n is None else (p * self._per_prompt + n) * len(self.methods) + m

    def locate(self, line: dict[str, Any]) -> int | None:
        """The position of a manifest line's item, or None when the line is not an item of this grid."""
        try:
            at = self.position(int(line["prompt_index"]), int(line["seed"]), str(line["method"]))
        except (KeyError, TypeError, ValueError):
            return None
        return at if at is not None and self[at].id == line.get("id") else None

    def owner(self, position: int, world: int) -> int:
        """The rank that renders the item at ``position``.

        Positions are dealt round-robin after turning each (prompt, seed) group's methods by a pseudo-random
        amount: every rank gets within one item of the same count, and a fair mix of cheap and costly methods
        whatever the number of methods and ranks.
        """
        if world == 1:
            return 0
        group, m = divmod(position, len(self.methods))
        turn = ((group + 1) * _MIX & _MASK) >> 40
        return (group * len(self.methods) + (m + turn) % len(self.methods)) % world

    def share_size(self, rank: int, world: int) -> int:
        """How many items ``owner`` gives ``rank`` (the turned positions are a permutation of the grid's)."""
        return len(self) // world + (1 if rank < len(self) % world else 0)

    def share(self, rank: int, world: int) -> Iterator[WorkItem]:
        """Rank ``rank``'s items of ``world``, in canonical order, made one at a time."""
        methods = len(self.methods)
        for group in range(len(self.prompts) * self._per_prompt):
            p, n = divmod(group, self._per_prompt)
            prompt = self.prompts[p]
            for m in range(methods):
                if self.owner(group * methods + m, world) == rank:
                    yield self.item(prompt, self._seed(prompt, n), self.methods[m])

    def check_unique(self) -> None:
        """Refuse a grid that would make one item twice (a prompt or a method listed twice)."""
        texts = [p.text for p in self.prompts]
        twice = len(set(self.methods)) != len(self.methods) or \
            (self.seeds != SEED_INDEX and len(set(texts)) != len(texts))
        if twice:
            raise InputError("the grid repeats an item (a prompt listed twice?); remove duplicate prompts.")


NFE_PER_STEP = {"weak": 1, "strong": 1, "extrapolate": 2, "first-order": 3}
"""Network evaluations per sampling step of the built-in methods with one sampler (W2SD and equal-NFE: T + 2 λ r)."""


def plan_summary(grid: Grid, steps: int, lam: int, rounds: int, todo: int, done: int, rank: int = 0,
                 world: int = 1) -> dict[str, Any]:
    """What a bench run is about to do, before it renders: the grid's size, this rank's share and an estimate of
    the network evaluations it needs (``text`` says it in one line)."""
    per_item = {m: (steps + 2 * lam * rounds) if m in ("w2sd", "equal-nfe") else NFE_PER_STEP.get(m, 1) * steps
                for m in grid.methods}
    groups = len(grid.prompts) * grid._per_prompt
    nfe = sum(per_item.values()) * groups * todo // max(1, len(grid))
    seeds = "1 seed each (seed = prompt index)" if grid.seeds == SEED_INDEX else f"{len(grid.seeds):,} seeds"
    share = f"; rank {rank} of {world} renders {todo + done:,}" if world > 1 else ""
    text = (f"planned {len(grid):,} items ({len(grid.prompts):,} prompts × {seeds} × {len(grid.methods)} methods)"
            f"{share}: {todo:,} to render, {done:,} already done; about {nfe:,} network evaluations "
            f"(steps {steps}, lambda {lam}).")
    return {"items": len(grid), "todo": todo, "done": done, "nfe": nfe, "text": text}


class GridIds(Sequence[str]):
    """A grid's ids in canonical order, made on demand (what run plans list as ``ids``)."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def __len__(self) -> int:
        return len(self.grid)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [i.id for i in self.grid[index]]
        return self.grid[index].id

    def __iter__(self) -> Iterator[str]:
        return (i.id for i in self.grid)

    def locate(self, line: dict[str, Any]) -> int | None:
        return self.grid.locate(line)


def expand(prompts: Sequence[Prompt], seeds: Sequence[int] | str, methods: Sequence[str], card_digest: str,
           settings_digest: str) -> list[WorkItem]:
    """Every item of the grid in canonical order (prompt, seed, method), listed (small grids; see ``Grid``).

    Args:
        prompts: the prompt set.
        seeds: the seeds of every prompt, or ``"index"`` for one seed per prompt equal to its index.
        methods: sampling methods (see ``w2sd_cli.methods.METHODS``).
        card_digest, settings_digest: what else an output depends on; part of every id.
    """
    grid = Grid(prompts, seeds, methods, card_digest, settings_digest)
    grid.check_unique()
    return list(grid)


def prompt_dicts(prompts: Sequence[Prompt]) -> list[dict[str, Any]]:
    return [asdict(p) for p in prompts]
