"""`w2sd bench`, `w2sd eval`, `w2sd report` and `w2sd pairs check`: thin wrappers over ``w2sd_cli.bench``."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from w2sd_cli.cli.complete import metric_names
from w2sd_cli.cli.options import Device, JsonFlag, Lambda, Offline, PairName, Steps
from w2sd_cli.cli.progress import ObserverProgress

RunDir = Annotated[Path, typer.Argument(help="A run folder made by `w2sd bench`.")]
AllowPickle = Annotated[bool, typer.Option("--allow-pickle", help="Allow pickle checkpoints (weights_only).")]


def register(app: typer.Typer) -> None:
    # extra args: executor flags such as --ray-address HOST:6379 (any --EXECUTOR-KEY VALUE; checked by the runner)
    app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(bench)
    app.command("eval")(evaluate)
    app.command("report")(report)
    for group in app.registered_groups:
        if group.name == "pairs" and group.typer_instance is not None:
            group.typer_instance.command("check")(check)


def bench(
    ctx: typer.Context,
    pair: PairName,
    prompts: Annotated[str | None, typer.Option("--prompts", help="drawbench, pickapic, shapes or a .csv/.txt/.jsonl "
                                                "file (not for analytic pairs).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Keep the first N non-empty prompts.")] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="0,1,2 or 0-7, or `index` (seed = prompt index).")] = "0",
    methods: Annotated[str, typer.Option("--methods", help="Comma list of weak, strong, w2sd, extrapolate, "
                                         "first-order, equal-nfe.")] = "weak,strong,w2sd,extrapolate,first-order",
    steps: Steps = None,
    lam: Lambda = None,
    rounds: Annotated[int | None, typer.Option("--rounds", min=1, max=10, help="Reflections per step.")] = None,
    k: Annotated[float, typer.Option("--k", help="Weight k of the extrapolate and first-order controls "
                                     "(autoguidance w = 1 + k).")] = 1.0,
    samples: Annotated[int | None, typer.Option("--samples", min=1, help="Analytic pairs: samples per item.")] = None,
    cfg: Annotated[float | None, typer.Option("--cfg", help="Final denoise CFG scale (0 to 100).")] = None,
    width: Annotated[int | None, typer.Option("--width", min=8)] = None,
    height: Annotated[int | None, typer.Option("--height", min=8)] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="float32, float16 or bfloat16.")] = None,
    device: Device = "auto",
    reference_interval: Annotated[bool, typer.Option("--reference-interval",
                                                     help="The reference code's inversion interval.")] = False,
    shard: Annotated[str | None, typer.Option("--shard", help="Take share i of N (i/N); default: from torchrun, "
                                              "accelerate or SLURM variables, else everything.")] = None,
    executor: Annotated[str, typer.Option("--executor", help="local, or one a plugin registers.")] = "local",
    executor_option: Annotated[list[str] | None, typer.Option("--executor-option", "-X", help="KEY=VALUE for the "
                                                              "executor (repeat), e.g. -X address=HOST:6379 "
                                                              "with --executor ray.")] = None,
    keep_going: Annotated[bool, typer.Option("--keep-going", help="Log an item that fails (a NaN image, say) "
                                             "and go on; the next run retries it.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Seeds per network call (outputs "
                                            "are the same at any batch size).")] = 1,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default: w2sd-bench/PAIR).")] = None,
    offline: Offline = False,
    allow_pickle: AllowPickle = False,
    json_output: JsonFlag = False,
) -> None:
    """Render a grid (prompts × seeds × methods) into a run folder; rerun to resume, shard to scale out."""
    from w2sd_cli.bench.runner import BenchRequest, executor_flags, parse_options
    from w2sd_cli.bench.runner import bench as run_bench
    from w2sd_cli.cli.output import err_console, print_json

    request = BenchRequest(
        pair=pair, out=out or Path("w2sd-bench") / pair, prompts=prompts, limit=limit, seeds=seeds,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()), steps=steps, lam=lam, rounds=rounds,
        k=k, samples=samples, cfg=cfg, width=width, height=height, dtype=dtype, device=device,
        reference_interval=reference_interval, offline=offline, allow_pickle=allow_pickle, shard=shard,
        executor=executor, keep_going=keep_going, batch_size=batch_size,
        executor_options={**parse_options(executor_option or []), **executor_flags(ctx.args, executor)})
    with ItemProgress(quiet=json_output) as progress, stdout_for_json(json_output):
        outcome = run_bench(request, progress.observe)
    merged = outcome.merged
    facts = {"run_dir": str(outcome.run_dir), "rank": outcome.shard.rank, "world": outcome.shard.world,
             "shard_from": outcome.shard.source, "rendered": outcome.rendered, "skipped": outcome.skipped,
             "failed": outcome.failed,
             "done": merged.done, "total": merged.total, "complete": merged.complete, "seconds": outcome.seconds,
             "manifest": str(merged.path)}
    if outcome.extra:
        facts["executor"] = {"name": outcome.executor, **outcome.extra}
    if json_output:
        print_json(facts)
        return
    where = f" (rank {outcome.shard.rank} of {outcome.shard.world}, {outcome.shard.source})" \
        if outcome.shard.world > 1 else ""
    err_console.print(f"rendered {outcome.rendered}, skipped {outcome.skipped} already done{where}; "
                      f"manifest {merged.done}/{merged.total} items: {merged.path}")
    for line in outcome.extra.get("summary", []):
        err_console.print(f"{outcome.executor}: {line}", markup=False)
    if outcome.failed:
        err_console.print(f"{outcome.failed} items failed (see {outcome.run_dir}/failures.rank-*.jsonl); "
                          "run the same command again to retry them.")
    if not merged.complete and outcome.shard.world > 1:
        err_console.print("other ranks are still running or missing; the last rank to finish merges everything.")
    elif merged.complete:
        err_console.print(f"next: w2sd eval {outcome.run_dir} --metric ...; w2sd report {outcome.run_dir}")


@contextlib.contextmanager
def stdout_for_json(active: bool) -> Iterator[None]:
    """With ``--json``, whatever a library or a Ray worker prints on stdout while the run goes on (a dead actor's
    notice, say) is sent to stderr, so stdout holds only the JSON document printed afterwards."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def evaluate(
    run_dir: Annotated[Path | None, typer.Argument(help="A run folder made by `w2sd bench`.")] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", "-m", help="Metric name (repeat for several); "
                                                      "default: the model-free statistics.",
                                                      autocompletion=metric_names)] = None,
    device: Device = "auto",
    dtype: Annotated[str | None, typer.Option("--dtype", help="float32, float16 or bfloat16.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per scoring call.")] = 8,
    force: Annotated[bool, typer.Option("--force", help="Score every item again.")] = False,
    list_metrics: Annotated[bool, typer.Option("--list", help="List the installed metrics and exit.")] = False,
    offline: Offline = False,
    allow_pickle: AllowPickle = False,
    json_output: JsonFlag = False,
) -> None:
    """Score a run's images (or sample sets) with metrics; rerun to score only what is new."""
    from w2sd_cli.bench.evaluate import evaluate as run_eval
    from w2sd_cli.bench.metrics.base import MetricLoad, metric_registry
    from w2sd_cli.bench.metrics.reward import describe
    from w2sd_cli.cli.output import err_console, print_json, table

    if list_metrics:
        rows = [describe(m) for m in metric_registry().values()]
        if json_output:
            print_json({"metrics": rows})
        else:
            err_console.print(table("metrics", ["name", "inputs", "diversity", "summary"],
                                    [[r["name"], r["inputs"], r["diversity"], r["summary"]] for r in rows]))
        return
    if run_dir is None:
        from w2sd_cli.errors import InputError

        raise InputError("Give the run folder: w2sd eval RUN_DIR --metric NAME (w2sd eval --list shows metrics).")
    load = MetricLoad(device=device, dtype=dtype, offline=offline, allow_pickle=allow_pickle)
    with ItemProgress(quiet=json_output) as progress:
        outcome = run_eval(run_dir, metric, load=load, batch_size=batch_size, force=force, observer=progress.observe)
    facts = {"run_dir": str(run_dir), "scored": outcome.scored, "reused": outcome.reused,
             "diversity_groups": outcome.diversity_groups, "unfinished_items": outcome.incomplete,
             "failed": {name: len(rows) for name, rows in outcome.failures.items()}, "failures": outcome.failures}
    if json_output:
        print_json(facts)
    else:
        _print_eval(outcome)
    if outcome.failures:
        from w2sd_cli.bench.evaluate import failure_summary
        from w2sd_cli.errors import MetricFailed

        raise MetricFailed(failure_summary(outcome))


