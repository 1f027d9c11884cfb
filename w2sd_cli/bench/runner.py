"""`w2sd bench` as a library call: plan a grid in a run folder, render this rank's share, merge the parts.

The run folder binds to one plan (``run.json``: pair, card digest, settings, prompts, seeds, methods);
rerunning with the same options resumes it, skipping every finished item whichever rank made it.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from w2sd_cli.bench.grid import Grid, Prompt, WorkItem, as_seeds, digest, prompt_dicts, seed_ranges
from w2sd_cli.bench.manifest import MergeResult, PartWriter, finished, merge, merge_lock, part_path
from w2sd_cli.bench.render import SUFFIX, save_output
from w2sd_cli.bench.shard import Shard, detect_shard
from w2sd_cli.cards import PairCard
from w2sd_cli.errors import InputError, Interrupted, W2SDError
from w2sd_cli.files import write_text_atomic
from w2sd_cli.kinds.base import GenRequest, PairKind
from w2sd_cli.methods import METHODS
from w2sd_cli.pairs import PairRegistry, get_registry

Observer = Callable[[dict[str, Any]], None]
PLAN = "run.json"
FORMAT = 2
"""Run plans of format 2 store seeds as ranges (``0-7,9``) and the item count, not every id; format 1 listed
both and is read (and resumed) the same way."""
DEFAULT_METHODS = ("weak", "strong", "w2sd", "extrapolate", "first-order")
BOUND = ("pair", "card_digest", "settings_digest", "prompts", "seeds", "methods")


@dataclass
class BenchRequest:
    """What `w2sd bench` was asked: the pair, the grid, the sampler settings, where and how to run."""

    pair: str
    out: Path
    prompts: str | None = None
    limit: int | None = None
    seeds: str = "0"
    methods: tuple[str, ...] = DEFAULT_METHODS
    steps: int | None = None
    lam: int | None = None
    rounds: int | None = None
    k: float = 1.0
    samples: int | None = None
    cfg: float | None = None
    width: int | None = None
    height: int | None = None
    dtype: str | None = None
    device: str = "auto"
    reference_interval: bool = False
    offline: bool = False
    allow_pickle: bool = False
    shard: str | None = None
    executor: str = "local"
    keep_going: bool = False


@dataclass
class BenchJob:
    """Everything an executor needs: the run folder, its plan, the loaded card and kind, the request."""

    run_dir: Path
    plan: dict[str, Any]
    items: Grid
    """The grid, made on demand (iterate it, or ``items.share(rank, world)``; never list a large one)."""
    card: PairCard
    kind: PairKind
    request: GenRequest
    shard: Shard
    renderer: Any = None
    """The kind's renderer (cheap to build; it loads models on its first render)."""
    keep_going: bool = False


@dataclass
class BenchOutcome:
    """What a bench call did on this rank, and the state of the merged manifest."""

    run_dir: Path
    shard: Shard
    executor: str
    rendered: int
    skipped: int
    merged: MergeResult
    seconds: float = 0.0
    failed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Executor(Protocol):
    """How a job's items are spread over processes or machines (hook ``register_executors``).

    ``execute`` must leave every finished item's output and manifest line in ``job.run_dir`` (by calling
    ``run_share`` for each shard, wherever it runs) and return the merged state (``merge``).
    """

    name: str
    summary: str

    def execute(self, job: BenchJob, observer: Observer | None = None) -> BenchOutcome: ...


class LocalExecutor:
    """This process renders its own shard (one of N under torchrun, accelerate, SLURM or ``--shard``)."""

    name = "local"
    summary = "render this process's shard here; ranks share nothing but the run folder"

    def execute(self, job: BenchJob, observer: Observer | None = None) -> BenchOutcome:
        started = time.perf_counter()
        share = run_share(job, job.shard, observer)
        merged = merge(job.run_dir, job.items.ids)
        return BenchOutcome(job.run_dir, job.shard, self.name, share.rendered, share.skipped, merged,
                            round(time.perf_counter() - started, 3), share.failed)


def executors() -> dict[str, Any]:
    """The built-in local executor plus every plugin's (``register_executors``)."""
    from w2sd_cli.plugins import get_host

    found: dict[str, Any] = {"local": LocalExecutor()}
    for _plugin, executor in get_host().collect("register_executors"):
        name = getattr(executor, "name", None)
        if isinstance(name, str) and name not in found and callable(getattr(executor, "execute", None)):
            found[name] = executor
    return found


def bench(request: BenchRequest, observer: Observer | None = None,
          registry: PairRegistry | None = None) -> BenchOutcome:
    """Plan (or resume) a run in ``request.out`` and execute this process's share of it."""
    runners = executors()
    if request.executor not in runners:
        from w2sd_cli.errors import suggest

        raise InputError(f"No executor {request.executor!r}.{suggest(request.executor, runners)} "
                         f"Installed: {', '.join(sorted(runners))}.")
    job = plan_job(request, registry)
    try:
        return runners[request.executor].execute(job, observer)
    except KeyboardInterrupt:
        raise Interrupted("Interrupted: finished items are kept in the manifest; run the same command to resume.")\
            from None


