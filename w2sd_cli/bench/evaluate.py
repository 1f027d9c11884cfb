"""`w2sd eval`: score a run's outputs with metrics, resumably, plus a per-prompt diversity figure.

Scores go to ``scores/METRIC.jsonl`` (``{"id", "values"}`` a line, appended and fsynced per batch), the
metric's description to ``scores/METRIC.meta.json``, and, for metrics that embed images, the mean pairwise
cosine distance across seeds per (prompt, method) to ``scores/METRIC.diversity.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from w2sd_cli.bench.manifest import PartWriter, merge, merge_lock, read_lines
from w2sd_cli.bench.metrics.base import MetricLoad, get_metric, inputs_of, primary_key
from w2sd_cli.bench.runner import read_plan
from w2sd_cli.cards import PairCard
from w2sd_cli.errors import InputError
from w2sd_cli.files import write_text_atomic
from w2sd_cli.outputs import load_output

Observer = Callable[[dict[str, Any]], None]
SCORES = "scores"


@dataclass
class EvalOutcome:
    """Per metric: how many items were scored now, how many were already, and the diversity groups."""

    run_dir: Path
    scored: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)
    diversity_groups: dict[str, int] = field(default_factory=dict)
    incomplete: int = 0


def default_metrics(plan: dict[str, Any]) -> list[str]:
    """What to score when no ``--metric`` is given: the metrics the pair's card names, plus the model-free image
    statistics for image runs (``mixture-stats`` for analytic runs whose card names none).

    Raises:
        InputError: a sample-set run whose card names no metric (there is no model-free default for it).
    """
    card = plan.get("card") if isinstance(plan.get("card"), dict) else {}
    named = [str(m) for m in (card or {}).get("metrics") or []]
    if plan.get("output") == "samples":
        chosen = named or (["mixture-stats"] if plan.get("kind") == "analytic" else [])
        if not chosen:
            raise InputError(f"Pair {plan.get('pair')}'s card names no metric for its sample sets: give one with "
                             "--metric NAME (`w2sd eval --list` shows which fit), or add `metrics:` to the card.")
        return chosen
    if not named and plan.get("kind") == "toy-unet":
        named = ["shapes-checker"]
    return list(dict.fromkeys(["image-stats", *named]))


def evaluate(run_dir: Path, metrics: Sequence[str] | None = None, *, load: MetricLoad | None = None,
             batch_size: int = 8, force: bool = False, observer: Observer | None = None) -> EvalOutcome:
    """Score every finished item of a run with each metric (skipping items already scored).

    Args:
        run_dir: a `w2sd bench` run folder.
        metrics: metric names (default: ``default_metrics``).
        load: how metrics load their models.
        batch_size: outputs per ``score`` call.
        force: score everything again.
        observer: progress callback (``{"phase": "score", "metric", "done", "total"}``).
    """
    plan = read_plan(run_dir)
    merged = merge(run_dir, plan["ids"])
    lines = read_lines(merged.path)
    card = PairCard.model_validate(plan["card"])
    outcome = EvalOutcome(run_dir, incomplete=len(merged.missing))
    chosen = [get_metric(name) for name in metrics or default_metrics(plan)]
    for metric in chosen:
        if inputs_of(metric) != plan.get("output", "image"):
            made = {"image": "images", "samples": "sample sets"}.get(str(plan.get("output")), str(plan.get("output")))
            raise InputError(f"Metric {metric.name} scores {inputs_of(metric)} outputs, but this run made "
                             f"{made}; `w2sd eval --list` shows which metric fits.")
    with merge_lock(run_dir, ".eval.lock"):  # a second eval (another rank, say) waits, then reuses the scores
        for metric in chosen:
            if callable(getattr(metric, "load", None)):
                metric.load(load or MetricLoad())
            _score_metric(run_dir, metric, lines, card, batch_size, force, observer, outcome)
    return outcome


def _score_metric(run_dir: Path, metric: Any, lines: list[dict[str, Any]], card: PairCard, batch_size: int,
                  force: bool, observer: Observer | None, outcome: EvalOutcome) -> None:
    folder = run_dir / SCORES
    path = folder / f"{metric.name}.jsonl"
    if force:
        path.unlink(missing_ok=True)
    known = {row["id"]: row for row in read_lines(path)}
    embed_dir = folder / f"{metric.name}.embeddings"
    embeds = callable(getattr(metric, "embed", None))
    todo = [ln for ln in lines if ln["id"] not in known or (embeds and not (embed_dir / f"{ln['id']}.npy").exists())]
    keys: list[str] = sorted({k for row in known.values() for k in row.get("values", {})})
    with PartWriter(path) as writer:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            values, vectors = _score_batch(run_dir, metric, batch, card)
            for line, row in zip(batch, values, strict=True):
                if line["id"] not in known:
                    writer.append({"id": line["id"], "values": row})
                    keys = sorted(set(keys) | set(row))
            if vectors is not None:
                _save_embeddings(embed_dir, batch, vectors)
            _notify(observer, {"phase": "score", "metric": metric.name, "done": start + len(batch),
                               "total": len(todo)})
    outcome.scored[metric.name] = sum(1 for ln in todo if ln["id"] not in known)
    outcome.reused[metric.name] = len(lines) - outcome.scored[metric.name]
    meta = {"name": metric.name, "summary": getattr(metric, "summary", ""),
            "directions": dict(getattr(metric, "directions", {}) or {}), "primary": primary_key(metric, keys),
            "keys": keys, "bounds": {k: list(v) for k, v in (getattr(metric, "bounds", {}) or {}).items()}}
    if embeds:
        outcome.diversity_groups[metric.name] = _diversity(folder, metric.name, embed_dir, lines)
        meta["diversity"] = True
    write_text_atomic(folder / f"{metric.name}.meta.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")


def _score_batch(run_dir: Path, metric: Any, batch: list[dict[str, Any]],
                 card: PairCard) -> tuple[list[dict[str, float]], Any]:
    outputs = [load_output(run_dir / line["file"]) for line in batch]
    prompts = [str(line.get("prompt", "")) for line in batch]
    if inputs_of(metric) == "samples":
        return metric.score(outputs, prompts, card=card), None
    if callable(getattr(metric, "score_and_embed", None)):
        values, vectors = metric.score_and_embed(outputs, prompts)
        return values, vectors
    vectors = metric.embed(outputs) if callable(getattr(metric, "embed", None)) else None
    return metric.score(outputs, prompts), vectors


def _save_embeddings(folder: Path, batch: list[dict[str, Any]], vectors: Any) -> None:
    import numpy as np

    from w2sd_cli.files import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    for line, vector in zip(batch, np.asarray(vectors, dtype=np.float32), strict=True):
        with atomic_path(folder / f"{line['id']}.npy") as tmp, tmp.open("wb") as handle:
            np.save(handle, vector, allow_pickle=False)


def _diversity(folder: Path, name: str, embed_dir: Path, lines: list[dict[str, Any]]) -> int:
    """Mean pairwise cosine distance across seeds, per (prompt, method) with at least two seeds."""
    import numpy as np

    groups: dict[tuple[int, str], list[Any]] = {}
    for line in lines:
        vector_path = embed_dir / f"{line['id']}.npy"
        if vector_path.exists():
            groups.setdefault((int(line["prompt_index"]), str(line["method"])), []).append(np.load(vector_path))
    rows = []
    for (index, method), vectors in sorted(groups.items()):
        if len(vectors) < 2:
            continue
        distances = [1.0 - float(np.dot(a, b)) for a, b in combinations(vectors, 2)]
        rows.append({"prompt_index": index, "method": method, "value": float(np.mean(distances)),
                     "seeds": len(vectors)})
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    write_text_atomic(folder / f"{name}.diversity.jsonl", text)
    return len(rows)


def _notify(observer: Observer | None, event: dict[str, Any]) -> None:
    if observer is not None:
        observer(event)
