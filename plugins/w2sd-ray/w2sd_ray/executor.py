"""The Ray executor's driver: plans like a local run, deals batches to actors, writes every result itself.

The driver keeps a bounded number of batches in flight per actor. An actor that dies (its process or its
node) loses nothing: its batches go back to the queue and to another actor, and a new actor takes its
place. Only the driver writes: each output atomically, then its manifest line (fsynced), exactly as
``run_share`` does, so an interrupted run resumes like a local one.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from w2sd_cli.plugin import (
    BenchJob,
    BenchOutcome,
    Grid,
    InputError,
    ModelError,
    Observer,
    PartWriter,
    W2SDError,
    WorkItem,
    atomic_path,
    batches,
    merge,
    part_path,
    plan_share,
    sha256_of,
)
from w2sd_ray.worker import Fault, RenderWorker

ADDRESS_ENV = "W2SD_RAY_ADDRESS"
GROW_EVERY = 5.0
"""Seconds between looks for free GPUs (or CPUs) to start more actors on."""
OPTIONS = {
    "address": f"the Ray cluster (HOST:PORT, ray://HOST:10001 or auto); default ${ADDRESS_ENV}, then "
               "$RAY_ADDRESS, else a Ray instance started on this machine",
    "actors": "at most this many actors (default: one per GPU, or one per CPU on a cluster without GPUs)",
    "in-flight": "batches queued on each actor at once (default 2: one rendering, one waiting)",
    "retries": "times a batch is given to another actor after its actor died (default 3)",
    "wait": "seconds to wait for an actor to start when none is running (default 600)",
}


class RayError(W2SDError):
    """The Ray cluster could not run the job (no worker started, a batch that kills every worker)."""

    exit_code = 1


@dataclass(frozen=True)
class RaySettings:
    """The executor's options, checked."""

    address: str | None = None
    actors: int | None = None
    in_flight: int = 2
    retries: int = 3
    wait: float = 600.0

    @classmethod
    def parse(cls, options: dict[str, str]) -> RaySettings:
        address = options.get("address") or os.environ.get(ADDRESS_ENV) or None
        return cls(address, _number(options, "actors", None, int), _number(options, "in-flight", 2, int),
                   _number(options, "retries", 3, int, low=0), _number(options, "wait", 600.0, float))


def _number(options: dict[str, str], key: str, default: Any, kind: type, low: float = 1) -> Any:
    if key not in options:
        return default
    try:
        value = kind(options[key])
    except ValueError:
        value = None
    if value is None or value < low:
        raise InputError(f"--executor-option {key}={options[key]!r}: give a number of at least {low:g}.")
    return value


@dataclass
class Slot:
    """One actor place: the live actor handle (replaced when it dies) and what it has done."""

    index: int
    handle: Any
    started: float
    ready: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    in_flight: int = 0
    items: int = 0
    batches: int = 0
    busy: float = 0.0
    first: float | None = None
    last: float | None = None
    replaced: int = 0
    generation: int = 0
    failures_in_a_row: int = 0

    def report(self) -> dict[str, Any]:
        span = (self.last - self.first) if self.first is not None and self.last is not None else 0.0
        rate = self.items / span if span > 0 else None
        return {"actor": self.index, "host": self.info.get("host"), "pid": self.info.get("pid"),
                "device": self.info.get("device"), "items": self.items, "batches": self.batches,
                "render_seconds": round(self.busy, 3), "items_per_s": None if rate is None else round(rate, 3),
                "replaced": self.replaced}


class RayExecutor:
    """``w2sd bench --executor ray``: one actor per GPU (or CPU) on a Ray cluster; this process writes.

    Args:
        fault: test hook (see ``Fault``): the actor that renders that item exits abruptly, once.
    """

    name = "ray"
    summary = "render on a Ray cluster: one actor per GPU (or CPU) loads the pair once; this process writes"
    options = OPTIONS

    def __init__(self, fault: Fault | None = None) -> None:
        self.fault = fault

    def execute(self, job: BenchJob, observer: Observer | None = None) -> BenchOutcome:
        settings = RaySettings.parse(job.options)
        started = time.perf_counter()
        shard = job.shard
        count, skipped, todo = plan_share(job, shard, observer)
        extra: dict[str, Any] = {}
        rendered = failed = 0
        if count:
            ray, connected_here = _connect(settings.address)
            try:
                run = _Run(ray, job, settings, observer, count, self.fault)
                rendered, failed = run.drive(batches(todo, job.batch_size))
                extra = run.report()
            finally:
                if connected_here:
                    ray.shutdown()
        merged = merge(job.run_dir, job.items.ids)
        return BenchOutcome(job.run_dir, shard, self.name, rendered, skipped, merged,
                            round(time.perf_counter() - started, 3), failed, extra)


