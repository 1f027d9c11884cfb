"""The built-in plugin: w2sd's own kinds and the cards shipped in ``registry/pairs``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from w2sd_cli.hookspecs import hookimpl
from w2sd_cli.paths import registry_dir


@hookimpl
def register_pair_kinds(register: Callable[[Any], None]) -> None:
    from w2sd_cli.kinds.analytic import AnalyticKind
    from w2sd_cli.kinds.image import DiffusersKind
    from w2sd_cli.kinds.moe import MoEExpertsKind

    register(AnalyticKind())
    register(DiffusersKind())
    register(MoEExpertsKind())


@hookimpl
def register_pairs(register: Callable[[Any], None]) -> None:
    for path in sorted((registry_dir() / "pairs").glob("*.yaml")):
        register(path)
