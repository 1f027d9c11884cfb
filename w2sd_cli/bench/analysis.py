"""Numbers of a report: per method and metric the mean, the paired difference to ``strong`` with a
bootstrap 95% interval, the win rate, NFE and seconds per item; per prompt category too.

Items made from the same prompt and seed share their initial noise across methods, so comparisons are
paired, and only on the (prompt, seed) items both sides have a value for: a run stopped mid-group or a NaN
score drops that item from both sides. The unit is the prompt (its common seeds averaged) when a run has
several prompts, else the seed. The interval resamples units with replacement (percentile bootstrap, fixed
seed: reports are reproducible). Win rates and wins/ties/losses exist only for metrics with a direction.
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
    wins: int | None = None
    ties: int | None = None
    losses: int | None = None
    """Units where the method is better, equal, worse (None, like ``win_rate``, when no direction is better)."""
    unpaired: int = 0
    """Scored items left out because the other side has no value for the same (prompt, seed)."""


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
    low: float | None = None
    high: float | None = None
    """Percentile-bootstrap 95% interval of ``mean`` over units (None with fewer than two)."""


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
    scorable: dict[str, list[int]] = field(default_factory=dict)
    """Per metric with a ``scorable`` key: [items it could score, items it was given]."""

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
    primary = {name: primary[name] for name in ranked(list(primary), plan)}
    columns = sorted(directions)
    several_prompts = len({ln["prompt_index"] for ln in lines}) > 1
    report = Report(str(run_dir), plan["pair"], methods, columns, primary, "prompt" if several_prompts else "seed",
                    len(lines), len(plan["ids"]), _cost(lines, methods), len(failures(run_dir)), bounds=bounds)
    categories = sorted({str(ln["category"]) for ln in lines if ln.get("category")})
    for col in columns:
        for method in methods:
            report.rows.append(_row(method, col, _Side(lines, values, diversity, several_prompts), baseline,
                                    directions[col], seed))
            for category in categories:
                chosen = [ln for ln in lines if ln.get("category") == category]
                row = _row(method, col, _Side(chosen, values, diversity, True), baseline, directions[col], seed)
                row.category = category
                report.categories.append(row)
    report.scorable = _scorable(lines, values, list(metas))
    report.warnings = small_n_warnings(report) + coincidence_notes(lines, methods)
    return report


def ranked(names: Sequence[str], plan: dict[str, Any]) -> list[str]:
    """Metric names in the order verdicts are read: the card's own metrics (its ground-truth checker)
    first, then the others, then side-effect statistics (a metric with ``side_effect = True``)."""
    own = list((plan.get("card") or {}).get("metrics") or [])

    def rank(name: str) -> tuple[int, int]:
        if name in own:
            return 0, own.index(name)
        return (2 if _side_effect(name) else 1), 0

    return sorted(names, key=rank)


def _side_effect(name: str) -> bool:
    from w2sd_cli.bench.metrics.base import metric_registry
    from w2sd_cli.errors import W2SDError

    try:
        metric = metric_registry().get(name)
    except (W2SDError, LookupError, ImportError):
        return False
    return bool(getattr(metric, "side_effect", False))


def _scorable(lines: Sequence[dict[str, Any]], values: dict[str, dict[str, float]],
              names: list[str]) -> dict[str, list[int]]:
    """Per metric that reports ``scorable``: how many of the items it scored it could score."""
    found: dict[str, list[int]] = {}
    for name in names:
        flags = [values[ln["id"]][f"{name}.scorable"] for ln in lines
                 if f"{name}.scorable" in values.get(ln["id"], {})]
        if flags:
            found[name] = [sum(1 for f in flags if f == 1.0), len(flags)]
    return found


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


@dataclass
class _Side:
    """The lines and values one row is computed from, unit by unit."""

    lines: Sequence[dict[str, Any]]
    values: dict[str, dict[str, float]]
    diversity: dict[tuple[int, str], dict[str, float]]
    by_prompt: bool

    def items(self, method: str, col: str) -> dict[tuple[int, int], float]:
        """The method's finite value per (prompt, seed); diversity is per prompt (seed -1)."""
        import math

        if col.endswith(".diversity"):
            chosen = {line["prompt_index"] for line in self.lines}
            return {(index, -1): v[col] for (index, m), v in self.diversity.items()
                    if m == method and col in v and index in chosen}
        found = {}
        for line in self.lines:
            value = self.values.get(line["id"], {}).get(col) if line["method"] == method else None
            if value is not None and not math.isnan(value):
                found[(int(line["prompt_index"]), int(line["seed"]))] = value
        return found

    def units(self, items: dict[tuple[int, int], float]) -> dict[Any, float]:
        """Per prompt (mean over the given seeds) or per (prompt, seed)."""
        if not self.by_prompt:
            return dict(items)
        groups: dict[int, list[float]] = {}
        for (index, _seed), value in items.items():
            groups.setdefault(index, []).append(value)
        return {index: sum(v) / len(v) for index, v in groups.items()}


