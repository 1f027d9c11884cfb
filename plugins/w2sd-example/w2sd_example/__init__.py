"""An example w2sd plugin: a pair kind (``tempered``), a metric (``mode-balance``) and a card (``ring-tempered``).

It uses only the public plugin API (``w2sd_cli.plugin``); see docs/plugins.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from w2sd_cli.plugin import hookimpl

CARDS = Path(__file__).parent / "cards"


@hookimpl
def register_pair_kinds(register: Callable[[Any], None]) -> None:
    from w2sd_example.kind import TemperedKind

    register(TemperedKind())


@hookimpl
def register_pairs(register: Callable[[Any], None]) -> None:
    for path in sorted(CARDS.glob("*.yaml")):
        register(path)


@hookimpl
def register_metrics(register: Callable[[Any], None]) -> None:
    from w2sd_example.kind import ModeBalance

    register(ModeBalance())
