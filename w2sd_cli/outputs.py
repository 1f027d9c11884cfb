"""Writing outputs: images as PNGs that carry their recipe, sample sets as ``.npy`` with a JSON recipe beside.

The only writer of generated outputs (``w2sd gen``, ``w2sd bench`` and ``Sample.save`` all come here).
PIL and numpy are imported lazily.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from w2sd_cli.files import atomic_path, write_text_atomic

SUFFIX = {"image": ".png", "samples": ".npy"}


def save_output(output: Any, kind: str, path: Path, recipe: Mapping[str, Any] | None) -> Path:
    """Write one output atomically; images carry ``recipe`` in the PNG, sample sets get ``PATH.json``."""
    if kind == "image":
        from w2sd_cli.images import save_png

        return save_png(output, path, recipe)
    import numpy as np

    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.save(handle, np.ascontiguousarray(output), allow_pickle=False)
    if recipe is not None:
        write_text_atomic(path.with_name(path.name + ".json"), json.dumps(recipe, indent=1, sort_keys=True,
                                                                           default=str) + "\n")
    return path


def sha256_of(path: Path) -> str:
    """The file's sha256 (hex)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_output(path: Path) -> Any:
    """An output back from disk: a PIL image (RGB) or a float array."""
    if path.suffix == ".npy":
        import numpy as np

        return np.load(path, allow_pickle=False)
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe form of a prompt (empty for an empty prompt)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")


class OutputNames:
    """Where `w2sd gen` puts each file.

    ``OUT`` a folder: ``{pair}[-{prompt}]-seed{seed}.png`` for W2SD, ``...-seed{seed}-{method}.png`` for
    other methods and ``...-seed{seed}-compare.png`` for the panel. ``OUT`` ending in ``.png``: the first
    output is exactly that file and the others add the same suffixes to its stem (``x-seed1.png``,
    ``x-strong.png``, ``x-compare.png``).
    """

    def __init__(self, out: Path, pair: str, main_method: str, first_seed: int, suffix: str = ".png") -> None:
        self.out, self.pair, self.main, self.first_seed, self.suffix = out, pair, main_method, first_seed, suffix
        self.single = out.suffix.lower() in (".png", ".npy")

    def path(self, prompt: str, seed: int, method: str) -> Path:
        """The file of one output (``method`` may be ``compare``)."""
        tail = "" if method == self.main else f"-{method}"
        suffix = ".png" if method == "compare" else self.suffix
        if self.single:
            seed_part = "" if seed == self.first_seed else f"-seed{seed}"
            return self.out.with_name(f"{self.out.stem}{seed_part}{tail}{suffix}")
        words = slug(prompt)
        stem = f"{self.pair}-{words}" if words else self.pair
        return self.out / f"{stem}-seed{seed}{tail}{suffix}"


LABELS = {"w2sd": "W2SD", "equal-nfe": "equal NFE"}


def panel(kind: str, shown: Sequence[tuple[str, Any]], title: str = "") -> Any:
    """A side-by-side picture of outputs by method: images in a row, sample sets as scatter/histogram panels."""
    if kind == "image":
        from w2sd_cli.images import panel as image_panel

        return image_panel([(LABELS.get(method, method), _upscaled(image)) for method, image in shown])
    from w2sd_cli.sample_plot import plot

    return plot(dict(shown), title)


def _upscaled(image: Any, smallest: int = 128) -> Any:
    """Tiny images (the 32×32 shapes world) are enlarged, nearest-neighbour, so a panel can be seen."""
    if image.width >= smallest:
        return image
    factor = -(-smallest // image.width)
    from PIL import Image

    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def check_out(out: Path) -> Path:
    """Prove that `w2sd gen --out OUT` can write its files (before any model loads); returns the folder.

    The folder is ``OUT`` itself, or the parent of an ``OUT`` ending in ``.png``/``.npy`` (see ``OutputNames``).
    Raises ``PathError`` naming the folder and the fix.
    """
    from w2sd_cli.files import ensure_writable

    folder = out.parent if out.suffix.lower() in (".png", ".npy") else out
    return ensure_writable(folder, "the output folder")