def plan_job(request: BenchRequest, registry: PairRegistry | None = None) -> BenchJob:
    """Resolve the pair, the prompts and the settings; write (or check) the run folder's ``run.json``."""
    registry = registry or get_registry()
    entry = registry.get(request.pair)
    card, kind = entry.card, registry.kind(entry.card)
    kind.check(card)
    unknown = [m for m in request.methods if m not in METHODS]
    if unknown or not request.methods:
        raise InputError(f"--methods: unknown {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(METHODS)}.")
    shard = detect_shard(explicit=request.shard)
    gen = GenRequest(steps=request.steps, lam=request.lam, rounds=request.rounds, samples=request.samples,
                     cfg=request.cfg, width=request.width, height=request.height, dtype=request.dtype,
                     device=_device(request.device, shard), reference_interval=request.reference_interval,
                     offline=request.offline, allow_pickle=request.allow_pickle, out=request.out,
                     extra={"k": request.k}).resolved(card)
    renderer_probe = kind.renderer(card, gen)
    prompts, prompt_set = _prompts(request, bool(getattr(renderer_probe, "uses_prompts", True)))
    settings = {"steps": gen.steps, "lam": gen.lam, "rounds": gen.rounds, "k": request.k, "samples": gen.samples,
                "cfg": gen.cfg, "width": gen.width, "height": gen.height, "dtype": gen.dtype,
                "reference_interval": gen.reference_interval}
    seeds = seed_ranges(request.seeds)
    items = Grid(prompts, seeds, list(request.methods), card.digest(), digest(settings))
    items.check_unique()
    plan = {"format": FORMAT, "pair": card.name, "kind": card.kind, "card_digest": card.digest(),
            "card": card.model_dump(mode="json", by_alias=True), "settings": settings,
            "settings_digest": digest(settings), "prompt_set": prompt_set, "prompts": prompt_dicts(prompts),
            "seeds": seeds if isinstance(seeds, str) else seeds.spec(), "methods": list(request.methods),
            "output": getattr(renderer_probe, "output", "image"), "items": len(items)}
    _bind(request.out, plan)
    plan["ids"] = items.ids
    return BenchJob(request.out, plan, items, card, kind, gen, shard, renderer_probe, request.keep_going)


def _device(device: str, shard: Shard) -> str:
    """Under several ranks, ``auto`` means this rank's own GPU (``cuda:LOCAL_RANK``) when there is one."""
    if device != "auto" or shard.world == 1:
        return device
    import torch

    return f"cuda:{shard.local_rank}" if torch.cuda.is_available() else "cpu"


def _prompts(request: BenchRequest, uses_prompts: bool) -> tuple[list[Prompt], dict[str, Any]]:
    if not uses_prompts:
        if request.prompts is not None:
            raise InputError(f"Pair {request.pair} ignores prompts: drop --prompts and add samples with --seeds.")
        return [Prompt(0, "")], {"name": "none", "origin": None, "sha256": None, "count": 1}
    if request.prompts is None:
        raise InputError("Give the prompts: --prompts drawbench, --prompts pickapic, or a .csv/.txt/.jsonl file.")
    from w2sd_cli.bench.prompts import load_prompt_set

    found = load_prompt_set(request.prompts, limit=request.limit, offline=request.offline)
    if not found.prompts:
        raise InputError(f"{request.prompts}: no non-empty prompts in it.")
    return found.prompts, found.describe()


