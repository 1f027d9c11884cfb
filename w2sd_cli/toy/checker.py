"""A ground-truth checker for shapes-world images: does the picture say what the caption says?

Pixels are assigned to a palette colour by projecting them onto the line from the background to that
colour (so anti-aliased or blurred edges keep their colour), same-colour pixels are grouped into
4-connected components, and each component is classified as circle, square or triangle from its
silhouette. Colour, count, shape and position are then compared with the caption's words.

A prompt with a word the pair does not know ("a purple hexagon") is unscorable: its verdict says so and
names the words, and the metric leaves it out of every accuracy instead of counting it as correct.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from w2sd_cli.toy.world import BACKGROUND, COLOURS, POSITIONS, SHAPES, SIZE, unknown_words, words

ATTRIBUTES = ("colour", "count", "shape", "position")
COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}
MIN_AREA = 6
"""Components smaller than this (pixels at 32×32) are specks, not shapes."""
CENTRE_RADIUS = 4.5
"""A group whose centroid is this close (pixels, per axis) to the image centre is "in the centre"."""


@dataclass(frozen=True)
class Request:
    """What a caption asks for; ``None`` leaves an attribute free."""

    count: int | None = None
    colour: str | None = None
    shape: str | None = None
    position: str | None = None


@dataclass(frozen=True)
class Found:
    """One detected shape: its colour, class, pixel area and centroid (x, y)."""

    colour: str
    shape: str
    area: int
    x: float
    y: float


def parse_caption(text: str) -> Request:
    """Read count, colour, shape and position words from a caption (other words are skipped here;
    ``verdict`` refuses to score a prompt with words the pair does not know)."""
    seen = words(text)
    count = next((COUNT_WORDS[w] for w in seen if w in COUNT_WORDS), None)
    colour = next((w for w in seen if w in COLOURS), None)
    shape = next((w.rstrip("s") for w in seen if w.rstrip("s") in SHAPES), None)
    position = next((w for w in seen if w in POSITIONS), None)
    return Request(count, colour, shape, position)


def to_array(image: Any) -> np.ndarray:
    """An RGB uint8 ``(32, 32, 3)`` array from a PIL image or array of any size (box-downsampled)."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if array.shape[:2] != (SIZE, SIZE):
        from PIL import Image

        picture = Image.fromarray(array.astype(np.uint8)).convert("RGB")
        array = np.asarray(picture.resize((SIZE, SIZE), Image.Resampling.BOX))
    return array.astype(np.uint8)


def colour_labels(image: np.ndarray, max_residual: float = 70.0) -> np.ndarray:
    """Per pixel: index into ``COLOURS`` or -1 for background (or an unrecognised colour)."""
    background = np.array(BACKGROUND, dtype=np.float64)
    offset = image.astype(np.float64) - background
    best = np.full(image.shape[:2], -1)
    best_residual = np.full(image.shape[:2], np.inf)
    for i, rgb in enumerate(COLOURS.values()):
        direction = np.array(rgb, dtype=np.float64) - background
        alpha = offset @ direction / (direction @ direction)
        residual = np.linalg.norm(offset - alpha[..., None] * direction, axis=-1)
        take = (alpha >= 0.5) & (residual < max_residual) & (residual < best_residual)
        best[take] = i
        best_residual[take] = residual[take]
    return best


