"""Everything a plugin author needs, in one import (internals may move; this module will not).

    from w2sd_cli.plugin import hookimpl, PairKind, PreparedPair, Condition, Settings

A plugin is any module or object with ``@hookimpl`` functions, listed as an entry point in group ``w2sd``
(``[project.entry-points.w2sd] my-plugin = "my_package.plugin"``). See docs/plugins.md for every hook.

Methods get the samplers (``sample_w2sd`` with ``lam=`` or ``reflect=``, ``sample_plain``, ``extrapolate``) and
their result type ``SampleResult``; executors get the job and outcome types (``BenchJob``, ``BenchOutcome``,
``Executor``, ``Observer``, ``Grid``, ``WorkItem``, ``ShareResult``) and the building blocks a remote
executor composes (``plan_share``, ``run_share``, ``batches``, ``render_batch``, ``PartWriter``,
``part_path``, ``finished``, ``merge``, ``atomic_path``, ``write_text_atomic``, ``sha256_of``,
``library_versions``). Those are imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
from w2sd_cli.methods import Method, Plan, guided, plain
from w2sd_cli.metric import Metric

if TYPE_CHECKING:
    from w2sd_cli.adapters.unet import CFGDenoiser, Conditioning, grid_from_config, schedule_from_config
    from w2sd_cli.bench.grid import Grid, WorkItem
    from w2sd_cli.bench.manifest import PartWriter, finished, merge, part_path
    from w2sd_cli.bench.runner import (
        BenchJob,
        BenchOutcome,
        Executor,
        Observer,
        ShareResult,
        batches,
        plan_share,
        render_batch,
        run_share,
    )
    from w2sd_cli.files import atomic_path, write_text_atomic
    from w2sd_cli.images import versions as library_versions
    from w2sd_cli.outputs import sha256_of
    from w2sd_cli.sampling import (
        PHASES,
        Denoiser,
        FlowSchedule,
        SampleResult,
        VPSchedule,
        extrapolate,
        sample_plain,
        sample_w2sd,
    )

__all__ = [
    "PHASES",
    "BenchJob",
    "BenchOutcome",
    "CFGDenoiser",
    "CardError",
    "Condition",
    "Conditioning",
    "Denoiser",
    "DownloadError",
    "Executor",
    "FlowSchedule",
    "Grid",
    "InputError",
    "KindNotFound",
    "LoadSettings",
    "LoadedPair",
    "Method",
    "Metric",
    "MetricLoad",
    "ModelError",
    "ModelRef",
    "Observer",
    "OfflineError",
    "PairCard",
    "PairKind",
    "PairNotFound",
    "PartWriter",
    "Plan",
    "PluginError",
    "PreparedPair",
    "SampleResult",
    "Settings",
    "ShareResult",
    "Side",
    "Strict",
    "VPSchedule",
    "W2SDError",
    "WorkItem",
    "atomic_path",
    "batches",
    "extrapolate",
    "finished",
    "grid_from_config",
    "guided",
    "hookimpl",
    "library_versions",
    "load_card",
    "merge",
    "model_path",
    "parse_card",
    "part_path",
    "plain",
    "plan_share",
    "render_batch",
    "run_share",
    "sample_plain",
    "sample_w2sd",
    "schedule_from_config",
    "sha256_of",
    "write_text_atomic"
]

_SAMPLING = ("Denoiser", "VPSchedule", "FlowSchedule", "SampleResult", "PHASES", "sample_w2sd", "sample_plain",
             "extrapolate")
_LAZY = {
    **dict.fromkeys(_SAMPLING, "w2sd_cli.sampling"),
    **dict.fromkeys(("CFGDenoiser", "Conditioning", "schedule_from_config", "grid_from_config"),
                    "w2sd_cli.adapters.unet"),
    **dict.fromkeys(("BenchJob", "BenchOutcome", "Executor", "Observer", "ShareResult", "batches", "plan_share",
                     "render_batch", "run_share"), "w2sd_cli.bench.runner"),
    **dict.fromkeys(("Grid", "WorkItem"), "w2sd_cli.bench.grid"),
    **dict.fromkeys(("PartWriter", "finished", "merge", "part_path"), "w2sd_cli.bench.manifest"),
    **dict.fromkeys(("atomic_path", "write_text_atomic"), "w2sd_cli.files"),
    "sha256_of": "w2sd_cli.outputs",
    "library_versions": "w2sd_cli.images:versions",
}
"""Names imported on first use (torch for the samplers, the bench machinery for executors), so a plugin
importing this module keeps `w2sd --help` and `w2sd pairs list` fast."""


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        module, _, attr = _LAZY[name].partition(":")
        return getattr(importlib.import_module(module), attr or name)
    raise AttributeError(f"module 'w2sd_cli.plugin' has no attribute {name!r}")
