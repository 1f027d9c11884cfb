"""Numbers of a report: per method and metric the mean, the paired difference to ``strong`` with a
bootstrap 95% interval, the win rate, NFE and seconds per item; per prompt category too.

Items made from the same prompt and seed share their initial noise across methods, so comparisons are
paired. The unit is the prompt (its seeds averaged) when a run has several prompts, else the seed. The
interval resamples units with replacement (percentile bootstrap, fixed seed: reports are reproducible).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from w2sd_cli.bench.evaluate import SCORES
from w2sd_cli.bench.manifest import MERGED, read_lines
from w2sd_cli.bench.metrics.base import column, direction
from w2sd_cli.bench.runner import failures, read_plan

BASELINE = "strong"
BOOTSTRAP = 2000
SMALL_N = 10
"""Fewer paired units than this and a comparison gets a warning: its interval and win rate are coarse."""


@dataclass
class Comparison:
    """One method against the baseline on one metric column."""

    diff: float | None
    low: float | None
    high: float | None
    win_rate: float | None
    units: int
    constant: float | None = None
    """The one value every compared unit has on both sides (a metric pinned at, say, its ceiling), else None."""


@dataclass
class Row:
    """One method on one metric column (optionally within one category)."""

    method: str
    metric: str
    mean: float | None
    n: int
    direction: int
    vs_strong: Comparison | None = None
    category: str | None = None


@dataclass
class Report:
    """Everything `w2sd report` shows."""

    run_dir: str
    pair: str
    methods: list[str]
    metrics: list[str]
    primary: dict[str, str]
    unit: str
    done: int
    total: int
    cost: dict[str, dict[str, float | None]]
    failed: int = 0
    rows: list[Row] = field(default_factory=list)
    categories: list[Row] = field(default_factory=list)
    bounds: dict[str, list[float]] = field(default_factory=dict)
    """Per column the metric's declared [worst-or-lowest, highest] values, where it declares them."""
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def row(self, method: str, metric: str) -> Row | None:
        return next((r for r in self.rows if r.method == method and r.metric == metric), None)


def load_values(run_dir: Path) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]],
                                          dict[tuple[int, str], dict[str, float]]]:
    """Per item id its values by column; each metric's meta; per (prompt, method) its diversity values."""
    values: dict[str, dict[str, float]] = {}
    metas: dict[str, dict[str, Any]] = {}
    diversity: dict[tuple[int, str], dict[str, float]] = {}
    folder = run_dir / SCORES
    for meta_path in sorted(folder.glob("*.meta.json")):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        name = meta["name"]
        metas[name] = meta
        for row in read_lines(folder / f"{name}.jsonl"):
            for key, value in (row.get("values") or {}).items():
                if isinstance(value, int | float):
                    values.setdefault(row["id"], {})[column(name, key)] = float(value)
        for row in read_lines_any(folder / f"{name}.diversity.jsonl"):
            diversity.setdefault((int(row["prompt_index"]), str(row["method"])), {})[f"{name}.diversity"] = \
                float(row["value"])
    return values, metas, diversity


