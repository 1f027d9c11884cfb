"""w2sd: weak-to-strong diffusion with reflection (Bai, Sugiyama & Xie, arXiv 2502.00473).

The Python API (imported lazily, so ``import w2sd_cli`` stays fast):

- ``load_pair(name, *, device=None, dtype=None, offline=None) -> Pair``: a named pair, models loaded once.
- ``Pair.generate(prompt=None, *, seeds=(0,), method="w2sd", steps=None, lam=None, ...) -> list[Sample]``.
- ``Pair.compare(prompt=None, *, seeds=(0,), methods=None, ...) -> Comparison`` (weak | strong | W2SD).
- ``from_pipelines(strong, weak, final=None, ...) -> Pair``: your own diffusers SD1.5/SDXL pipelines, no card.
- ``Sample``: ``.image`` or ``.samples``, ``.nfe``, ``.cost``, ``.seconds``, ``.recipe``, ``.save(path)``.

Plugin authors import from ``w2sd_cli.plugin``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

if TYPE_CHECKING:
    from w2sd_cli.api import Comparison, Pair, load_pair
    from w2sd_cli.engine import Sample
    from w2sd_cli.pipelines import SideKnobs, from_pipelines

__all__ = ["Comparison", "Pair", "Sample", "SideKnobs", "__version__", "from_pipelines", "load_pair"]

_LAZY = {"load_pair": "w2sd_cli.api", "Pair": "w2sd_cli.api", "Comparison": "w2sd_cli.api",
         "Sample": "w2sd_cli.engine", "from_pipelines": "w2sd_cli.pipelines", "SideKnobs": "w2sd_cli.pipelines"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'w2sd_cli' has no attribute {name!r}")
