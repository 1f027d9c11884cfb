"""Checker accuracy of a shapes pair per sampling method, shared by the model card, the benchmark and the floor test.

Items are (prompt, seed) pairs. Seeds of one prompt are sampled as one batch (the text conditioning is
computed once); each image still starts from its own seed's noise, as ``w2sd gen --seed`` would.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2sd_cli.toy.world import COUNT_WORDS, POSITION_PHRASES, compositions, count_word


@dataclass(frozen=True)
class Item:
    """One evaluation image: a caption and the seed of its noise."""

    prompt: str
    seed: int


@dataclass
class MethodResult:
    """One method's per-item checker verdicts, what it saw, and its cost."""

    verdicts: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    nfe: int = 0


def held_out_items(per_prompt: int, first_seed: int = 1000) -> list[Item]:
    """Every held-out composition at every count, ``per_prompt`` seeds each (full captions).

    A single shape alternates by seed between "a" (even seed index) and "one" (odd): users type both.
    """
    items = []
    for colour, shape, position in compositions("test"):
        for count in COUNT_WORDS:
            noun = shape + ("s" if count > 1 else "")
            for i in range(per_prompt):
                word = count_word(count, colour, article=i % 2 == 0)
                items.append(Item(f"{word} {colour} {noun} {POSITION_PHRASES[position]}", first_seed + i))
    return items


def position_free_items(per_prompt: int, first_seed: int = 2000) -> list[Item]:
    """Captions that leave the position free (one count per colour and shape), ``per_prompt`` seeds each."""
    rng = random.Random(7)
    pairs = sorted({(c, s) for c, s, _ in compositions("train")})
    items = []
    for colour, shape in pairs:
        count = rng.choice(list(COUNT_WORDS))
        noun = shape + ("s" if count > 1 else "")
        items += [Item(f"{count_word(count, colour)} {colour} {noun}", first_seed + i) for i in range(per_prompt)]
    return items


def toy_card(strong: Path, weak: Path, cfg: float = 1.5, steps: int = 25) -> Any:
    """A toy-unet card over two model folders (to evaluate weights that are not shipped yet)."""
    from w2sd_cli.cards import parse_card

    return parse_card({
        "schema": 1, "name": "shapes-eval", "kind": "toy-unet", "description": "evaluation",
        "models": {"strong": {"path": str(strong), "format": "toy"}, "weak": {"path": str(weak), "format": "toy"}},
        "strong": {"model": "strong", "cfg": cfg}, "weak": {"model": "weak", "cfg": cfg},
        "final": {"model": "strong", "cfg": cfg}, "defaults": {"steps": steps},
    })


def evaluate(card: Any, items: Sequence[Item], methods: Sequence[str], *, steps: int | None = None,
             lam: int | None = None) -> dict[str, MethodResult]:
    """Sample every item with every method (one batch per prompt, through the engine) and score it."""
    from w2sd_cli.engine import open_engine
    from w2sd_cli.kinds.base import Condition, LoadSettings, Settings
    from w2sd_cli.kinds.shapes import ToyUNetKind
    from w2sd_cli.toy.checker import verdict

    settings = Settings.resolve(card, steps=steps, lam=lam)
    engine = open_engine(card, ToyUNetKind(), settings, LoadSettings(), metrics=[])
    results = {m: MethodResult() for m in methods}
    by_prompt: dict[str, list[int]] = {}
    for item in items:
        by_prompt.setdefault(item.prompt, []).append(item.seed)
    for prompt, seeds in by_prompt.items():
        for method in methods:
            started = time.perf_counter()
            samples = engine.render(Condition(prompt), seeds, method)
            results[method].seconds += time.perf_counter() - started
            results[method].nfe = samples[0].nfe
            for sample in samples:
                v = verdict(sample.image, prompt)
                results[method].verdicts.append({"prompt": prompt, "seed": sample.seed, **v})
    return results


def accuracy(result: MethodResult, attribute: str) -> float:
    """Share of items whose ``attribute`` (or ``all``) is correct, over scorable items that name it."""
    values = [_correct(v, attribute) for v in result.verdicts]
    known = [x for x in values if x is not None]
    return sum(known) / len(known) if known else float("nan")


def _correct(v: dict[str, Any], attribute: str) -> bool | None:
    if not v.get("scorable", True):
        return None
    if attribute == "all":
        return bool(v["all"])
    return v["checks"].get(attribute)
