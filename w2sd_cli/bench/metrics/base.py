"""The metric contract and lookup.

A metric has ``name``, ``summary`` and ``score(outputs, prompts) -> list[dict[str, float]]`` (one dict per
output; the key ``score`` is the metric's single value, other keys are sub-scores). Optional attributes:

- ``inputs``: ``"image"`` (default; PIL images) or ``"samples"`` (``(N, dim)`` arrays; then ``score`` is
  also given ``card=`` the pair card).
- ``directions``: ``{key: +1 | -1 | 0}``, whether higher is better (default +1; 0 = neither).
- ``primary``: the key that stands for the metric (default ``score``, else ``all``, else the first).
- ``bounds``: ``{key: (lowest, highest)}`` for keys with a fixed range (a 0/1 checker, a fraction): lets
  ``pairs check`` say when both sides sit at the best value, where no prompt set can show a difference.
- ``load(options: MetricLoad)``: load models once per process before scoring.
- ``embed(outputs) -> (N, D) array`` of unit vectors, or ``score_and_embed(outputs, prompts)`` returning
  both: used for the per-prompt diversity figure (mean pairwise cosine distance across seeds).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from w2sd_cli.errors import InputError
from w2sd_cli.registries import NamedRegistry


@dataclass(frozen=True)
class MetricLoad:
    """How a metric loads its models: device, dtype, offline, pickle opt-in."""

    device: str = "auto"
    dtype: str | None = None
    offline: bool = False
    allow_pickle: bool = False


def metric_registry() -> NamedRegistry[Any]:
    """Every registered metric: built-ins keep their names; a clashing plugin metric is ``plugin:name``."""
    from w2sd_cli.plugins import get_host

    return get_host().registry(
        "register_metrics", "metric", check=lambda m: callable(getattr(m, "score", None)), not_found=InputError,
        hint="`w2sd eval --list` describes the installed metrics.")


def get_metric(name: str) -> Any:
    """The metric called ``name`` (or ``plugin:name``), or an ``InputError`` listing the installed ones."""
    metrics = metric_registry()
    if name not in metrics:
        raise InputError(f"No metric called {name!r}.{_close(name, metrics)} Installed metrics: "
                         f"{', '.join(sorted(metrics)) or 'none'} (`w2sd eval --list` describes them).")
    return metrics.get(name)


def _close(name: str, names: Iterable[str]) -> str:
    """'Did you mean' only for a near miss (a typo, or a part of a name): metric names are short and alike."""
    names = sorted(names)
    near = [n for n in names if len(name) >= 3 and (name.lower() in n or n in name.lower())]
    near += [n for n in difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.75) if n not in near]
    return f" Did you mean {', '.join(repr(n) for n in near[:3])}?" if near else ""


def inputs_of(metric: Any) -> str:
    return str(getattr(metric, "inputs", "image"))


def direction(metric_meta: dict[str, Any], key: str) -> int:
    """+1 when higher is better for ``key``, -1 when lower is, 0 when neither."""
    return int((metric_meta.get("directions") or {}).get(key, 1))


def primary_key(metric: Any, keys: list[str]) -> str:
    """The key standing for the metric: its ``primary``, else ``score``, else ``all``, else the first."""
    chosen = getattr(metric, "primary", None)
    if isinstance(chosen, str):
        return chosen
    for key in ("score", "all"):
        if key in keys:
            return key
    return keys[0] if keys else "score"


def column(metric: str, key: str) -> str:
    """The report column of one metric key: the metric's name for ``score``, else ``metric.key``."""
    return metric if key == "score" else f"{metric}.{key}"