def read_lines_any(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def analyse(run_dir: Path, baseline: str = BASELINE, seed: int = 0) -> Report:
    """Aggregate a scored run (merge it first with ``w2sd_cli.bench.manifest.merge``)."""
    plan = read_plan(run_dir)
    lines = read_lines(run_dir / MERGED)
    values, metas, diversity = load_values(run_dir)
    methods = [m for m in plan["methods"] if any(ln["method"] == m for ln in lines)]
    directions: dict[str, int] = {}
    primary: dict[str, str] = {}
    bounds: dict[str, list[float]] = {}
    for name, meta in metas.items():
        for key in meta.get("keys", []):
            directions[column(name, key)] = direction(meta, key)
        primary[name] = column(name, meta.get("primary", "score"))
        for key, pair in (meta.get("bounds") or {}).items():
            bounds[column(name, key)] = [float(pair[0]), float(pair[1])]
        if meta.get("diversity"):
            directions[f"{name}.diversity"] = 0
    columns = sorted(directions)
    several_prompts = len({ln["prompt_index"] for ln in lines}) > 1
    report = Report(str(run_dir), plan["pair"], methods, columns, primary, "prompt" if several_prompts else "seed",
                    len(lines), len(plan["ids"]), _cost(lines, methods), len(failures(run_dir)), bounds=bounds)
    categories = sorted({str(ln["category"]) for ln in lines if ln.get("category")})
    for col in columns:
        for method in methods:
            mine = _units(lines, values, diversity, method, col, several_prompts)
            base = _units(lines, values, diversity, baseline, col, several_prompts)
            report.rows.append(_row(method, col, mine, base, directions[col], method != baseline, seed))
            for category in categories:
                chosen = [ln for ln in lines if ln.get("category") == category]
                mine = _units(chosen, values, diversity, method, col, True)
                base = _units(chosen, values, diversity, baseline, col, True)
                row = _row(method, col, mine, base, directions[col], method != baseline, seed)
                row.category = category
                report.categories.append(row)
    report.warnings = small_n_warnings(report) + coincidence_notes(lines, methods)
    return report


def coincidence_notes(lines: list[dict[str, Any]], methods: list[str]) -> list[str]:
    """A note for each method that equals another for this pair (rendered once, same pixels and NFE)."""
    notes = []
    for method in methods:
        mine = [ln for ln in lines if ln["method"] == method]
        same = {ln.get("same_as") for ln in mine}
        if mine and len(same) == 1 and (other := same.pop()) is not None:
            notes.append(f"{method} equals {other} for this pair (its reflection sides are its final ones), so it "
                         f"was rendered once and its rows repeat {other}'s; it is not an independent control here.")
    return notes


def small_n_warnings(report: Report) -> list[str]:
    """Plain warnings when comparisons rest on fewer than ``SMALL_N`` units."""
    found = []
    units = [r.vs_strong.units for r in report.rows if r.vs_strong is not None and r.vs_strong.units]
    if units and min(units) < SMALL_N:
        found.append(f"Only {min(units)} {report.unit}{'s' if min(units) != 1 else ''} back the comparisons with "
                     f"strong (fewer than {SMALL_N}): intervals are wide and win rates coarse; add prompts before "
                     "trusting a difference.")
    per_category = [r.vs_strong.units for r in report.categories if r.vs_strong is not None and r.vs_strong.units]
    if per_category and min(per_category) < SMALL_N:
        found.append(f"Per-category rows rest on as few as {min(per_category)} prompt"
                     f"{'s' if min(per_category) != 1 else ''}: read them as hints, not results.")
    return found


def _units(lines: Sequence[dict[str, Any]], values: dict[str, dict[str, float]],
           diversity: dict[tuple[int, str], dict[str, float]], method: str, col: str,
           by_prompt: bool) -> dict[Any, float]:
    """The method's value per unit: per prompt (mean over seeds) or per (prompt, seed)."""
    import math

    if col.endswith(".diversity"):
        chosen = {line["prompt_index"] for line in lines}
        return {index: v[col] for (index, m), v in diversity.items() if m == method and col in v and index in chosen}
    groups: dict[Any, list[float]] = {}
    for line in lines:
        if line["method"] != method:
            continue
        value = values.get(line["id"], {}).get(col)
        if value is None or math.isnan(value):
            continue
        unit = line["prompt_index"] if by_prompt else (line["prompt_index"], line["seed"])
        groups.setdefault(unit, []).append(value)
    return {unit: sum(v) / len(v) for unit, v in groups.items()}


def _row(method: str, col: str, mine: dict[Any, float], base: dict[Any, float], sign: int, compare: bool,
         seed: int) -> Row:
    mean = sum(mine.values()) / len(mine) if mine else None
    row = Row(method, col, mean, len(mine), sign)
    if compare:
        shared = sorted(set(mine) & set(base), key=str)
        row.vs_strong = paired([mine[u] for u in shared], [base[u] for u in shared], sign, seed)
        values = {mine[u] for u in shared} | {base[u] for u in shared}
        row.vs_strong.constant = values.pop() if len(values) == 1 else None
    return row


def paired(a: Sequence[float], b: Sequence[float], sign: int = 1, seed: int = 0,
           rounds: int = BOOTSTRAP) -> Comparison:
    """Mean of ``a - b`` with a percentile-bootstrap 95% interval, and the win rate of ``a``.

    A win is a unit where ``a`` is better in the metric's direction (higher when ``sign`` is 0); ties count half.
    """
    import numpy as np

    if not a:
        return Comparison(None, None, None, None, 0)
    diffs = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    oriented = diffs * (sign or 1)
    win = float(((oriented > 0).sum() + 0.5 * (oriented == 0).sum()) / len(diffs))
    if len(diffs) < 2:
        return Comparison(float(diffs.mean()), None, None, win, len(diffs))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diffs), size=(rounds, len(diffs)))
    means = diffs[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Comparison(float(diffs.mean()), float(low), float(high), win, len(diffs))


def _cost(lines: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """Mean NFE, batch-1 cost and seconds per item, per method (seconds leave out each process's first item,
    which includes loading the models, unless that is all there is)."""
    out: dict[str, dict[str, float | None]] = {}
    for method in methods:
        mine = [ln for ln in lines if ln["method"] == method]
        timed = [ln for ln in mine if not ln.get("warmup")] or mine
        out[method] = {key: (sum(float(ln.get(key) or 0) for ln in mine) / len(mine) if mine else None)
                       for key in ("nfe", "cost")}
        out[method]["seconds"] = sum(float(ln.get("seconds") or 0) for ln in timed) / len(timed) if timed else None
        out[method]["items"] = float(len(mine))
    return out


def verdict(report: Report, metric: str, method: str = "w2sd") -> dict[str, Any]:
    """Whether ``method`` beats the baseline on ``metric``: ``better``, ``worse`` or ``unclear`` (CI spans 0).

    Besides the difference it gives both means, ``constant`` (the value every unit has on both sides, if one),
    ``ceiling`` (both means sit at the metric's best declared value, so no difference can show) and a small-n
    ``warning``.
    """
    row = report.row(method, metric)
    if row is None or row.vs_strong is None or row.vs_strong.diff is None:
        return {"metric": metric, "method": method, "verdict": "unknown"}
    base = report.row(BASELINE, metric)
    comparison = row.vs_strong
    sign = row.direction or 1
    if comparison.low is None or comparison.high is None:
        outcome = "unclear"
    elif comparison.low * sign > 0 and comparison.high * sign > 0:
        outcome = "better"
    elif comparison.low * sign < 0 and comparison.high * sign < 0:
        outcome = "worse"
    else:
        outcome = "unclear"
    best = _best(report.bounds.get(metric), row.direction)
    means = (row.mean, base.mean if base else None)
    ceiling = best is not None and all(m is not None and abs(m - best) <= 1e-9 * max(1.0, abs(best)) for m in means)
    warning = (f"only {comparison.units} paired {report.unit}s (fewer than {SMALL_N}): the interval is wide"
               if comparison.units < SMALL_N else None)
    return {"metric": metric, "method": method, "verdict": outcome, "diff": comparison.diff, "low": comparison.low,
            "high": comparison.high, "win_rate": comparison.win_rate, "units": comparison.units,
            "direction": row.direction, "mean": means[0], "baseline": BASELINE, "baseline_mean": means[1],
            "constant": comparison.constant, "ceiling": ceiling, "best": best, "warning": warning}


def _best(bounds: list[float] | None, sign: int) -> float | None:
    """The best value a metric can take in its direction, when it declares its bounds."""
    if bounds is None or sign == 0:
        return None
    return bounds[1] if sign > 0 else bounds[0]
