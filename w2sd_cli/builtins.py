"""The built-in plugins: the cards shipped in ``registry/pairs`` and, one plugin each, w2sd's own kinds and metrics.

Each built-in kind is its own plugin so that one that cannot load (a missing optional dependency, say) is
reported by `w2sd plugins` and leaves every other kind working. Modules are imported inside the hooks.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from w2sd_cli.hookspecs import hookimpl
from w2sd_cli.paths import registry_dir

KINDS = {
    "analytic": "w2sd_cli.kinds.analytic:AnalyticKind",
    "diffusers": "w2sd_cli.kinds.diffusers:DiffusersKind",
    "flow": "w2sd_cli.kinds.diffusers:FlowKind",
    "moe-experts": "w2sd_cli.kinds.moe:MoEExpertsKind",
    "toy-unet": "w2sd_cli.kinds.shapes:ToyUNetKind",
}
METRICS = {
    "shapes-checker": "w2sd_cli.toy.checker:ShapesChecker",
    "image-stats": "w2sd_cli.bench.metrics.stats:ImageStats",
    "mixture-stats": "w2sd_cli.bench.metrics.stats:MixtureStats",
    "pickscore": "w2sd_cli.bench.metrics.reward:PickScore",
    "hpsv2": "w2sd_cli.bench.metrics.reward:HPSv2",
    "aesthetic": "w2sd_cli.bench.metrics.reward:Aesthetic",
    "imagereward": "w2sd_cli.bench.metrics.reward:ImageReward",
}


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)()


@hookimpl
def register_pairs(register: Callable[[Any], None]) -> None:
    for path in sorted((registry_dir() / "pairs").glob("*.yaml")):
        register(path)


class BuiltinKind:
    """A plugin that registers one built-in kind."""

    def __init__(self, target: str) -> None:
        self.target = target

    @hookimpl
    def register_pair_kinds(self, register: Callable[[Any], None]) -> None:
        register(_load(self.target))


class BuiltinMetric:
    """A plugin that registers one built-in metric."""

    def __init__(self, target: str) -> None:
        self.target = target

    @hookimpl
    def register_metrics(self, register: Callable[[Any], None]) -> None:
        register(_load(self.target))


def plugins() -> list[tuple[str, object]]:
    """Every built-in plugin with its name: the cards, then one per kind and per metric."""
    import sys

    found: list[tuple[str, object]] = [("w2sd", sys.modules[__name__])]
    found += [(f"w2sd.kind.{name}", BuiltinKind(target)) for name, target in KINDS.items()]
    found += [(f"w2sd.metric.{name}", BuiltinMetric(target)) for name, target in METRICS.items()]
    return found
