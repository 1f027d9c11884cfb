"""`w2sd bench` as a library call: plan a grid in a run folder, render this rank's share, merge the parts.

The run folder binds to one plan (``run.json``: pair, card digest, settings, prompts, seeds, methods);
rerunning with the same options resumes it, skipping every finished item whichever rank made it.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from w2sd_cli.bench.grid import Grid, Prompt, WorkItem, as_seeds, digest, plan_summary, prompt_dicts, seed_ranges
from w2sd_cli.bench.manifest import MergeResult, PartWriter, finished, merge, merge_lock, part_path
from w2sd_cli.bench.shard import Shard, detect_shard
from w2sd_cli.cards import PairCard
from w2sd_cli.errors import InputError, Interrupted, W2SDError
from w2sd_cli.files import ensure_writable, write_text_atomic
from w2sd_cli.kinds.base import Condition, LoadSettings, PairKind, Settings
from w2sd_cli.methods import get_method
from w2sd_cli.outputs import SUFFIX, save_output, sha256_of
from w2sd_cli.pairs import PairRegistry, get_registry
from w2sd_cli.registries import NamedRegistry

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
    batch_size: int = 1
    executor_options: dict[str, str] = field(default_factory=dict)
    """The executor's own settings (``--executor-option KEY=VALUE``), checked against its ``options``."""


@dataclass
class BenchJob:
    """Everything an executor needs: the run folder, its plan, the card and kind, how to load and sample.

    ``open_engine()`` loads the pair (once per process): executors call it where the items are rendered.
    """

    run_dir: Path
    plan: dict[str, Any]
    items: Grid
    """The grid, made on demand (iterate it, or ``items.share(rank, world)``; never list a large one)."""
    card: PairCard
    kind: PairKind
    settings: Settings
    load: LoadSettings
    shard: Shard
    keep_going: bool = False
    batch_size: int = 1
    engine: Any = None
    options: dict[str, str] = field(default_factory=dict)
    """The executor's own settings (``--executor-option KEY=VALUE``), keys among its ``options``."""

    def open_engine(self) -> Any:
        """The engine of this job's pair (loaded on first use, kept after)."""
        if self.engine is None:
            from dataclasses import replace

            from w2sd_cli.engine import open_engine

            here = replace(self.load, device=_device(self.load.device, self.shard))  # this rank's own GPU
            self.engine = open_engine(self.card, self.kind, self.settings, here, metrics=[])
            self.engine.asked = self.load  # recipes record what was asked, so every rank writes the same bytes
        return self.engine


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
    ``run_share`` for each shard, wherever it runs, or ``render_batch`` on workers and writing what they
    return) and return the merged state (``merge``). An executor may declare ``options`` (a mapping of
    key to one line of help): ``--executor-option KEY=VALUE`` reaches it as ``job.options``, and keys it does
    not declare are refused before anything runs. ``BenchOutcome.extra["summary"]`` lines are printed by
    `w2sd bench`.
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


def executors() -> NamedRegistry[Any]:
    """The built-in local executor plus every plugin's (``register_executors``); built-ins keep their names."""
    from w2sd_cli.plugins import get_host

    return get_host().registry("register_executors", "executor", builtins=[LocalExecutor()],
                               check=lambda e: callable(getattr(e, "execute", None)), not_found=InputError)


def bench(request: BenchRequest, observer: Observer | None = None,
          registry: PairRegistry | None = None) -> BenchOutcome:
    """Plan (or resume) a run in ``request.out`` and execute this process's share of it."""
    runners = executors()
    if request.executor not in runners:
        from w2sd_cli.errors import suggest

        raise InputError(f"No executor {request.executor!r}.{suggest(request.executor, runners)} "
                         f"Installed: {', '.join(sorted(runners))}. {executor_hint(request.executor)}")
    check_options(runners[request.executor], request.executor_options)
    job = plan_job(request, registry)
    job.options = dict(request.executor_options)
    from w2sd_cli.bench.lock import hold_run

    try:
        with hold_run(job.run_dir, job.shard):  # a second process on the same share is refused, not doubled
            return runners[request.executor].execute(job, observer)
    except KeyboardInterrupt:
        raise Interrupted("Interrupted: finished items are kept in the manifest; run the same command to resume.")\
            from None


KNOWN_EXECUTORS = {"ray": "w2sd-ray"}
"""Executors w2sd's own plugin packages provide, by name: what to install for each."""


def executor_hint(name: str) -> str:
    """How to get executor ``name``: its package when w2sd ships one, else where executors come from."""
    package = KNOWN_EXECUTORS.get(name)
    if package is not None:
        return (f"The {name} executor comes with the {package} plugin: pip install {package} (from a w2sd checkout: "
                f"pip install -e plugins/{package}); `w2sd plugins` then lists it.")
    return "Executors come from plugins (hook register_executors); `w2sd plugins` lists what is installed."