def components(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """4-connected components of equal non-negative labels: ``(label, boolean mask)`` pairs."""
    seen = np.zeros(labels.shape, dtype=bool)
    height, width = labels.shape
    found = []
    for y0, x0 in zip(*np.nonzero(labels >= 0), strict=True):
        if seen[y0, x0]:
            continue
        label, stack, mask = labels[y0, x0], [(y0, x0)], np.zeros(labels.shape, dtype=bool)
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            mask[y, x] = True
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and not seen[ny, nx] and labels[ny, nx] == label:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        found.append((int(label), mask))
    return found


def classify_shape(mask: np.ndarray) -> str:
    """Circle, square or triangle from a silhouette: taper (top vs bottom width), then corner fill."""
    ys, xs = np.nonzero(mask)
    box = mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    h, w = box.shape
    widths = box.sum(axis=1).astype(float)
    third = max(1, h // 3)
    if widths[:third].mean() < 0.6 * widths[-third:].mean():
        return "triangle"
    k = max(1, round(min(h, w) / 4))
    corners = [box[:k, :k], box[:k, -k:], box[-k:, :k], box[-k:, -k:]]
    return "square" if float(np.mean([c.mean() for c in corners])) >= 0.6 else "circle"


def detect(image: Any) -> list[Found]:
    """The shapes in an image, largest first."""
    array = to_array(image)
    names = list(COLOURS)
    found = []
    for label, mask in components(colour_labels(array)):
        area = int(mask.sum())
        if area < MIN_AREA:
            continue
        ys, xs = np.nonzero(mask)
        found.append(Found(names[label], classify_shape(mask), area, float(xs.mean()), float(ys.mean())))
    return sorted(found, key=lambda f: -f.area)


def group_position(found: Sequence[Found]) -> str | None:
    """Where the group sits: the centroid's dominant offset from the image centre, or ``centre``."""
    if not found:
        return None
    middle = (SIZE - 1) / 2
    dx = float(np.mean([f.x for f in found])) - middle
    dy = float(np.mean([f.y for f in found])) - middle
    if max(abs(dx), abs(dy)) < CENTRE_RADIUS:
        return "centre"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def verdict(image: Any, prompt: str) -> dict[str, Any]:
    """Whether the image shows what the prompt asks for, attribute by attribute.

    Returns ``{"scorable", "unknown", "checks", "all", "seen"}``: ``checks`` maps each attribute the prompt
    names to True/False and ``all`` is their conjunction (False when nothing was detected); ``seen`` is what
    the checker found (count, colours, shapes, position). When the prompt has words the pair does not know,
    ``scorable`` is False, ``unknown`` lists those words, ``checks`` is empty and ``all`` is None.
    """
    unknown = unknown_words(prompt)
    found = detect(image)
    seen = {
        "count": len(found),
        "colours": sorted({f.colour for f in found}),
        "shapes": sorted({f.shape for f in found}),
        "position": group_position(found),
    }
    if unknown:
        return {"scorable": False, "unknown": unknown, "checks": {}, "all": None, "seen": seen}
    want = parse_caption(prompt)
    checks: dict[str, bool] = {}
    if want.colour is not None:
        checks["colour"] = bool(found) and seen["colours"] == [want.colour]
    if want.count is not None:
        checks["count"] = len(found) == want.count
    if want.shape is not None:
        checks["shape"] = bool(found) and seen["shapes"] == [want.shape]
    if want.position is not None:
        checks["position"] = seen["position"] == want.position
    return {"scorable": True, "unknown": [], "checks": checks, "all": all(checks.values()) and bool(found),
            "seen": seen}


class ShapesChecker:
    """The shapes-world checker as a metric: one dict of 0/1 scores per (image, prompt)."""

    name = "shapes-checker"
    summary = ("colour/count/shape/position correctness of shapes-world images (ground-truth checker); "
               "prompts with words the pair does not know are unscorable (scorable = 0) and left out")
    directions: ClassVar[dict[str, int]] = {"scorable": 0}
    bounds: ClassVar[dict[str, tuple[float, float]]] = {
        key: (0.0, 1.0) for key in ("all", "colour", "count", "shape", "position", "scorable")}
    primary = "all"
    """Even when no prompt could be scored (then only ``scorable`` exists), ``all`` is what a verdict judges."""

    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> list[dict[str, float]]:
        """Scores per image: the attributes the prompt names, ``all``, and ``scorable`` = 1.

        An unscorable prompt (a word the pair does not know) gives only ``{"scorable": 0.0}``, so every
        attribute's and ``all``'s mean is over scorable items and the mean of ``scorable`` is their share.

        Args:
            images: PIL images or ``(H, W, 3)`` uint8 arrays (any size; downsampled to 32×32).
            prompts: one caption per image.
        """
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        out = []
        for image, prompt in zip(images, prompts, strict=True):
            v = verdict(image, prompt)
            if not v["scorable"]:
                out.append({"scorable": 0.0})
                continue
            row = {k: float(ok) for k, ok in v["checks"].items()}
            row["all"] = float(v["all"])
            row["scorable"] = 1.0
            out.append(row)
        return out
