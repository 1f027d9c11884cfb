"""`w2sd bench --executor ray` on a local Ray instance: same files as a local run, nothing lost when a worker
dies, a run interrupted in the driver resumes."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from w2sd_cli.bench.manifest import comparable, read_lines
from w2sd_cli.bench.runner import BenchRequest, bench, read_plan
from w2sd_cli.errors import InputError, Interrupted

SHAPES = ("--prompts", "shapes", "--limit", "2", "--seeds", "0-1", "--methods", "strong,w2sd", "--steps", "6")
GMM = {"pair": "gmm-1d", "seeds": "0-5", "samples": 300, "steps": 10, "methods": ("strong", "w2sd")}


def invoke(*args: object) -> Any:
    from w2sd_cli.cli import build_app

    result = CliRunner().invoke(build_app(), [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def lines(run: Path) -> list[dict[str, Any]]:
    return read_lines(run / "manifest.jsonl")


def by_id(run: Path) -> dict[str, str]:
    return {line["id"]: line["sha256"] for line in lines(run)}


def part_ids(run: Path) -> Counter[str]:
    """How many manifest lines the driver wrote for each id (exactly once is the point)."""
    return Counter(line["id"] for path in run.glob("manifest.rank-*.jsonl") for line in read_lines(path))


class _Faulty:
    """A plugin registering a ray executor whose actor exits abruptly once, on the item ``item``."""

    def __init__(self, item: str, marker: Path) -> None:
        self.item, self.marker = item, marker

    from w2sd_cli.plugin import hookimpl

    @hookimpl
    def register_executors(self, register: Any) -> None:
        from w2sd_ray.executor import RayExecutor
        from w2sd_ray.worker import Fault

        register(RayExecutor(fault=Fault(self.item, str(self.marker))))


def test_the_entry_point_adds_the_ray_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from w2sd_cli.bench.runner import executors
    from w2sd_cli.cli import build_app
    from w2sd_cli.testing import fake_distribution, reset

    if "ray" not in {ep.name for ep in importlib.metadata.entry_points(group="w2sd")}:  # not pip-installed
        fake_distribution(tmp_path / "site", "w2sd_ray_entry", "from w2sd_ray import register_executors\n",
                          entry_name="ray")
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
    reset()
    result = CliRunner().invoke(build_app(), ["plugins", "--json"])
    records = {r["name"]: r for r in json.loads(result.stdout)["plugins"]}
    assert records["ray"]["status"] == "ok" and records["ray"]["hooks"] == ["register_executors"]
    runners = executors()
    assert runners["ray"].name == "ray" and not runners.problems
    assert "address" in runners["ray"].options


def test_unknown_or_bad_executor_options_are_refused_before_anything_runs(tmp_path: Path) -> None:
    import w2sd_ray

    from w2sd_cli.testing import installed_plugin

    with installed_plugin(w2sd_ray, "ray"):
        with pytest.raises(InputError, match=r"no option 'adress'\. Did you mean 'address'.*It takes: actors"):
            bench(BenchRequest(**GMM, out=tmp_path / "a", executor="ray", executor_options={"adress": "x"}))
        assert not (tmp_path / "a").exists()
        with pytest.raises(InputError, match=r"local has no option 'actors'.*takes no options"):
            bench(BenchRequest(**GMM, out=tmp_path / "b", executor_options={"actors": "2"}))
        with pytest.raises(InputError, match="in-flight='none'"):
            bench(BenchRequest(**GMM, out=tmp_path / "c", executor="ray", executor_options={"in-flight": "none"}))
        result = CliRunner().invoke(w2sd_app(), ["bench", "gmm-1d", "--out", tmp_path / "d", "-X", "actors"])
        assert result.exit_code != 0 and "write KEY=VALUE" in result.output


def w2sd_app() -> Any:
    from w2sd_cli.cli import build_app

    return build_app()


def test_a_ray_run_makes_the_same_files_as_a_local_run(ray_plugin: Any, tmp_path: Path) -> None:
    """Shapes (a tiny text-to-image UNet) through the CLI, with two CPU actors and batches of two seeds."""
    invoke("bench", "shapes", *SHAPES, "--out", tmp_path / "local")
    result = invoke("bench", "shapes", *SHAPES, "--out", tmp_path / "ray", "--executor", "ray", "-X", "in-flight=1",
                    "--batch-size", "2", "--json")
    facts = json.loads(result.stdout)
    assert facts["complete"] and facts["rendered"] == 8
    actors = facts["executor"]["actors"]
    assert len(actors) == 2 and sum(a["items"] for a in actors) == 8
    assert all(a["device"] == "cpu" and a["items_per_s"] for a in actors if a["items"])
    assert by_id(tmp_path / "ray") == by_id(tmp_path / "local") and len(by_id(tmp_path / "local")) == 8
    batch_of = {line["id"]: line["batch"] for line in lines(tmp_path / "ray")}
    assert set(batch_of.values()) == {2}
    local = [{**line, "batch": 2} for line in lines(tmp_path / "local")]  # one seed per call: the only difference
    assert comparable(lines(tmp_path / "ray")) == comparable(local)
    text = invoke("bench", "shapes", *SHAPES, "--out", tmp_path / "ray", "--executor", "ray").output
    assert "skipped 8 already done" in text


def test_a_worker_killed_mid_item_loses_nothing(ray_plugin: Any, tmp_path: Path) -> None:
    """The actor that renders the 5th item exits after rendering it, before delivering it; then a second
    actor is killed from outside (SIGKILL) while it has work in flight. Every id is written exactly once."""
    bench(BenchRequest(**GMM, out=tmp_path / "local"))
    victim = read_plan(tmp_path / "local")["ids"][4]
    marker = tmp_path / "fired"
    from w2sd_cli.testing import installed_plugin

    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        events.append(event)
        if event.get("phase") == "item" and event.get("done", 0) >= 8 and not any(e.get("signal") for e in events):
            running: dict[int, int] = {}  # actor slot -> pid of its live actor
            for e in events:
                if e.get("event") == "ready":
                    running[e["actor"]] = e["pid"]
                elif e.get("event") == "replaced":
                    running.pop(e["actor"], None)
            for pid in sorted(running.values(), reverse=True):
                try:  # the faulty actor may be gone before its death is noticed: kill a live one
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                events.append({"signal": pid})
                break

    with installed_plugin(_Faulty(victim, marker), "ray"):
        outcome = bench(BenchRequest(**GMM, out=tmp_path / "ray", executor="ray"), observe)
    assert marker.exists(), "the fault never fired"
    assert any(e.get("signal") for e in events), "no actor was running to be killed"
    assert outcome.merged.complete and outcome.rendered == 12
    assert outcome.extra["requeued"] >= 2
    assert sum(a["replaced"] for a in outcome.extra["actors"]) >= 2
    assert sum(a["items"] for a in outcome.extra["actors"]) == 12
    assert set(part_ids(tmp_path / "ray").values()) == {1} and len(part_ids(tmp_path / "ray")) == 12
    assert comparable(lines(tmp_path / "ray")) == comparable(lines(tmp_path / "local"))
    replaced = [e for e in events if e.get("event") == "replaced"]
    assert {e["error"] for e in replaced} <= {"ActorDiedError", "RayActorError", "ActorUnavailableError"}


def test_an_interrupted_driver_resumes_and_leaves_no_actor_behind(ray_plugin: Any, tmp_path: Path) -> None:
    ray = ray_plugin
    bench(BenchRequest(**GMM, out=tmp_path / "local"))

    def interrupt(event: dict[str, Any]) -> None:
        if event.get("phase") == "item" and event.get("done") == 5:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="run the same command to resume"):
        bench(BenchRequest(**GMM, out=tmp_path / "ray", executor="ray"), interrupt)
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2, "the interrupted run's actors still hold CPUs"
    again = bench(BenchRequest(**GMM, out=tmp_path / "ray", executor="ray",
                               executor_options={"actors": "1", "in-flight": "3"}))
    assert again.skipped == 5 and again.rendered == 7 and again.merged.complete
    assert len(again.extra["actors"]) == 1
    assert set(part_ids(tmp_path / "ray").values()) == {1}
    assert comparable(lines(tmp_path / "ray")) == comparable(lines(tmp_path / "local"))


@pytest.fixture
def one_cpu_cluster(ray_local: Any) -> Iterator[Any]:
    """A head node with one CPU instead of the session's instance (``ray_plugin`` starts that again)."""
    import logging

    from ray.cluster_utils import Cluster

    ray_local.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        ray_local.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
        yield cluster
    finally:
        ray_local.shutdown()
        cluster.shutdown()