def parse_options(specs: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` texts (``--executor-option``) as a mapping; a later key wins."""
    options: dict[str, str] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--executor-option {spec!r}: write KEY=VALUE, e.g. --executor-option actors=2.")
        options[key.strip()] = value.strip()
    return options


def executor_flags(args: Iterable[str], executor: str) -> dict[str, str]:
    """``--EXECUTOR-KEY VALUE`` (or ``--EXECUTOR-KEY=VALUE``) flags as executor options: ``--ray-address H:6379``
    is ``-X address=H:6379`` for ``--executor ray``. Anything else is an unknown option."""
    options: dict[str, str] = {}
    items = list(args)
    prefix = f"--{executor}-"
    while items:
        arg = items.pop(0)
        if not arg.startswith(prefix) or len(arg) == len(prefix):
            raise InputError(f"No such option {arg!r} for `w2sd bench` (see `w2sd bench --help`). Executor options "
                             f"are given as {prefix}KEY VALUE or --executor-option KEY=VALUE.")
        key, sep, value = arg[len(prefix):].partition("=")
        if not sep:
            if not items:
                raise InputError(f"{arg} needs a value, e.g. {arg} VALUE.")
            value = items.pop(0)
        options[key] = value
    return options


def check_options(executor: Any, options: dict[str, str]) -> None:
    """Refuse option keys the executor does not declare (its ``options`` mapping of key to help)."""
    known: dict[str, str] = dict(getattr(executor, "options", None) or {})
    for key in options:
        if key not in known:
            from w2sd_cli.errors import suggest

            takes = f"It takes: {', '.join(sorted(known))}." if known else "It takes no options."
            raise InputError(f"Executor {executor.name} has no option {key!r}.{suggest(key, known)} {takes}")


def plan_job(request: BenchRequest, registry: PairRegistry | None = None) -> BenchJob:
    """Resolve the pair, the prompts and the settings; write (or check) the run folder's ``run.json``."""
    registry = registry or get_registry()
    entry = registry.get(request.pair)
    card, kind = entry.card, registry.kind(entry)
    kind.check(card)
    from w2sd_cli.validate import check_request

    used = {"cfg": request.cfg, "width": request.width, "height": request.height, "samples": request.samples}
    check_request(card, kind, None, used, LoadSettings(device=request.device, dtype=request.dtype))
    if not request.methods:
        raise InputError("--methods is empty: give at least one method, e.g. --methods strong,w2sd.")
    for method in request.methods:
        get_method(method)
    shard = detect_shard(explicit=request.shard)
    sampler = Settings.resolve(card, steps=request.steps, lam=request.lam, rounds=request.rounds, k=request.k,
                               samples=request.samples, cfg=request.cfg, width=request.width, height=request.height,
                               reference_interval=request.reference_interval)
    load = LoadSettings(device=request.device, dtype=request.dtype, offline=request.offline,
                        allow_pickle=request.allow_pickle)
    prompts, prompt_set = _prompts(request, kind.conditioning != "none")
    settings = {"steps": sampler.steps, "lam": sampler.lam, "rounds": sampler.rounds, "k": request.k,
                "samples": sampler.samples, "cfg": sampler.cfg, "width": sampler.width, "height": sampler.height,
                "dtype": request.dtype, "reference_interval": sampler.reference_interval}
    seeds = seed_ranges(request.seeds)
    items = Grid(prompts, seeds, list(request.methods), card.digest(), digest(settings))
    items.check_unique()
    plan = {"format": FORMAT, "pair": card.name, "kind": card.kind, "card_digest": card.digest(),
            "card": card.model_dump(mode="json", by_alias=True), "settings": settings,
            "settings_digest": digest(settings), "prompt_set": prompt_set, "prompts": prompt_dicts(prompts),
            "seeds": seeds if isinstance(seeds, str) else seeds.spec(), "methods": list(request.methods),
            "output": kind.output, "items": len(items)}
    ensure_writable(request.out, "the bench run folder")  # before any model loads
    _bind(request.out, plan)
    plan["ids"] = items.ids
    return BenchJob(request.out, plan, items, card, kind, sampler, load, shard, request.keep_going,
                    request.batch_size)


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


def plan_share(job: BenchJob, shard: Shard, observer: Observer | None = None
               ) -> tuple[int, int, Iterator[WorkItem]]:
    """This shard's unfinished items, lazily: ``(to render, already finished, items)``; stale temp files of its
    items are removed and a ``plan`` event is sent (every executor starts here)."""
    grid = job.items
    remove_stale_temps(job.run_dir / "items", grid, shard)
    done = finished(job.run_dir)
    skipped = sum(1 for line in done.values()
                  if (at := grid.locate(line)) is not None and grid.owner(at, shard.world) == shard.rank)
    count = grid.share_size(shard.rank, shard.world) - skipped
    s = job.settings
    _notify(observer, {"phase": "plan", "total": count, "skipped": skipped, "rank": shard.rank, "world": shard.world,
                       "plan": plan_summary(grid, s.steps, s.lam, s.rounds, count, skipped, shard.rank, shard.world)})
    return count, skipped, (item for item in grid.share(shard.rank, shard.world) if item.id not in done)


def run_share(job: BenchJob, shard: Shard, observer: Observer | None = None) -> ShareResult:
    """Render this shard's unfinished items.

    Each output is written atomically, then its manifest line is appended to ``manifest.rank-R.jsonl``
    and fsynced: a kill loses at most the item in flight. With ``job.keep_going`` an item that fails with a
    ``W2SDError`` (a NaN sample, say) is logged to ``failures.rank-R.jsonl`` and retried by the next run.
    """
    count, skipped, todo = plan_share(job, shard, observer)
    if not count:
        return ShareResult(0, skipped)
    engine = job.open_engine()
    from w2sd_cli.images import versions

    context = {"versions": versions(), "rank": shard.rank, "world": shard.world, "host": socket.gethostname()}
    failed = done_count = 0
    with PartWriter(part_path(job.run_dir, shard.rank)) as writer:
        for batch in batches(todo, job.batch_size):
            labels = ", ".join(_label(i) for i in batch)
            _notify(observer, {"phase": "item", "done": done_count, "total": count, "label": labels})
            try:
                lines = render_batch(job, engine, batch, observer)
            except W2SDError as err:
                if not job.keep_going:
                    raise
                failed += len(batch)
                with PartWriter(job.run_dir / f"failures.rank-{shard.rank}.jsonl") as failures:
                    for item in batch:
                        failures.append({**item.as_dict(), "error": str(err), **context, "at": _now()})
                continue
            for line in lines:
                writer.append({**line, **context, "warmup": done_count == 0, "finished_at": _now()})
                done_count += 1
            _notify(observer, {"phase": "item", "done": done_count, "total": count, "label": labels})
    return ShareResult(count - failed, skipped, failed)


def batches(items: Iterable[WorkItem], size: int) -> Iterator[list[WorkItem]]:
    """Items of one prompt and one method, ``size`` seeds at a time (one network batch), made lazily.

    Items are buffered per method while their prompt lasts, so at most (methods × size) are held at once.
    """
    buffers: dict[str, list[WorkItem]] = {}
    prompt: Prompt | None = None
    for item in items:
        if item.prompt != prompt:
            yield from (group for group in buffers.values() if group)
            buffers, prompt = {}, item.prompt
        group = buffers.setdefault(item.method, [])
        group.append(item)
        if len(group) >= size:
            yield group
            buffers[item.method] = []
    yield from (group for group in buffers.values() if group)


def render_batch(job: BenchJob, engine: Any, batch: list[WorkItem], observer: Observer | None
                  ) -> list[dict[str, Any]]:
    """Render one batch (one prompt and method, several seeds) through the engine; save each output.

    Outputs go under ``job.run_dir`` (a worker may point it at a scratch folder and ship the files); the
    returned manifest lines lack the context fields (versions, rank, world, host, warmup, finished_at).
    """
    first = batch[0]
    condition = Condition(prompt=first.prompt.text)
    samples = engine.render(condition, [i.seed for i in batch], first.method, observer=_tagged(observer, first))
    suffix = SUFFIX[job.kind.output]
    lines = []
    for item, sample in zip(batch, samples, strict=True):
        rel = f"items/{item.stem()}{suffix}"
        recipe = {**item.as_dict(), "pair": job.card.name, "kind": job.card.kind,
                  "card_digest": job.plan["card_digest"], "settings": job.plan["settings"], "nfe": sample.nfe,
                  "cost": sample.cost}
        stable = {k: v for k, v in sample.recipe.items() if k != "seconds"}  # same item, same bytes
        path = save_output(sample.output, job.kind.output, job.run_dir / rel, {**stable, **recipe})
        line = {**recipe, "settings_digest": job.plan["settings_digest"], "file": rel, "sha256": sha256_of(path),
                "output": job.kind.output, "provenance": sample.recipe["provenance"], "seconds": sample.seconds,
                "batch": len(batch)}
        if sample.same_as:
            line["same_as"] = sample.same_as
        class_label = (sample.recipe.get("sides") or {}).get("final", {}).get("class_label")
        if class_label is not None:
            line["class_label"] = class_label
        lines.append(line)
    return lines


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


def remove_stale_temps(folder: Path, grid: Grid, shard: Shard) -> None:
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
