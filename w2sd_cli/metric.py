"""The metric contract: what `w2sd eval`, `pairs check` and the cards' own verdicts (``metrics:``) call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Metric(Protocol):
    """A metric scores outputs; one dict of floats per output.

    Required: ``name``, ``summary`` and ``score(outputs, prompts) -> list[dict[str, float]]`` (the key ``score``
    is the metric's single value, other keys are sub-scores). Optional attributes:

    - ``inputs``: ``"image"`` (default; PIL images) or ``"samples"`` (``(N, dim)`` arrays; then ``score`` is
      also given ``card=`` the pair card).
    - ``directions``: ``{key: +1 | -1 | 0}``, whether higher is better (default +1; 0 = neither).
    - ``primary``: the key that stands for the metric (default ``score``, else ``all``, else the first).
    - ``load(options: MetricLoad)``: load models once per process before scoring.
    - ``embed(outputs) -> (N, D) array`` of unit vectors: used for the per-prompt diversity figure.
    - ``models``: the model references it downloads (so `w2sd pull` can fetch them and ``--offline`` works).
    """

    name: str
    summary: str

    def score(self, outputs: Sequence[Any], prompts: Sequence[str]) -> list[dict[str, float]]: ...
