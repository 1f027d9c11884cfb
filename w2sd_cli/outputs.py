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
"""The default file type of each output kind (what `w2sd gen` and `w2sd bench` write)."""
FORMATS = {"image": {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"},
           "samples": {".npy": "npy", ".npz": "npz"}}
"""What each output kind can be saved as, by file suffix. Only PNGs carry the recipe inside; the others get it
in ``PATH.json`` beside them."""


def output_format(kind: str, path: Path) -> str:
    """The file format ``path``'s suffix asks for, or an ``InputError`` naming the suffixes that fit ``kind``."""
    from w2sd_cli.errors import InputError

    formats = FORMATS.get(kind, {})
    found = formats.get(path.suffix.lower())
    if found is None:
        what = {"image": "an image", "samples": "a sample set"}.get(kind, kind)
        other = next((k for k, table in FORMATS.items() if path.suffix.lower() in table), None)
        hint = " (a picture of a sample set is the comparison panel: Comparison.panel())" if other == "image" else ""
        given = path.suffix or "a name without a suffix"
        raise InputError(f"{path}: {what} is saved as {', '.join(formats)}, not {given}{hint}.")
    return found


def save_output(output: Any, kind: str, path: Path, recipe: Mapping[str, Any] | None) -> Path:
    """Write one output atomically in the format its suffix names (``FORMATS``); PNGs carry ``recipe``, every
    other format gets ``PATH.json``."""
    fmt = output_format(kind, path)
    if fmt == "PNG":
        from w2sd_cli.images import save_png

        return save_png(output, path, recipe)
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        if kind == "image":
            _save_image(output, handle, fmt)
        else:
            import numpy as np

            array = np.ascontiguousarray(output)
            if fmt == "npz":
                np.savez(handle, samples=array)
            else:
                np.save(handle, array, allow_pickle=False)
    if recipe is not None:
        write_text_atomic(path.with_name(path.name + ".json"), json.dumps(recipe, indent=1, sort_keys=True,
                                                                           default=str) + "\n")
    return path


def _save_image(image: Any, handle: Any, fmt: str) -> None:
    from PIL import features

    if fmt == "WEBP" and not features.check("webp"):
        from w2sd_cli.errors import InputError

        raise InputError("This Pillow cannot write WebP; save as .png or .jpg.")
    image.convert("RGB").save(handle, format=fmt, quality=95)


def sha256_of(path: Path) -> str:
    """The file's sha256 (hex)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_output(path: Path) -> Any:
    """An output back from disk: a PIL image (RGB) or a float array."""
    if path.suffix.lower() in (".npy", ".npz"):
        import numpy as np

        loaded = np.load(path, allow_pickle=False)
        return loaded["samples"] if path.suffix.lower() == ".npz" else loaded
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