def _connect(address: str | None) -> tuple[Any, bool]:
    """Ray, connected (to ``address``, to ``$RAY_ADDRESS``, or to a new local instance); True when done here."""
    try:
        import ray
    except ImportError:
        raise InputError("The ray executor needs Ray: pip install 'ray>=2.9' (or pip install w2sd-ray).") from None
    if ray.is_initialized():
        return ray, False
    target = ray_target(address)
    try:
        ray.init(address=target, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = address or os.environ.get("RAY_ADDRESS") or "a local instance"
        raise RayError(f"Cannot connect to the Ray cluster at {where}: {err}. Start it with `ray start --head` "
                       "(and `ray start --address HEAD:6379` on each worker), then pass "
                       "--executor-option address=HEAD:6379.") from None
    return ray, True


def ray_target(address: str | None) -> str:
    """What to pass ``ray.init``: the address given, else ``$RAY_ADDRESS``, else ``"local"``: a new instance on
    this machine. (With no address Ray would also try the cluster named in ``/tmp/ray/ray_current_cluster``,
    which a killed head leaves behind, and then fail or attach to a stranger's cluster.)"""
    return address or os.environ.get("RAY_ADDRESS") or "local"


class _Run:
    """One execution: actors, the batch queue, and the driver's writing of results."""

    def __init__(self, ray: Any, job: BenchJob, settings: RaySettings, observer: Observer | None, total: int,
                 fault: Fault | None) -> None:
        self.ray, self.job, self.settings, self.observer, self.total = ray, job, settings, observer, total
        self.fault = fault
        self.actor_class, self.per_actor = _actor_class(ray)
        # The job without its grid and plan (workers need neither), with no engine and no run folder.
        plan = {k: job.plan[k] for k in ("card_digest", "settings", "settings_digest")}
        self.shipped = self.ray.put(replace(job, run_dir=Path("."), items=Grid([], "0", [], "", ""), plan=plan,
                                            engine=None))
        self.slots: list[Slot] = []
        self.pending: dict[Any, tuple[Slot, int, list[WorkItem] | None, int]] = {}
        """Each awaited call: its actor's slot and generation, its batch (None: loading) and its attempts."""
        self.retry: collections.deque[tuple[list[WorkItem], int]] = collections.deque()
        self.done = self.failed = self.requeued = 0
        self.written: set[str] = set()
        self.driver_seconds = 0.0
        self.began = time.perf_counter()
        self.no_actor_since: float | None = None
        self.grown_at = time.perf_counter()

    def drive(self, source: Iterator[list[WorkItem]]) -> tuple[int, int]:
        """Render every batch of ``source``; returns (rendered, failed)."""
        wanted = self._actor_count()
        for index in range(wanted):
            self.slots.append(self._start(index))
        _notify(self.observer, {"phase": "item", "done": 0, "total": self.total,
                                "label": f"starting {wanted} Ray actors"})
        context = {"rank": self.job.shard.rank, "world": self.job.shard.world}
        exhausted = False
        try:
            with PartWriter(part_path(self.job.run_dir, self.job.shard.rank)) as writer:
                while True:
                    exhausted = self._dispatch(source, exhausted)
                    if exhausted and not self.retry and all(b is None for _s, _g, b, _a in self.pending.values()):
                        break  # every batch delivered: actors still loading are not waited for
                    self._check_alive()
                    ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=1.0)
                    for ref in ready:
                        self._collect(ref, writer, context)
                    if not exhausted or self.retry:
                        self._grow()
        finally:
            for slot in self.slots:
                self.ray.kill(slot.handle, no_restart=True)
        return self.done, self.failed

    def _actor_count(self) -> int:
        resources = self.ray.cluster_resources()
        unit = "GPU" if resources.get("GPU", 0) >= 1 else "CPU"
        count = max(1, int(resources.get(unit, 1)))
        if self.settings.actors is not None:
            count = min(count, self.settings.actors)
        return min(count, math.ceil(self.total / max(1, self.job.batch_size)) or 1)

    def _start(self, index: int) -> Slot:
        slot = Slot(index, None, time.perf_counter())
        self._launch(slot)
        return slot

    def _launch(self, slot: Slot) -> None:
        """A new actor for ``slot``; it renders once its ``ready`` (loading the pair) has returned."""
        slot.handle = self.actor_class.options(**self.per_actor).remote(self.shipped, self.fault)
        slot.ready, slot.in_flight, slot.started = False, 0, time.perf_counter()
        self.pending[slot.handle.ready.remote()] = (slot, slot.generation, None, 0)

    def _grow(self) -> None:
        """Every few seconds, add an actor when the cluster has a free GPU (or CPU) again, e.g. a node joined."""
        now = time.perf_counter()
        if now - self.grown_at < GROW_EVERY or not all(slot.ready for slot in self.slots):
            return
        self.grown_at = now
        if self.settings.actors is not None and len(self.slots) >= self.settings.actors:
            return
        unit = "GPU" if "num_gpus" in self.per_actor else "CPU"
        if self.ray.available_resources().get(unit, 0) >= 1:
            self.slots.append(self._start(len(self.slots)))
            _notify(self.observer, {"phase": "actor", "event": "added", "actor": len(self.slots) - 1})

    def _dispatch(self, source: Iterator[list[WorkItem]], exhausted: bool) -> bool:
        """Give each ready actor batches until it has ``in-flight`` of them; True once ``source`` is spent."""
        for slot in self.slots:
            while slot.ready and slot.in_flight < self.settings.in_flight:
                if self.retry:
                    batch, attempts = self.retry.popleft()
                elif not exhausted:
                    batch = next(source, None)  # type: ignore[arg-type]
                    if batch is None:
                        exhausted = True
                        break
                    attempts = 0
                else:
                    break
                self.pending[slot.handle.render.remote(batch)] = (slot, slot.generation, batch, attempts)
                slot.in_flight += 1
        return exhausted

    def _collect(self, ref: Any, writer: PartWriter, context: dict[str, Any]) -> None:
        """Take one finished call: an actor now ready, a batch to write, or an actor that died."""
        slot, generation, batch, attempts = self.pending.pop(ref)
        current = generation == slot.generation  # else the call went to an actor already replaced
        fetching = time.perf_counter()
        try:
            value = self.ray.get(ref)
        except _death_errors(self.ray) as err:
            if batch is not None:
                slot.in_flight -= current
                self._requeue(batch, attempts)
            if current:
                self._replace(slot, err)
            return
        except self.ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None) or err
            if batch is None or not isinstance(cause, W2SDError) or not self.job.keep_going:
                raise cause from None
            slot.in_flight -= current
            self._log_failure(batch, cause, slot, context)
            return
        if batch is None:
            if current:
                slot.ready, slot.info = True, value
                _notify(self.observer, {"phase": "actor", "event": "ready", "actor": slot.index, **value})
            return
        slot.in_flight -= current
        self.driver_seconds += time.perf_counter() - fetching  # moving and unpickling the result
        self._write(slot, batch, value, writer, context)

    def _write(self, slot: Slot, batch: list[WorkItem], value: dict[str, Any], writer: PartWriter,
               context: dict[str, Any]) -> None:
        started = time.perf_counter()
        files: dict[str, bytes] = value["files"]
        for rel in sorted(files, key=lambda r: (not r.endswith(".json"), r)):  # sidecars, then the outputs
            with atomic_path(self._inside(rel)) as tmp:
                tmp.write_bytes(files[rel])
        for line in value["lines"]:
            if line["id"] in self.written:
                continue
            if sha256_of(self.job.run_dir / line["file"]) != line["sha256"]:
                raise ModelError(f"{line['file']}: the bytes written differ from those the worker rendered; "
                                 "rerun the same command (finished items are kept).")
            writer.append({**line, "versions": slot.info.get("versions"), **context, "host": slot.info.get("host"),
                           "warmup": slot.items == 0, "finished_at": _now()})
            self.written.add(line["id"])
            slot.items += 1
            self.done += 1
        now = time.perf_counter()
        slot.batches += 1
        slot.busy += float(value["seconds"])
        slot.first = slot.first if slot.first is not None else now - float(value["seconds"])
        slot.last = now
        slot.failures_in_a_row = 0
        self.driver_seconds += now - started
        _notify(self.observer, {"phase": "item", "done": self.done, "total": self.total, "label": self._label()})

    def _inside(self, rel: str) -> Path:
        path = PurePosixPath(rel)
        if path.is_absolute() or ".." in path.parts or path.parts[:1] != ("items",):
            raise ModelError(f"A Ray worker returned the file name {rel!r}, outside the run's items folder.")
        return self.job.run_dir.joinpath(*path.parts)

    def _requeue(self, batch: list[WorkItem], attempts: int) -> None:
        """Put a dead actor's batch back at the head of the queue (or give up on a batch that kills actors)."""
        if attempts + 1 > self.settings.retries:
            raise RayError(f"{len(batch)} item(s) ({', '.join(_label(i) for i in batch)}) killed their Ray actor "
                           f"{attempts + 1} times (out of memory?). Finished items are kept; rerun with a smaller "
                           "--batch-size or on bigger GPUs, or raise --executor-option retries=N.") from None
        self.requeued += len(batch)
        self.retry.append((batch, attempts + 1))

    def _replace(self, slot: Slot, err: BaseException) -> None:
        """Put a new actor in a dead one's place (its unfinished calls fail and are re-queued on their own)."""
        slot.failures_in_a_row += 1
        if slot.failures_in_a_row > self.settings.retries + 1:
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise RayError(f"Ray actor {slot.index} died {slot.failures_in_a_row} times in a row without finishing "
                           f"a batch (last: {first}). See the worker logs in /tmp/ray/session_latest/logs on its "
                           "node; finished items are kept.") from None
        self.ray.kill(slot.handle, no_restart=True)
        slot.generation += 1
        slot.replaced += 1
        self._launch(slot)
        _notify(self.observer, {"phase": "actor", "event": "replaced", "actor": slot.index,
                                "error": type(err).__name__})

    def _check_alive(self) -> None:
        """Fail, rather than wait for ever, when no actor has been running for ``wait`` seconds."""
        if any(slot.ready for slot in self.slots):
            self.no_actor_since = None
            return
        now = time.perf_counter()
        self.no_actor_since = self.no_actor_since or now
        if now - self.no_actor_since > self.settings.wait:
            need = ", ".join(f"{k}={v}" for k, v in self.per_actor.items())
            raise RayError(f"No Ray actor started within {self.settings.wait:g} s (each needs {need}; the cluster "
                           f"has {self.ray.available_resources()} free). Add nodes or free resources; finished "
                           "items are kept.")

    def _log_failure(self, batch: list[WorkItem], err: Exception, slot: Slot, context: dict[str, Any]) -> None:
        self.failed += len(batch)
        with PartWriter(self.job.run_dir / f"failures.rank-{self.job.shard.rank}.jsonl") as failures:
            for item in batch:
                failures.append({**item.as_dict(), "error": str(err), **context, "host": slot.info.get("host"),
                                 "at": _now()})

    def _label(self) -> str:
        elapsed = time.perf_counter() - self.began
        rate = self.done / elapsed if elapsed > 0 else 0.0
        counts = " ".join(f"a{s.index}:{s.items}" for s in self.slots)
        return f"{rate:.2f} items/s · {counts}"

    def report(self) -> dict[str, Any]:
        """Per-actor throughput, retries and the driver's own time per item (``BenchOutcome.extra``)."""
        elapsed = time.perf_counter() - self.began
        actors = [s.report() for s in self.slots]
        summary = [f"actor {a['actor']} on {a['host']} ({a['device']}): {a['items']} items"
                   + (f", {a['items_per_s']:.3g} items/s" if a["items_per_s"] else "")
                   + (f", replaced {a['replaced']}x" if a["replaced"] else "") for a in actors]
        summary.append(f"{self.done} items in {elapsed:.1f} s ({self.done / elapsed:.3g} items/s); "
                       f"{self.requeued} re-queued after an actor died")
        return {"address": self.settings.address, "actors": actors, "items_per_s": round(self.done / elapsed, 3),
                "requeued": self.requeued,
                "driver_seconds_per_item": round(self.driver_seconds / self.done, 6) if self.done else None,
                "summary": summary}


def _actor_class(ray: Any) -> tuple[Any, dict[str, Any]]:
    """The remote actor class and its resources: a GPU each when the cluster has GPUs, else a CPU each."""
    per = {"num_gpus": 1, "num_cpus": 1} if ray.cluster_resources().get("GPU", 0) >= 1 else {"num_cpus": 1}
    return ray.remote(RenderWorker), per


def _death_errors(ray: Any) -> tuple[type[BaseException], ...]:
    names = ("RayActorError", "WorkerCrashedError", "OutOfMemoryError", "NodeDiedError", "ObjectLostError")
    return tuple(found for name in names if (found := getattr(ray.exceptions, name, None)) is not None)


def _label(item: WorkItem) -> str:
    return f"p{item.prompt.index} s{item.seed} {item.method}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _notify(observer: Observer | None, event: dict[str, Any]) -> None:
    if observer is not None:
        observer(event)