def test_a_node_that_joins_mid_run_gets_an_actor(one_cpu_cluster: Any, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import w2sd_ray
    import w2sd_ray.executor

    from w2sd_cli.testing import installed_plugin

    monkeypatch.setattr(w2sd_ray.executor, "GROW_EVERY", 0.5)
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        events.append(event)
        if event.get("phase") == "item" and event.get("done") == 2:
            one_cpu_cluster.add_node(num_cpus=1)

    slow = {**GMM, "seeds": "0-11", "samples": 20000, "steps": 30}
    with installed_plugin(w2sd_ray, "ray"):
        outcome = bench(BenchRequest(**slow, out=tmp_path / "ray", executor="ray"), observe)
    assert outcome.merged.complete and outcome.rendered == 24
    assert [e["actor"] for e in events if e.get("event") == "added"] == [1]
    assert len(outcome.extra["actors"]) == 2
    assert set(part_ids(tmp_path / "ray").values()) == {1} and len(part_ids(tmp_path / "ray")) == 24


def test_a_pair_that_cannot_load_on_the_workers_stops_with_w2sds_own_error(ray_plugin: Any, tmp_path: Path) -> None:
    from w2sd_cli.errors import ModelError

    pairs = Path(os.environ["W2SD_HOME"]) / "pairs"
    pairs.mkdir(parents=True, exist_ok=True)
    (pairs / "gone.yaml").write_text(
        "schema: 1\nname: gone\nkind: toy-unet\ndescription: shapes whose model folders are missing\n"
        f"models:\n  strong: {{path: {tmp_path}/strong, format: toy}}\n  weak: {{path: {tmp_path}/weak, format: toy}}\n"
        "strong: {model: strong}\nweak: {model: weak}\nfinal: {model: strong}\n", encoding="utf-8")
    with pytest.raises(ModelError, match="no model at"):
        bench(BenchRequest(pair="gone", prompts="shapes", limit=1, out=tmp_path / "run", executor="ray"))
    assert not list((tmp_path / "run").glob("manifest.rank-*.jsonl")) or not part_ids(tmp_path / "run")
