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
from w2sd_cli.errors import InputError, PluginError
from w2sd_cli.files import ensure_writable, write_text_atomic
from w2sd_cli.outputs import load_output

Observer = Callable[[dict[str, Any]], None]
SCORES = "scores"


GIVE_UP = 10
"""A metric that fails this many items before it has scored one is stopped: it is broken, not one item."""


@dataclass
class EvalOutcome:
    """Per metric: items scored now, scores kept from before, diversity groups, and the items that failed.

    ``failures[metric]`` lists one record per item the metric raised on (``id``, ``prompt_index``, ``prompt``,
    ``seed``, ``method``, ``file``, ``error``), also written to ``scores/METRIC.failures.jsonl``; the other
    items' scores are stored as usual. ``stopped[metric]`` says why a metric was given up before the end.
    """

    run_dir: Path
    scored: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)
    diversity_groups: dict[str, int] = field(default_factory=dict)
    incomplete: int = 0
    items: int = 0
    failures: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """Items that some metric failed on (counted once per metric)."""
        return sum(len(rows) for rows in self.failures.values())


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

    A metric that raises on an item does not stop the run: the item is recorded in ``outcome.failures``
    (and ``scores/METRIC.failures.jsonl``), every other item is scored and kept, and the next call retries
    only what is missing.

    Args:
        run_dir: a `w2sd bench` run folder.
        metrics: metric names (default: ``default_metrics``).
        load: how metrics load their models.
        batch_size: outputs per ``score`` call.
        force: score everything again.
        observer: progress callback (``{"phase": "score", "metric", "done", "total"}``).
    """
    plan = read_plan(run_dir)
    chosen = [get_metric(name) for name in metrics or default_metrics(plan)]
    for metric in chosen:
        if inputs_of(metric) != plan.get("output", "image"):
            made = {"image": "images", "samples": "sample sets"}.get(str(plan.get("output")), str(plan.get("output")))
            raise InputError(f"Metric {metric.name} scores {inputs_of(metric)} outputs, but this run made "
                             f"{made}; `w2sd eval --list` shows which metric fits.")
    ensure_writable(run_dir / SCORES, "the run's scores folder")  # before any metric loads its model
    merged = merge(run_dir, plan["ids"])
    lines = read_lines(merged.path)
    card = PairCard.model_validate(plan["card"])
    outcome = EvalOutcome(run_dir, incomplete=len(merged.missing), items=len(lines))
    with merge_lock(run_dir, ".eval.lock"):  # a second eval (another rank, say) waits, then reuses the scores
        for metric in chosen:
            if callable(getattr(metric, "load", None)):
                metric.load(load or MetricLoad())
            _score_metric(run_dir, metric, lines, card, batch_size, force, observer, outcome)
    return outcome


def failure_text(metric: str, record: dict[str, Any]) -> str:
    """One line for an item a metric failed on: the metric, the item, its prompt, seed and method, the error."""
    prompt = str(record.get("prompt", ""))
    shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    return (f"metric {metric} failed on item {record['id']} (prompt {record.get('prompt_index')} {shown!r}, "
            f"seed {record.get('seed')}, method {record.get('method')}): {record['error']}")


def no_scores_note(run_dir: Path) -> str:
    """What `w2sd report` says when it found no scored metric: none scored yet, or scores without a description
    (an eval killed before it wrote ``METRIC.meta.json``, or made by an older w2sd)."""
    folder = run_dir / SCORES
    orphans = sorted(p.name.removesuffix(".jsonl") for p in folder.glob("*.jsonl")
                     if not p.name.endswith((".failures.jsonl", ".diversity.jsonl")) and read_lines(p)
                     and not (folder / p.name.replace(".jsonl", ".meta.json")).exists())
    if orphans:
        names = " ".join(f"--metric {name}" for name in orphans)
        return (f"scores of {', '.join(orphans)} are in {folder} but their description (METRIC.meta.json) is "
                f"missing: run `w2sd eval {run_dir} {names}` to finish them (it keeps every score).")
    return f"no scores yet: run `w2sd eval {run_dir}` (add --metric NAME; `w2sd eval --list`)."


def failure_summary(outcome: EvalOutcome) -> str:
    """The paragraph `w2sd eval` ends with when items failed: how many of how many, what was kept, what next."""
    parts = []
    for name, rows in outcome.failures.items():
        stopped = f" ({outcome.stopped[name]})" if name in outcome.stopped else ""
        parts.append(f"metric {name} failed on {len(rows)} of {outcome.items} items{stopped}")
    run = outcome.run_dir
    names = " ".join(f"--metric {name}" for name in outcome.failures)
    return (f"{'; '.join(parts)}. Every other score is stored and kept (`w2sd report {run}` uses them); the "
            f"errors are listed in {run / SCORES}/METRIC.failures.jsonl. Fix the metric or the item's file, then "
            f"run `w2sd eval {run} {names}` again: it scores only what is missing.")


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
    failures: list[dict[str, Any]] = []
    scored = 0
    with PartWriter(path) as writer:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            done, failed = _score_safely(run_dir, metric, batch, card)
            new = [(line, row) for line, row, _vector in done if line["id"] not in known]
            for line, row in new:
                writer.append({"id": line["id"], "values": row})
            scored += len(new)
            if set().union(*(row for _line, row in new)) - set(keys):
                keys = sorted(set(keys).union(*(row for _line, row in new)))
                _write_meta(folder, metric, keys, embeds)  # now: a later failure or kill keeps these usable
            vectors = [(line, vector) for line, _row, vector in done if vector is not None]
            if vectors:
                _save_embeddings(embed_dir, [line for line, _v in vectors], [v for _line, v in vectors])
            failures += [_failure(line, err) for line, err in failed]
            _notify(observer, {"phase": "score", "metric": metric.name, "done": start + len(batch),
                               "total": len(todo)})
            if len(failures) >= GIVE_UP and not scored:
                outcome.stopped[metric.name] = (f"stopped after {len(failures)} failures without one score; "
                                                f"{len(todo) - start - len(batch)} items were not tried")
                break
    outcome.scored[metric.name] = scored
    outcome.reused[metric.name] = sum(1 for ln in lines if ln["id"] in known)
    _keep_failures(folder / f"{metric.name}.failures.jsonl", failures)
    if failures:
        outcome.failures[metric.name] = failures
    if not keys:
        return  # nothing scored at all: no description, so `w2sd report` shows no empty column
    if embeds:
        outcome.diversity_groups[metric.name] = _diversity(folder, metric.name, embed_dir, lines)
    _write_meta(folder, metric, keys, embeds)


def _write_meta(folder: Path, metric: Any, keys: list[str], embeds: bool) -> None:
    """``scores/METRIC.meta.json``: what the metric is and which keys it gave (what `w2sd report` reads)."""
    meta = {"name": metric.name, "summary": getattr(metric, "summary", ""),
            "directions": dict(getattr(metric, "directions", {}) or {}), "primary": primary_key(metric, keys),
            "keys": keys, "bounds": {k: list(v) for k, v in (getattr(metric, "bounds", {}) or {}).items()}}
    if embeds:
        meta["diversity"] = True
    write_text_atomic(folder / f"{metric.name}.meta.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")


Scored = tuple[dict[str, Any], dict[str, float], Any]


def _score_safely(run_dir: Path, metric: Any, batch: list[dict[str, Any]], card: PairCard
                  ) -> tuple[list[Scored], list[tuple[dict[str, Any], Exception]]]:
    """Score a batch; when it raises, score its items one by one to find which fail (and keep the rest)."""
    try:
        return _checked(metric, batch, *_score_batch(run_dir, metric, batch, card)), []
    except Exception as err:  # a plugin's code: any exception is that metric's failure, not the run's
        if len(batch) == 1:
            return [], [(batch[0], err)]
    done: list[Scored] = []
    failed: list[tuple[dict[str, Any], Exception]] = []
    for line in batch:
        try:
            done += _checked(metric, [line], *_score_batch(run_dir, metric, [line], card))
        except Exception as err:
            failed.append((line, err))
    return done, failed


def _checked(metric: Any, batch: list[dict[str, Any]], values: Any, vectors: Any) -> list[Scored]:
    """The metric's answer for ``batch`` as (line, values, vector) triples, or a ``PluginError``."""
    rows = list(values)
    vectors_list = [None] * len(batch) if vectors is None else list(vectors)
    if len(rows) != len(batch) or len(vectors_list) != len(batch):
        raise PluginError(f"metric {metric.name} returned {len(rows)} scores (and {len(vectors_list)} embeddings) "
                          f"for {len(batch)} outputs; it must return one per output.")
    clean = []
    for row in rows:
        if not isinstance(row, dict) or not row:
            raise PluginError(f"metric {metric.name} returned {row!r}, not a dict of named numbers.")
        clean.append({str(k): float(v) for k, v in row.items()})
    return list(zip(batch, clean, vectors_list, strict=True))


def _failure(line: dict[str, Any], err: Exception) -> dict[str, Any]:
    from w2sd_cli.oserrors import mask

    detail = " ".join(str(err).split())[:500]
    return {"id": line["id"], "prompt_index": line.get("prompt_index"), "prompt": line.get("prompt", ""),
            "seed": line.get("seed"), "method": line.get("method"), "file": line.get("file"),
            "error": mask(f"{type(err).__name__}: {detail}" if detail else type(err).__name__)}


def _keep_failures(path: Path, failures: list[dict[str, Any]]) -> None:
    """The metric's failures of this call (none: the file goes, so an old list never outlives its fix)."""
    if not failures:
        path.unlink(missing_ok=True)
        return
    write_text_atomic(path, "".join(json.dumps(f, sort_keys=True, ensure_ascii=False) + "\n" for f in failures))


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


def _save_embeddings(folder: Path, batch: list[dict[str, Any]], vectors: Sequence[Any]) -> None:
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