def _bind(run_dir: Path, plan: dict[str, Any]) -> None:
    """Write ``run.json``, or check that the folder's existing plan is this one."""
    with merge_lock(run_dir):
        path = run_dir / PLAN
        if path.exists():
            old = read_plan(run_dir)
            differs = [k for k in BOUND if old.get(k) != plan.get(k)]
            if differs:
                raise InputError(f"{run_dir} holds a run of another plan (it differs in {', '.join(differs)}). "
                                 "Repeat the original options to resume it, or give a new --out folder.")
            return
        write_text_atomic(path, json.dumps(plan, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def read_plan(run_dir: Path) -> dict[str, Any]:
    """A run folder's ``run.json``."""
    path = run_dir / PLAN
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{run_dir} is not a bench run (no {PLAN}); make one with `w2sd bench`.") from None
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is damaged ({err}); make a new run with `w2sd bench`.") from None
    if not isinstance(value, dict) or value.get("format") not in (1, FORMAT):
        raise InputError(f"{path} is not a w2sd run plan this version understands.")
    seeds = as_seeds(value["seeds"])
    value["seeds"] = seeds if isinstance(seeds, str) else seeds.spec()
    value["ids"] = items_of(value).ids
    return value


def items_of(plan: dict[str, Any]) -> Grid:
    """The grid of a stored plan, in canonical order, made on demand."""
    prompts = [Prompt(p["index"], p["text"], p.get("category")) for p in plan["prompts"]]
    return Grid(prompts, plan["seeds"], plan["methods"], plan["card_digest"], plan["settings_digest"])


@dataclass(frozen=True)
class ShareResult:
    """What one shard did: items rendered now, skipped as already finished, and failed (``keep_going``)."""

    rendered: int
    skipped: int
    failed: int = 0


def run_share(job: BenchJob, shard: Shard, observer: Observer | None = None) -> ShareResult:
    """Render this shard's unfinished items.

    Each output is written atomically, then its manifest line is appended to ``manifest.rank-R.jsonl``
    and fsynced: a kill loses at most the item in flight. With ``job.keep_going`` an item that fails with a
    ``W2SDError`` (a NaN sample, say) is logged to ``failures.rank-R.jsonl`` and retried by the next run.
    """
    grid = job.items
    _remove_stale_temps(job.run_dir / "items", grid, shard)
    done = finished(job.run_dir)
    skipped = sum(1 for line in done.values()
                  if (at := grid.locate(line)) is not None and grid.owner(at, shard.world) == shard.rank)
    count = grid.share_size(shard.rank, shard.world) - skipped
    _notify(observer, {"phase": "plan", "total": count, "skipped": skipped, "rank": shard.rank,
                       "world": shard.world})
    if not count:
        return ShareResult(0, skipped)
    todo = (item for item in grid.share(shard.rank, shard.world) if item.id not in done)
    renderer = job.renderer or job.kind.renderer(job.card, job.request)
    from w2sd_cli.images import versions

    context = {"versions": versions(), "rank": shard.rank, "world": shard.world, "host": socket.gethostname()}
    failed = 0
    with PartWriter(part_path(job.run_dir, shard.rank)) as writer:
        for n, item in enumerate(todo):
            _notify(observer, {"phase": "item", "done": n, "total": count, "label": _label(item)})
            try:
                line = _render_item(job, renderer, item, observer)
            except W2SDError as err:
                if not job.keep_going:
                    raise
                failed += 1
                with PartWriter(job.run_dir / f"failures.rank-{shard.rank}.jsonl") as failures:
                    failures.append({**item.as_dict(), "error": str(err), **context, "at": _now()})
                continue
            writer.append({**line, **context, "warmup": n == 0, "finished_at": _now()})
            _notify(observer, {"phase": "item", "done": n + 1, "total": count, "label": _label(item)})
    return ShareResult(count - failed, skipped, failed)


def _render_item(job: BenchJob, renderer: Any, item: WorkItem, observer: Observer | None) -> dict[str, Any]:
    """Render and save one item; return its manifest line (without the per-process fields)."""
    started = time.perf_counter()
    rendered = renderer.render(item.prompt.text, item.seed, item.method, _tagged(observer, item))
    seconds = round(time.perf_counter() - started, 3)
    rel = f"items/{item.stem()}{SUFFIX[renderer.output]}"
    recipe = {**item.as_dict(), "pair": job.card.name, "kind": job.card.kind, "card_digest": job.plan["card_digest"],
              "settings": job.plan["settings"], "nfe": rendered.nfe, "cost": rendered.cost}
    sha = save_output(rendered, renderer.output, job.run_dir / rel, recipe)
    return {**recipe, "settings_digest": job.plan["settings_digest"], "file": rel, "sha256": sha,
            "output": renderer.output, **rendered.info, "provenance": renderer.provenance(), "seconds": seconds}


def failures(run_dir: Path) -> list[dict[str, Any]]:
    """Logged failures of items that are still unfinished."""
    from w2sd_cli.bench.manifest import read_lines

    done = finished(run_dir)
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(run_dir.glob("failures.rank-*.jsonl")):
        for line in read_lines(path):
            if line["id"] not in done:
                found[line["id"]] = line
    return list(found.values())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _remove_stale_temps(folder: Path, grid: Grid, shard: Shard) -> None:
    """Temporary files a killed run left for this shard's items (no other rank writes those names)."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        name = path.name
        if not (name.startswith(".") and name.endswith((".tmp", ".part"))):
            continue
        stem = re.fullmatch(r"p(\d+)-s(\d+)-(.+)-([0-9a-f]{8})", name[1:].split(".")[0])
        at = grid.position(int(stem.group(1)), int(stem.group(2)), stem.group(3)) if stem else None
        if stem and at is not None and grid.owner(at, shard.world) == shard.rank and \
                grid[at].id.startswith(stem.group(4)):
            path.unlink(missing_ok=True)


def _label(item: WorkItem) -> str:
    return f"p{item.prompt.index} s{item.seed} {item.method}"


def _notify(observer: Observer | None, event: dict[str, Any]) -> None:
    if observer is not None:
        observer(event)


def _tagged(observer: Observer | None, item: WorkItem) -> Observer | None:
    if observer is None:
        return None
    return lambda info: observer({**info, "phase_of": "sample", "label": _label(item)})
