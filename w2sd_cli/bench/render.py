"""The bench's contract with a pair kind: a loaded pair that renders one (prompt, seed, method) at a time.

``PairKind.renderer(card, request)`` returns a ``Renderer``. Its outputs are images (PIL) or sample sets
(``(N, dim)`` arrays, for pairs whose "models" are distributions), saved here atomically.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from w2sd_cli.files import atomic_path

if TYPE_CHECKING:
    from w2sd_cli.sampling import Callback

Output = Literal["image", "samples"]
SUFFIX = {"image": ".png", "samples": ".npy"}


@dataclass
class Rendered:
    """One output and its cost: ``output`` is a PIL image or an ``(N, dim)`` array."""

    output: Any
    nfe: int
    cost: float
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Renderer(Protocol):
    """A pair loaded once, rendering items on demand.

    Building one must be cheap (the bench builds one to read ``output`` and ``uses_prompts`` on every rank,
    even with nothing to do): load models on the first ``render``. The same (prompt, seed, method) must
    give the same output, so a resumed run equals an uninterrupted one.

    Attributes:
        output: ``"image"`` or ``"samples"``.
        uses_prompts: ``False`` for pairs that ignore the prompt (then a grid has one empty prompt).
    """

    output: Output
    uses_prompts: bool

    def render(self, prompt: str, seed: int, method: str, observer: Callback | None = None) -> Rendered:
        """Sample ``method`` from ``seed``'s noise for ``prompt``."""
        ...

    def provenance(self) -> dict[str, Any]:
        """Device, dtype, model revisions: recorded with every item."""
        ...


def save_output(rendered: Rendered, kind: Output, path: Path, recipe: dict[str, Any]) -> str:
    """Write an output atomically (PNGs carry ``recipe``); return the file's sha256."""
    if kind == "image":
        from w2sd_cli.images import save_png

        save_png(rendered.output, path, recipe)
    else:
        import numpy as np

        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            np.save(handle, np.ascontiguousarray(rendered.output), allow_pickle=False)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_output(path: Path) -> Any:
    """An output back from disk: a PIL image (RGB) or a float array."""
    if path.suffix == ".npy":
        import numpy as np

        return np.load(path, allow_pickle=False)
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")
