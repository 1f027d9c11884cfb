"""Shapes world: 32×32 scenes of one to three equal shapes, their captions and a held-out split.

A scene is a count (1–3) of one shape in one colour, grouped at one position. Everything is a pure
function of a seed, so a training run, a test and a benchmark item all see the same pixels.
Compositions (colour, shape, position) in ``HELD_OUT`` never appear in training.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np

SIZE = 32
BACKGROUND = (24, 24, 32)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45),
    "green": (45, 190, 70),
    "blue": (55, 100, 240),
    "yellow": (235, 210, 45),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("left", "right", "top", "bottom", "centre")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
ARTICLE_SHARE = 0.5
"""Share of count-one training captions that say "a"/"an" (the rest say "one"): users type both."""
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
SYNONYMS = {"center": "centre", "middle": "centre"}
"""Words the tokenizer and the checker read as another caption word."""
ANCHOR_OFFSET = 9
"""How far (pixels) a group's anchor sits from the image centre for left/right/top/bottom."""


def _held_out() -> frozenset[tuple[str, str, str]]:
    """One position per (colour, shape), rotating so every position is held out for some pairs."""
    held = set()
    for ci, colour in enumerate(COLOURS):
        for si, shape in enumerate(SHAPES):
            held.add((colour, shape, POSITIONS[(ci * len(SHAPES) + si) % len(POSITIONS)]))
    return frozenset(held)


HELD_OUT = _held_out()


@dataclass(frozen=True)
class Placement:
    """One shape's bounding box: top-left corner (x, y) and side length."""

    x: int
    y: int
    size: int


@dataclass(frozen=True)
class Scene:
    """What a caption describes, plus where exactly each shape landed."""

    count: int
    colour: str
    shape: str
    position: str
    placements: tuple[Placement, ...]

    @property
    def composition(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.position)


def is_held_out(colour: str, shape: str, position: str) -> bool:
    """Whether the composition is reserved for evaluation."""
    return (colour, shape, position) in HELD_OUT


def compositions(split: str) -> list[tuple[str, str, str]]:
    """All (colour, shape, position) triples of a split (``train`` or ``test``), in a fixed order."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    every = [(c, s, p) for c in COLOURS for s in SHAPES for p in POSITIONS]
    return [t for t in every if (t in HELD_OUT) == (split == "test")]


def make_scene(count: int, colour: str, shape: str, position: str, seed: int) -> Scene:
    """Lay out ``count`` shapes at ``position``; the sizes and jitter come from ``seed``."""
    rng = random.Random(seed)
    sizes = [rng.choice((7, 8, 9)) for _ in range(count)]
    gap = rng.choice((2, 3)) if count < 3 else 2
    centre = SIZE // 2
    if position == "centre":
        along_vertical = rng.random() < 0.5
        cross = centre + rng.randint(-1, 1)
        span_centre = centre + rng.randint(-1, 1)
    else:
        along_vertical = position in ("left", "right")
        sign = -1 if position in ("left", "top") else 1
        cross = centre + sign * ANCHOR_OFFSET + rng.randint(-1, 1)
        span_centre = centre + (rng.randint(-5, 5) if count == 1 else rng.randint(-2, 2))
    extent = sum(sizes) + gap * (count - 1)
    start = min(max(span_centre - extent // 2, 1), SIZE - 1 - extent)
    placements = []
    for size in sizes:
        lo = cross - size // 2
        placements.append(Placement(lo, start, size) if along_vertical else Placement(start, lo, size))
        start += size + gap
    return Scene(count, colour, shape, position, tuple(placements))


def sample_scene(seed: int, split: str = "train") -> Scene:
    """A random scene of ``split`` (``train`` avoids ``HELD_OUT``; ``test`` uses only it)."""
    rng = random.Random(seed * 7919 + 13)
    colour, shape, position = rng.choice(compositions(split))
    return make_scene(rng.randint(1, 3), colour, shape, position, rng.randrange(2**31))


def shape_mask(shape: str, size: int) -> np.ndarray:
    """A boolean ``size``×``size`` mask of the shape (the triangle points up)."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        r = size / 2
        return bool_mask((xx - r) ** 2 + (yy - r) ** 2 <= r * r)
    if shape == "triangle":
        half_width = (yy / size) * (size / 2)
        return bool_mask(np.abs(xx - size / 2) <= half_width + 0.25)
    raise ValueError(f"unknown shape {shape!r}")


def bool_mask(values: np.ndarray) -> np.ndarray:
    """``values`` as a boolean array (keeps mypy precise about numpy comparisons)."""
    return np.asarray(values, dtype=bool)


def render(scene: Scene) -> np.ndarray:
    """The scene as a ``(32, 32, 3)`` uint8 RGB image."""
    image = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for p in scene.placements:
        mask = shape_mask(scene.shape, p.size)
        image[p.y: p.y + p.size, p.x: p.x + p.size][mask] = COLOURS[scene.colour]
    return image


def count_word(count: int, next_word: str, *, article: bool = True) -> str:
    """How a caption says ``count``: "two", "three"; for one, "a"/"an" (by ``next_word``) or "one"."""
    if count == 1 and article:
        return "an" if next_word[:1] in ("a", "e", "i", "o", "u") else "a"
    return COUNT_WORDS[count]


def caption(scene: Scene, *, with_colour: bool = True, with_position: bool = True, article: bool = True) -> str:
    """The scene's caption, e.g. ``two red circles on the left`` or ``a blue square at the top``.

    Attributes can be left out; ``article=False`` says "one" instead of "a"/"an" for a single shape.
    """
    noun = scene.shape + ("s" if scene.count > 1 else "")
    words = [scene.colour] if with_colour else []
    words.append(noun)
    if with_position:
        words.append(POSITION_PHRASES[scene.position])
    return " ".join([count_word(scene.count, words[0], article=article), *words])


def training_caption(scene: Scene, rng: random.Random) -> str:
    """A caption for training: usually full, sometimes without position or colour, sometimes empty (CFG).

    A single shape is "a"/"an" in ``ARTICLE_SHARE`` of its captions and "one" in the rest.
    """
    u = rng.random()
    article = rng.random() < ARTICLE_SHARE
    if u < 0.1:
        return ""
    if u < 0.25:
        return caption(scene, with_position=False, article=article)
    if u < 0.32:
        return caption(scene, with_colour=False, article=article)
    return caption(scene, article=article)


def vocabulary() -> list[str]:
    """Every word a caption can contain."""
    words = [*COUNT_WORDS.values(), "a", "an", *COLOURS]
    words += [w for s in SHAPES for w in (s, s + "s")]
    for phrase in POSITION_PHRASES.values():
        words += phrase.split()
    return list(dict.fromkeys(words))


def words(prompt: str) -> list[str]:
    """The prompt's words as the pair reads them: lower case, punctuation as a space, synonyms replaced."""
    return [SYNONYMS.get(w, w) for w in re.findall(r"\w+", prompt.lower())]


def unknown_words(prompt: str) -> list[str]:
    """The words of ``prompt`` the shapes pair does not know (its tokenizer reads them as ``<unk>``), once each.

    ``unknown_words("a purple hexagon on the left")`` is ``["purple", "hexagon"]``; ``[]`` means the pair
    and its checker understand every word.
    """
    known = set(vocabulary())
    return list(dict.fromkeys(w for w in words(prompt) if w not in known))
