"""`w2sd pairs check PAIR`: a short bench on one metric; does the pair's W2SD beat its strong side?

A pair whose "weak" side is not really weaker makes images worse (paper Fig. 11-12), so check before a
long run. The answer comes with a paired bootstrap interval; "unclear" means the interval spans zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w2sd_cli.bench.analysis import analyse, verdict
from w2sd_cli.bench.evaluate import evaluate, failure_summary, failure_text
from w2sd_cli.bench.grid import digest
from w2sd_cli.bench.manifest import merge
from w2sd_cli.bench.metrics.base import MetricLoad, column
from w2sd_cli.bench.runner import BenchRequest, Observer, bench, read_plan
from w2sd_cli.errors import MetricFailed
from w2sd_cli.pairs import get_registry
from w2sd_cli.paths import home


@dataclass
class CheckRequest:
    """What to check: the pair, how many prompts and seeds, which metric and key."""

    pair: str
    prompts: str | None = None
    count: int = 8
    seeds: int = 2
    metric: str | None = None
    key: str | None = None
    steps: int | None = None
    samples: int | None = None
    device: str = "auto"
    offline: bool = False
    allow_pickle: bool = False
    out: Path | None = None


def defaults_for(card: Any, kind: Any) -> tuple[str | None, str]:
    """Default prompt set and metric of a pair: the card's first metric (and its own prompts), else PickScore."""
    metric = card.metrics[0] if card.metrics else ("image-stats" if kind.conditioning == "class" else "pickscore")
    if kind.conditioning == "none":
        return None, metric
    if metric == "shapes-checker":
        return "shapes", metric
    return (None if kind.conditioning == "class" else "pickapic"), metric


def check_pair(request: CheckRequest, observer: Observer | None = None) -> dict[str, Any]:
    """Run (or resume) the short bench, score it and compare W2SD with strong on one metric column."""
    registry = get_registry()
    entry = registry.get(request.pair)
    kind = registry.kind(entry)
    default_prompts, default_metric = defaults_for(entry.card, kind)
    metric = request.metric or default_metric
    prompts = request.prompts or default_prompts
    promptless = kind.conditioning == "none"
    seeds = request.count * request.seeds if promptless else request.seeds
    grid = digest({"prompts": prompts, "count": request.count, "seeds": request.seeds, "steps": request.steps,
                   "samples": request.samples}, 8)
    out = request.out or home() / "checks" / f"{entry.card.name}-{entry.card.digest()[:8]}-{grid}"
    bench(BenchRequest(pair=request.pair, out=out, prompts=None if promptless else prompts,
                       limit=None if promptless else request.count, seeds=f"0-{seeds - 1}",
                       methods=("strong", "w2sd"), steps=request.steps, samples=request.samples,
                       device=request.device, offline=request.offline, allow_pickle=request.allow_pickle), observer)
    scored = evaluate(out, [metric], load=MetricLoad(request.device, offline=request.offline,
                                                     allow_pickle=request.allow_pickle), observer=observer)
    if scored.failures:  # a verdict on silently fewer items would mislead: name the first failure and stop
        raise MetricFailed(f"{failure_text(metric, scored.failures[metric][0])}. {failure_summary(scored)}")
    merge(out, read_plan(out)["ids"])
    report = analyse(out)
    col = column(metric, request.key) if request.key else report.primary.get(metric, metric)
    result = verdict(report, col)
    return {"pair": entry.card.name, "run_dir": str(out), "unit": report.unit, "cost": report.cost, **result}