def _print_eval(outcome: Any) -> None:
    """What `w2sd eval` did, per metric, then each failed item (the first few per metric)."""
    from w2sd_cli.bench.evaluate import failure_text
    from w2sd_cli.cli.output import err_console

    for name, count in outcome.scored.items():
        failed = len(outcome.failures.get(name, []))
        err_console.print(f"{name}: scored {count}, kept {outcome.reused[name]} earlier scores"
                          + (f", failed on {failed}" if failed else "")
                          + (f", diversity for {outcome.diversity_groups[name]} prompt/method groups"
                             if name in outcome.diversity_groups else ""))
    for name, rows in outcome.failures.items():
        for row in rows[:5]:
            err_console.print(failure_text(name, row))
        if len(rows) > 5:
            err_console.print(f"... and {len(rows) - 5} more failures of {name}.")
    if outcome.incomplete:
        err_console.print(f"{outcome.incomplete} items of the grid are not rendered yet (resume `w2sd bench`).")


def report(
    run_dir: RunDir,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report folder (default: RUN_DIR/report).")]
    = None,
    all_columns: Annotated[bool, typer.Option("--all", help="Show every metric key, not only the primary ones.")]
    = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write matplotlib plots.")] = True,
    html: Annotated[bool, typer.Option("--html/--no-html", help="Write the self-contained index.html.")] = True,
    json_output: JsonFlag = False,
) -> None:
    """Per method and metric: mean, paired Δ vs strong with a bootstrap 95% CI, win rate, NFE, s/item."""
    from w2sd_cli.bench.headline import headline, verdict_facts
    from w2sd_cli.bench.report import build, shown_columns, summary_rows
    from w2sd_cli.cli.output import err_console, print_json, table

    result, files = build(run_dir, out, plots=plots, page=html)
    if json_output:
        paths = {"json": str(files.json), "plots": [str(p) for p in files.plots],
                 "html": str(files.html) if files.html else None}
        print_json({**result.as_dict(), "headline": headline(result), "files": paths})
        return
    if not result.metrics:
        from w2sd_cli.bench.evaluate import no_scores_note

        err_console.print(no_scores_note(run_dir))
    columns = None if all_columns else shown_columns(result)
    header, rows = summary_rows(result, columns)
    err_console.print(table(f"{result.pair}: {result.done}/{result.total} items, paired by {result.unit}",
                            header, rows))
    if result.categories:
        cat_header, cat_rows = summary_rows(result, columns, [r for r in result.categories if r.method == "w2sd"])
        err_console.print(table("w2sd per category", cat_header, cat_rows))
    err_console.print(f"W/T/L: the {result.unit}s where the method beats, ties, loses to strong; in win rate ties "
                      "count half; metrics with no better direction get neither.", markup=False)
    for fact in verdict_facts(result):
        err_console.print(fact, markup=False)
    for warning in result.warnings:
        err_console.print(f"warning: {warning}", markup=False)
    for path in [files.json, *files.plots, *([files.html] if files.html else [])]:
        err_console.print(f"wrote {path}")


