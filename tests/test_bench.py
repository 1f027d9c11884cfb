"""`w2sd bench` / `eval` / `report` / `pairs check` on the analytic pairs: grid ids, shards, resume, numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.bench_helpers import invoke, invoke_json, manifest
from w2sd_cli.bench.analysis import paired
from w2sd_cli.bench.grid import Prompt, expand, parse_seeds, work_id
from w2sd_cli.bench.manifest import PartWriter, merge, part_path, read_lines
from w2sd_cli.bench.runner import BenchRequest, bench, read_plan
from w2sd_cli.bench.shard import Shard, detect_shard, parse_shard
from w2sd_cli.errors import InputError, ModelError
from w2sd_cli.hookspecs import hookimpl
from w2sd_cli.kinds.base import PairKind

FAST = ("--samples", "400", "--steps", "12")


def test_work_ids_hash_what_makes_an_item_not_its_position() -> None:
    prompts = [Prompt(0, "a fox"), Prompt(1, "a cat")]
    items = expand(prompts, [0, 1], ["strong", "w2sd"], "card1", "set1")
    again = expand(list(reversed(prompts)), [1, 0], ["w2sd", "strong"], "card1", "set1")
    assert {i.id for i in items} == {i.id for i in again} and len(items) == 8
    base = work_id("a fox", 0, "w2sd", "card1", "set1")
    changed = [work_id("a fox!", 0, "w2sd", "card1", "set1"), work_id("a fox", 1, "w2sd", "card1", "set1"),
               work_id("a fox", 0, "strong", "card1", "set1"), work_id("a fox", 0, "w2sd", "card2", "set1"),
               work_id("a fox", 0, "w2sd", "card1", "set2")]
    assert base not in changed and len(set(changed)) == 5
    by_index = expand(prompts, parse_seeds("index"), ["w2sd"], "c", "s")
    assert [(i.prompt.index, i.seed) for i in by_index] == [(0, 0), (1, 1)]


def test_seed_specs() -> None:
    assert parse_seeds("0-2,7,1") == [0, 1, 2, 7]
    for bad in ("", "3-1", "a"):
        with pytest.raises(InputError):
            parse_seeds(bad)


def test_shards_from_flags_torchrun_and_slurm_split_ids_exactly() -> None:
    assert detect_shard({}) == Shard()
    torchrun = detect_shard({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (torchrun.rank, torchrun.world, torchrun.local_rank) == (3, 4, 1)
    array = detect_shard({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "3",
                          "SLURM_NTASKS": "2", "SLURM_PROCID": "1"})
    assert (array.rank, array.world) == (5, 6)
    older = detect_shard({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "7"})
    assert (older.rank, older.world) == (3, 8)
    with pytest.raises(InputError, match="--shard"):
        detect_shard({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MAX": "9", "SLURM_ARRAY_TASK_STEP": "3"})
    assert detect_shard({"RANK": "0", "WORLD_SIZE": "8"}, explicit="1/2") == parse_shard("1/2")
    with pytest.raises(InputError):
        parse_shard("2/2")
    ids = [f"{n:04x}" for n in range(103)]
    shares = [Shard(r, 4).take(list(reversed(ids))) for r in range(4)]
    assert sorted(i for share in shares for i in share) == sorted(ids)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_a_torn_manifest_line_is_ignored_and_cut_before_the_next_append(tmp_path: Path) -> None:
    path = part_path(tmp_path, 0)
    path.write_text('{"id": "a", "file": "x"}\n{"id": "b", "fi', encoding="utf-8")
    assert [ln["id"] for ln in read_lines(path)] == ["a"]
    with PartWriter(path) as writer:
        writer.append({"id": "c", "file": "y"})
    assert [ln["id"] for ln in read_lines(path)] == ["a", "c"]
    assert path.read_text().endswith("\n") and path.read_text().count("\n") == 2


def test_bench_eval_report_end_to_end_on_an_analytic_pair(tmp_path: Path) -> None:
    run = tmp_path / "run"
    facts = invoke_json("bench", "gmm-1d", "--seeds", "0-3", *FAST, "--out", run)
    assert facts["rendered"] == 20 and facts["complete"] and facts["world"] == 1
    files = sorted((run / "items").glob("*.npy"))
    assert len(files) == 20
    again = invoke_json("bench", "gmm-1d", "--seeds", "0-3", *FAST, "--out", run)
    assert (again["rendered"], again["skipped"]) == (0, 20)
    scored = invoke_json("eval", run)
    assert scored["scored"] == {"mixture-stats": 20}
    assert invoke_json("eval", run)["scored"] == {"mixture-stats": 0}
    report = invoke_json("report", run)
    kl = {r["method"]: r for r in report["rows"] if r["metric"] == "mixture-stats.kl_to_ideal"}
    assert kl["w2sd"]["mean"] < kl["strong"]["mean"] < kl["weak"]["mean"]
    vs = kl["w2sd"]["vs_strong"]
    assert vs["low"] <= vs["diff"] <= vs["high"] < 0 and vs["win_rate"] == 1.0 and vs["units"] == 4
    share = {r["method"]: r["mean"] for r in report["rows"] if r["metric"] == "mixture-stats.underweighted_share"}
    assert share["strong"] == pytest.approx(0.30, abs=0.05) and share["w2sd"] > 0.4
    assert report["cost"]["w2sd"]["nfe"] == 12 + 2 * 11 and report["cost"]["strong"]["nfe"] == 12
    html = Path(report["files"]["html"]).read_text()
    assert html.count("data:image/png;base64,") >= 2 + 3 and "<script" not in html
    table = invoke("report", run).output
    assert "paired by seed" in table and "w2sd" in table and "Δ vs" in table


def test_a_run_folder_refuses_another_plan(tmp_path: Path) -> None:
    invoke("bench", "gmm-1d", "--seeds", "0", *FAST, "--out", tmp_path)
    with pytest.raises(InputError, match="differs in settings_digest"):
        bench(BenchRequest(pair="gmm-1d", out=tmp_path, seeds="0", samples=400, steps=13))
    with pytest.raises(InputError, match="ignores prompts"):
        bench(BenchRequest(pair="gmm-1d", out=tmp_path / "b", prompts="drawbench"))
    with pytest.raises(InputError, match=r"Unknown method .nope."):
        bench(BenchRequest(pair="gmm-1d", out=tmp_path / "c", methods=("w2sd", "nope")))


def test_two_shards_merge_into_the_unsharded_manifest(tmp_path: Path) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    invoke("bench", "gmm-2d", "--seeds", "0-2", *FAST, "--out", whole)
    first = invoke_json("bench", "gmm-2d", "--seeds", "0-2", *FAST, "--out", split, "--shard", "0/2")
    assert not first["complete"] and first["rendered"] == 8
    last = invoke_json("bench", "gmm-2d", "--seeds", "0-2", *FAST, "--out", split, "--shard", "1/2")
    assert last["complete"] and last["rendered"] == 7
    assert manifest(split) == manifest(whole)
    ranks = {ln["rank"] for ln in read_lines(split / "manifest.jsonl")}
    assert ranks == {0, 1} and (split / "manifest.rank-1.jsonl").exists()
    plan = read_plan(split)
    assert merge(split, plan["ids"]).complete


def test_paired_bootstrap_interval_and_win_rate() -> None:
    comparison = paired([1.0, 2.0, 3.0, 5.0], [1.0, 1.0, 1.0, 1.0])
    assert comparison.diff == pytest.approx(1.75)
    assert comparison.low is not None and comparison.high is not None
    assert 0 <= comparison.low < 1.75 < comparison.high <= 4
    assert comparison.win_rate == pytest.approx(0.875)
    assert paired([1.0, 2.0], [2.0, 3.0], sign=-1).win_rate == 1.0
    assert paired([1.0], [0.0]).low is None


def test_pairs_check_says_better_for_a_good_pair_and_worse_for_a_wrong_way_pair(tmp_path: Path) -> None:
    good = invoke_json("pairs", "check", "gmm-1d", "--count", "2", "--seed-count", "2", *FAST, "--out", tmp_path / "a")
    assert good["verdict"] == "better" and good["units"] == 4 and good["diff"] < 0
    bad = invoke("pairs", "check", "gmm-1d-wrong-way", "--count", "2", "--seed-count", "2", *FAST,
                 "--out", tmp_path / "b").output
    assert "WORSE" in bad and "95% CI" in bad


def test_report_json_is_written_beside_the_run(tmp_path: Path) -> None:
    invoke("bench", "gmm-1d", "--seeds", "0-1", *FAST, "--out", tmp_path)
    invoke("eval", tmp_path)
    invoke("report", tmp_path, "--no-plots", "--no-html")
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["unit"] == "seed" and data["done"] == data["total"] == 10
    assert not (tmp_path / "report" / "index.html").exists()


class _ShardsInTurn:
    """A stand-in for a cluster executor: runs both shards of the job here, one after the other."""

    name = "two-shards"
    summary = "test executor"

    def execute(self, job: Any, observer: Any = None) -> Any:
        from w2sd_cli.bench.runner import BenchOutcome, run_share

        rendered = sum(run_share(job, Shard(rank, 2, 0, "test"), observer).rendered for rank in range(2))
        return BenchOutcome(job.run_dir, job.shard, self.name, rendered, 0, merge(job.run_dir, job.plan["ids"]))


class _ExecutorPlugin:
    @hookimpl
    def register_executors(self, register: Any) -> None:
        register(_ShardsInTurn())


def test_a_plugin_executor_runs_shards_through_the_same_building_blocks(tmp_path: Path) -> None:
    from w2sd_cli.plugins import get_host

    get_host().add(_ExecutorPlugin(), "test-executor", "test")
    invoke("bench", "gmm-1d", "--seeds", "0-2", *FAST, "--out", tmp_path / "local")
    facts = invoke_json("bench", "gmm-1d", "--seeds", "0-2", *FAST, "--out", tmp_path / "plugin",
                        "--executor", "two-shards")
    assert facts["complete"] and facts["rendered"] == 15
    assert manifest(tmp_path / "plugin") == manifest(tmp_path / "local")
    with pytest.raises(InputError, match="Did you mean 'two-shards'"):
        bench(BenchRequest(pair="gmm-1d", out=tmp_path / "x", executor="two-shard"))
    assert not (tmp_path / "x").exists()


class _FlakyPair:
    """A plugin kind's loaded pair: seed 1's noise is NaN until FLAKY_FIXED is set."""

    def prepare(self, condition: Any, settings: Any) -> Any:
        import os

        import torch

        from w2sd_cli.plugin import PreparedPair, VPSchedule

        schedule = VPSchedule.linear()

        def noise(seed: int) -> Any:
            value = float("nan") if seed == 1 and not os.environ.get("FLAKY_FIXED") else float(seed)
            return torch.full((3, 1), value, dtype=torch.float64)

        def zero(x: Any, t: float) -> Any:
            return torch.zeros_like(x)

        return PreparedPair(strong=zero, weak=zero, final=zero, weak_plain=zero, schedule=schedule,
                            grid=schedule.timesteps(3), make_grid=schedule.timesteps, noise=noise)

    def decode(self, x: Any, count: int) -> list[Any]:
        return [part.numpy() for part in x.chunk(count)]

    def provenance(self) -> dict[str, Any]:
        return {"device": "test"}


class _FlakyKind(PairKind):
    name = "flaky"
    summary = "test kind written against the public plugin API"
    output = "samples"
    conditioning = "none"

    def load(self, card: Any, settings: Any) -> Any:
        return _FlakyPair()


class _FlakyPlugin:
    @hookimpl
    def register_pair_kinds(self, register: Any) -> None:
        register(_FlakyKind())

    @hookimpl
    def register_pairs(self, register: Any) -> None:
        register({"schema": 1, "name": "flaky-pair", "kind": "flaky", "description": "test pair"})


def test_a_plugin_kind_renders_and_keep_going_logs_failures_for_a_retry(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from w2sd_cli.plugins import get_host

    get_host().add(_FlakyPlugin(), "test-flaky", "test")
    with pytest.raises(ModelError, match="seed 1"):
        bench(BenchRequest(pair="flaky-pair", out=tmp_path, seeds="0-2", methods=("strong",)))
    facts = invoke_json("bench", "flaky-pair", "--seeds", "0-2", "--methods", "strong", "--keep-going",
                        "--out", tmp_path)
    assert (facts["rendered"], facts["failed"], facts["complete"]) == (1, 1, False)
    assert "NaN" in read_lines(tmp_path / "failures.rank-0.jsonl")[0]["error"]
    assert invoke_json("report", tmp_path, "--no-plots")["failed"] == 1
    monkeypatch.setenv("FLAKY_FIXED", "1")
    retry = invoke_json("bench", "flaky-pair", "--seeds", "0-2", "--methods", "strong", "--out", tmp_path)
    assert (retry["rendered"], retry["skipped"], retry["complete"]) == (1, 2, True)
    assert invoke_json("report", tmp_path, "--no-plots")["failed"] == 0
    lines = read_lines(tmp_path / "manifest.jsonl")
    assert [ln["seed"] for ln in lines] == [0, 1, 2] and lines[0]["provenance"] == {"device": "test"}


def test_two_evals_at_once_score_each_item_once(tmp_path: Path) -> None:
    import threading

    from w2sd_cli.bench.evaluate import evaluate

    invoke("bench", "gmm-2d", "--seeds", "0-3", *FAST, "--out", tmp_path)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(evaluate(tmp_path))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.scored["mixture-stats"] for r in results) == [0, 20]
    assert len(read_lines(tmp_path / "scores" / "mixture-stats.jsonl")) == 20


def test_executor_flags_are_sugar_for_executor_options_and_typos_are_errors(tmp_path: Path) -> None:
    from w2sd_cli.bench.runner import executor_flags

    assert executor_flags(["--ray-address", "h:6379", "--ray-in-flight=3"], "ray") == {"address": "h:6379",
                                                                                      "in-flight": "3"}
    with pytest.raises(InputError, match="No such option '--sedds'"):
        executor_flags(["--sedds", "0-3"], "local")
    from typer.testing import CliRunner

    from w2sd_cli.cli import build_app

    result = CliRunner().invoke(build_app(), ["bench", "gmm-1d", "--sedds", "0-3", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "No such option '--sedds'" in result.output
    result = CliRunner().invoke(build_app(), ["bench", "gmm-1d", "--local-speed", "2", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "has no option 'speed'" in result.output
    assert not (tmp_path / "run.json").exists()
