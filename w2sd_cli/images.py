"""Image outputs: PNGs that carry their recipe, written atomically, and labelled comparison panels.

Generic over pair kinds: a recipe is any JSON-able dict. PIL and torch are imported lazily so the CLI
can import this module at start-up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from w2sd_cli.errors import InputError
from w2sd_cli.files import atomic_path

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor

RECIPE_KEY = "w2sd"
"""PNG text key holding the recipe as JSON (an iTXt chunk, UTF-8)."""
RECIPE_VERSION = 1


def versions() -> dict[str, str]:
    """Installed versions of the packages an image depends on (``unknown`` where not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist, key in (("w2sd", "w2sd"), ("diffusers", "diffusers"), ("torch", "torch"),
                      ("transformers", "transformers"), ("peft", "peft")):
        try:
            found[key] = version(dist)
        except PackageNotFoundError:
            found[key] = "unknown"
    return found


def image_name(pair: str, seed: int, method: str, index: int | None = None) -> str:
    """The predictable file name of one output: ``{pair}-s{seed}-{method}[-{index}].png``."""
    suffix = f"-{index}" if index is not None else ""
    return f"{pair}-s{seed}-{method}{suffix}.png"


def to_image(pixels: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> Image.Image:
    """One image from a ``(C, H, W)`` or ``(1, C, H, W)`` tensor in ``value_range`` (RGB or grey)."""
    import numpy as np
    from PIL import Image

    if pixels.dim() == 4:
        if pixels.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {pixels.shape[0]}")
        pixels = pixels[0]
    low, high = value_range
    scaled = ((pixels.detach().float().cpu() - low) / (high - low)).clamp(0, 1)
    array = (scaled.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    return Image.fromarray(array, mode="RGB")


def save_png(image: Image.Image, path: Path, recipe: Mapping[str, Any] | None = None) -> Path:
    """Write ``image`` to ``path`` with ``recipe`` as PNG text; a temp file renamed into place.

    An interrupted save (Ctrl-C included) leaves no partial file behind.

    Args:
        image: the picture.
        path: where it goes; the folder is created.
        recipe: JSON-able provenance, stored under ``RECIPE_KEY``; ``prompt`` is also stored under
            the conventional ``Description`` key for other viewers.

    Returns:
        ``path``.
    """
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if recipe is not None:
        body = {"recipe_version": RECIPE_VERSION, **recipe}
        info.add_itxt(RECIPE_KEY, json.dumps(body, sort_keys=True, default=str))
        if isinstance(recipe.get("prompt"), str):
            info.add_itxt("Description", recipe["prompt"])
    info.add_text("Software", "w2sd")
    with atomic_path(path) as temp, temp.open("wb") as stream:
        image.save(stream, format="PNG", pnginfo=info)
    return path


def read_recipe(path: Path) -> dict[str, Any]:
    """The recipe stored in a w2sd PNG (what ``--from-image`` reproduces).

    Raises:
        InputError: the file is missing, not a PNG, or carries no w2sd recipe.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            text = dict(getattr(image, "text", {}) or {})
    except FileNotFoundError:
        raise InputError(f"{path}: no such image.") from None
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"{path}: not a readable image ({err}).") from None
    blob = text.get(RECIPE_KEY)
    if blob is None:
        raise InputError(f"{path}: carries no w2sd recipe; only PNGs written by `w2sd gen` can be reproduced.")
    try:
        recipe = json.loads(blob)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: its w2sd recipe is damaged ({err}).") from None
    if not isinstance(recipe, dict):
        raise InputError(f"{path}: its w2sd recipe is not a mapping.")
    if recipe.get("recipe_version", RECIPE_VERSION) > RECIPE_VERSION:
        raise InputError(f"{path}: written by a newer w2sd (recipe version {recipe['recipe_version']}); upgrade w2sd.")
    return recipe


def panel(images: Sequence[tuple[str, Image.Image]], gap: int = 4) -> Image.Image:
    """Images side by side, each with its label in a bar above (e.g. weak | strong | W2SD).

    Args:
        images: ``(label, image)`` pairs, left to right; sizes may differ (tops are aligned).
        gap: white pixels between images.
    """
    from PIL import Image, ImageDraw, ImageFont

    if not images:
        raise ValueError("a panel needs at least one image")
    height = max(im.height for _, im in images)
    bar = max(14, min(48, height // 16))
    font: Any
    try:
        font = ImageFont.load_default(size=max(10, bar - 4))
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    width = sum(im.width for _, im in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, height + bar), "white")
    draw = ImageDraw.Draw(canvas)
    left = 0
    for label, im in images:
        canvas.paste(im.convert("RGB"), (left, bar))
        draw.text((left + 2, 1), label, fill="black", font=font)
        left += im.width + gap
    return canvas