def check(
    pair: PairName,
    prompts: Annotated[str | None, typer.Option("--prompts", help="Prompt set or file (default by kind).")] = None,
    count: Annotated[int, typer.Option("--count", min=1, help="Prompts (analytic pairs: seed groups).")] = 8,
    seed_count: Annotated[int, typer.Option("--seed-count", min=1, help="Seeds per prompt (0, 1, ...).")] = 2,
    metric: Annotated[str | None, typer.Option("--metric", "-m", help="Metric (default by kind).",
                                                    autocompletion=metric_names)] = None,
    key: Annotated[str | None, typer.Option("--key", help="Metric key (default: its primary one).")] = None,
    steps: Steps = None,
    samples: Annotated[int | None, typer.Option("--samples", min=1, help="Analytic pairs: samples per item.")] = None,
    device: Device = "auto",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default under W2SD_HOME/checks).")]
    = None,
    offline: Offline = False,
    allow_pickle: AllowPickle = False,
    json_output: JsonFlag = False,
) -> None:
    """A short bench (8 prompts × 2 seeds): does this pair's W2SD beat its strong side, and by how much?"""
    from w2sd_cli.bench.check import CheckRequest, check_pair
    from w2sd_cli.cli.output import err_console, print_json

    request = CheckRequest(pair=pair, prompts=prompts, count=count, seeds=seed_count, metric=metric, key=key,
                           steps=steps, samples=samples, device=device, out=out, offline=offline,
                           allow_pickle=allow_pickle)
    with ItemProgress(quiet=json_output) as progress:
        result = check_pair(request, progress.observe)
    if json_output:
        print_json(result)
        return
    err_console.print(check_sentence(result))


