"""Everything a plugin author needs, in one import (internals may move; this module will not).

    from w2sd_cli.plugin import hookimpl, PairKind, PreparedPair, Condition, Settings

A plugin is any module or object with ``@hookimpl`` functions, listed as an entry point in group ``w2sd``
(``[project.entry-points.w2sd] my-plugin = "my_package.plugin"``). See docs/plugins.md for every hook.
"""

from __future__ import annotations

from w2sd_cli.bench.metrics.base import MetricLoad
from w2sd_cli.cards import ModelRef, PairCard, Side, Strict, load_card, parse_card
from w2sd_cli.errors import (
    CardError,
    DownloadError,
    InputError,
    KindNotFound,
    ModelError,
    OfflineError,
    PairNotFound,
    PluginError,
    W2SDError,
)
from w2sd_cli.hookspecs import hookimpl
from w2sd_cli.kinds.base import (
    Condition,
    LoadedPair,
    LoadSettings,
    PairKind,
    PreparedPair,
    Settings,
    model_path,
)
from w2sd_cli.methods import Method
from w2sd_cli.metric import Metric

__all__ = [
    "CardError", "Condition", "DownloadError", "InputError", "KindNotFound", "LoadSettings", "LoadedPair",
    "Method", "Metric", "MetricLoad", "ModelError", "ModelRef", "OfflineError", "PairCard", "PairKind",
    "PairNotFound", "PluginError", "PreparedPair", "Settings", "Side", "Strict", "W2SDError", "hookimpl",
    "load_card", "model_path", "parse_card",
]

_TORCH = {"Denoiser": "w2sd_cli.sampling", "VPSchedule": "w2sd_cli.sampling", "FlowSchedule": "w2sd_cli.sampling",
          "SampleResult": "w2sd_cli.sampling", "CFGDenoiser": "w2sd_cli.adapters.unet",
          "Conditioning": "w2sd_cli.adapters.unet", "schedule_from_config": "w2sd_cli.adapters.unet",
          "grid_from_config": "w2sd_cli.adapters.unet"}
"""Names that need torch: imported on first use, so a plugin importing this module keeps `w2sd --help` fast."""


def __getattr__(name: str) -> object:
    if name in _TORCH:
        import importlib

        return getattr(importlib.import_module(_TORCH[name]), name)
    raise AttributeError(f"module 'w2sd_cli.plugin' has no attribute {name!r}")
