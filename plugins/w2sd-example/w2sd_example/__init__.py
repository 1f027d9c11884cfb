"""An example w2sd plugin: one pair kind (``tempered``) and one card (``ring-tempered``).

The kind shows how little a kind needs: it derives the weak model from the strong one by tempering
the mixture weights (w_k ∝ π_k^τ with τ > 1 exaggerates the strong model's bias), so W2SD pushes
the other way: toward flatter weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from w2sd_cli.hookspecs import hookimpl

CARDS = Path(__file__).parent / "cards"


@hookimpl
def register_pair_kinds(register: Callable[[Any], None]) -> None:
    from w2sd_example.kind import TemperedKind

    register(TemperedKind())


@hookimpl
def register_pairs(register: Callable[[Any], None]) -> None:
    for path in sorted(CARDS.glob("*.yaml")):
        register(path)