def check_sentence(result: dict[str, Any]) -> str:
    """One line: better / worse / unclear, the paired difference, its interval and wins / ties / losses."""
    from w2sd_cli.bench.headline import record

    if result.get("diff") is None:
        return f"{result['pair']}: no comparison possible on {result['metric']} (no scored items)."
    better = {1: "higher is better", -1: "lower is better", 0: "no better direction"}[result.get("direction", 1)]
    interval = (f"95% CI [{result['low']:+.4g}, {result['high']:+.4g}]" if result.get("low") is not None
                else "no interval (one unit)")
    words = {"better": "W2SD BEATS strong", "worse": "W2SD is WORSE than strong",
             "unclear": "no clear difference between W2SD and strong"}
    verdict = words.get(result["verdict"], result["verdict"])
    unit = result["unit"]
    pinned = result.get("best") if result.get("ceiling") else result.get("constant")
    if pinned is not None:
        where = "the metric's best value" if result.get("ceiling") else "the same value on both sides"
        verdict = (f"W2SD and strong both score {pinned:.4g} on every {unit} ({where}), so this prompt set cannot "
                   "show a difference; try harder prompts")
    means = ""
    if result.get("mean") is not None and result.get("baseline_mean") is not None:
        means = f"mean {result['mean']:.4g} (W2SD) vs {result['baseline_mean']:.4g} (strong), "
    warning = f" Warning: {result['warning']}." if result.get("warning") else ""
    counts = record(result, unit) if result.get("wins") is not None else f"{result['units']} {unit}s"
    return (f"{result['pair']}: {verdict} on {result['metric']} ({better}): {means}Δ = {result['diff']:+.4g}, "
            f"{interval}, {counts}; "
            f"NFE {result['cost']['w2sd']['nfe']:.0f} vs {result['cost']['strong']['nfe']:.0f}.{warning} "
            f"Run folder: {result['run_dir']}")


class ItemProgress(ObserverProgress):
    """A rich bar over items (bench) or scored outputs (eval), with the current item's label."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.progress import MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        super().__init__(MofNCompleteColumn(), TextColumn("{task.fields[label]}", markup=False), TimeElapsedColumn(),
                         TimeRemainingColumn(), quiet=quiet)

    def observe(self, info: dict[str, Any]) -> None:
        phase = info.get("phase")
        if phase == "plan" and isinstance(info.get("plan"), dict):  # before anything renders, even with --json
            self.progress.console.print(str(info["plan"]["text"]), markup=False, soft_wrap=True)
        if phase in ("item", "score"):
            name = "render" if phase == "item" else f"score {info.get('metric')}"
            if name not in self.tasks:
                self.tasks[name] = self.progress.add_task(name, total=info.get("total"), label="")
            self.progress.update(self.tasks[name], completed=info.get("done", 0), total=info.get("total"),
                                 label=str(info.get("label", "")))