def _row(method: str, col: str, side: _Side, baseline: str, sign: int, seed: int) -> Row:
    items = side.items(method, col)
    mine = side.units(items)
    mean = sum(mine.values()) / len(mine) if mine else None
    row = Row(method, col, mean, len(mine), sign)
    row.low, row.high = mean_interval(list(mine.values()), seed)
    if method != baseline:
        base_items = side.items(baseline, col)
        common = set(items) & set(base_items)
        mine_units = side.units({k: items[k] for k in common})
        base_units = side.units({k: base_items[k] for k in common})
        shared = sorted(mine_units, key=str)
        row.vs_strong = paired([mine_units[u] for u in shared], [base_units[u] for u in shared], sign, seed)
        values = {mine_units[u] for u in shared} | {base_units[u] for u in shared}
        row.vs_strong.constant = values.pop() if len(values) == 1 else None
        row.vs_strong.unpaired = len(items) + len(base_items) - 2 * len(common)
    return row


def mean_interval(values: Sequence[float], seed: int = 0, rounds: int = BOOTSTRAP) -> tuple[float | None,
                                                                                          float | None]:
    """Percentile-bootstrap 95% interval of the mean of ``values`` (None, None with fewer than two)."""
    import numpy as np

    if len(values) < 2:
        return None, None
    data = np.asarray(values, dtype=np.float64)
    means = data[np.random.default_rng(seed).integers(0, len(data), size=(rounds, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def paired(a: Sequence[float], b: Sequence[float], sign: int = 1, seed: int = 0,
           rounds: int = BOOTSTRAP) -> Comparison:
    """Mean of ``a - b`` with a percentile-bootstrap 95% interval, and the wins, ties and losses of ``a``.

    A win is a unit where ``a`` is better in the metric's direction; ``win_rate`` counts ties half. A metric
    with no better direction (``sign`` 0) gets neither.
    """
    import numpy as np

    if not a:
        return Comparison(None, None, None, None, 0)
    diffs = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    counts: dict[str, Any] = {"wins": None, "ties": None, "losses": None}
    win = None
    if sign:
        oriented = diffs * sign
        counts = {"wins": int((oriented > 0).sum()), "ties": int((oriented == 0).sum()),
                  "losses": int((oriented < 0).sum())}
        win = (counts["wins"] + 0.5 * counts["ties"]) / len(diffs)
    if len(diffs) < 2:
        return Comparison(float(diffs.mean()), None, None, win, len(diffs), **counts)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diffs), size=(rounds, len(diffs)))
    means = diffs[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Comparison(float(diffs.mean()), float(low), float(high), win, len(diffs), **counts)


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
    """Whether ``method`` beats the baseline on ``metric``: ``better``, ``worse`` or ``unclear`` (CI spans 0,
    or the metric has no better direction).

    Besides the difference it gives both means, ``constant`` (the value every unit has on both sides, if one),
    ``ceiling`` (both means sit at the metric's best declared value, so no difference can show) and a small-n
    ``warning``.
    """
    row = report.row(method, metric)
    if row is None or row.vs_strong is None or row.vs_strong.diff is None:
        return {"metric": metric, "method": method, "verdict": "unknown"}
    base = report.row(BASELINE, metric)
    comparison = row.vs_strong
    sign = row.direction
    if comparison.low is None or comparison.high is None or sign == 0:
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
            "high": comparison.high, "win_rate": comparison.win_rate, "wins": comparison.wins,
            "ties": comparison.ties, "losses": comparison.losses, "unpaired": comparison.unpaired,
            "units": comparison.units,
            "direction": row.direction, "mean": means[0], "baseline": BASELINE, "baseline_mean": means[1],
            "constant": comparison.constant, "ceiling": ceiling, "best": best, "warning": warning}


def _best(bounds: list[float] | None, sign: int) -> float | None:
    """The best value a metric can take in its direction, when it declares its bounds."""
    if bounds is None or sign == 0:
        return None
    return bounds[1] if sign > 0 else bounds[0]
