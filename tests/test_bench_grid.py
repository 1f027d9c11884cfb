"""Grids are planned without listing them: huge seed ranges start at once, shares are exact and mixed, and
run folders of the earlier plan format resume (issue 15 item 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests import bench_instant
from tests.bench_helpers import invoke, invoke_json, manifest, prompt_file
from w2sd_cli.bench.grid import Grid, Prompt, Seeds, expand, seed_ranges
from w2sd_cli.bench.runner import PLAN, items_of, read_plan
from w2sd_cli.errors import InputError

HUGE = r"""
import json, resource, sys, time
from pathlib import Path
from tests import bench_instant
from w2sd_cli.bench.runner import BenchRequest, bench

bench_instant.install()
out, prompts = Path(sys.argv[1]), sys.argv[2]

def stop_after(count):
    seen = []
    def observer(info):
        if info.get("phase") == "plan":
            seen.append(info)
        if info.get("phase") == "item" and info["done"] == count:
            raise KeyboardInterrupt
    return observer, seen

facts = {}
for run, count in (("first", 3), ("resumed", 2)):
    started = time.perf_counter()
    observer, seen = stop_after(count)
    try:
        bench(BenchRequest(pair="instant", out=out, prompts=prompts, limit=1, seeds="0-100000000",
                           methods=("strong", "w2sd")), observer)
    except Exception as err:
        facts[run] = {"error": type(err).__name__, "seconds": time.perf_counter() - started, **seen[0]}
facts["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(facts))
"""


def test_a_hundred_million_seeds_with_limit_start_at_once_and_resume(tmp_path: Path) -> None:
    prompts = prompt_file(tmp_path, ["a fox", "a cat"])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", HUGE, str(tmp_path / "run"), str(prompts)], capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout)
    total = 2 * 100_000_001
    assert facts["first"]["error"] == "Interrupted" and facts["first"]["total"] == total
    assert (facts["resumed"]["skipped"], facts["resumed"]["total"]) == (3, total - 3)
    assert facts["first"]["seconds"] < 10 and facts["resumed"]["seconds"] < 10
    assert facts["maxrss_mb"] < 1500
    assert (tmp_path / "run" / PLAN).stat().st_size < 20_000
    bench_instant.install()
    report = invoke_json("report", tmp_path / "run", "--no-plots", "--no-html")
    assert (report["done"], report["total"]) == (5, total)
    lines = [json.loads(x) for x in (tmp_path / "run" / "manifest.jsonl").read_text().splitlines()]
    assert [(ln["seed"], ln["method"]) for ln in lines] == [(0, "strong"), (0, "w2sd"), (1, "strong"), (1, "w2sd"),
                                                            (2, "strong")]


def test_a_run_folder_of_plan_format_1_resumes_and_reports(tmp_path: Path) -> None:
    bench_instant.install()
    prompts = prompt_file(tmp_path, ["a fox", "a cat"])
    args = ("bench", "instant", "--prompts", prompts, "--seeds", "0-2,7,1", "--methods", "strong,w2sd")
    invoke(*args, "--out", tmp_path / "new")
    plan = json.loads((tmp_path / "new" / PLAN).read_text())
    assert plan["seeds"] == "0-2,7" and plan["items"] == 16 and "ids" not in plan
    old = tmp_path / "old"
    invoke(*args, "--out", old)
    stored = json.loads((old / PLAN).read_text())
    ids = [i.id for i in expand([Prompt(p["index"], p["text"], p["category"]) for p in stored["prompts"]],
                                [0, 1, 2, 7], stored["methods"], stored["card_digest"], stored["settings_digest"])]
    stored.update({"format": 1, "seeds": [0, 1, 2, 7], "ids": ids})
    del stored["items"]
    (old / PLAN).write_text(json.dumps(stored))
    again = invoke_json(*args, "--out", old)
    assert (again["rendered"], again["skipped"], again["complete"]) == (0, 16, True)
    assert list(read_plan(old)["ids"]) == ids == list(items_of(read_plan(tmp_path / "new")).ids)
    assert manifest(old) == manifest(tmp_path / "new")
    with pytest.raises(Exception, match="differs in seeds"):
        invoke_json("bench", "instant", "--prompts", prompts, "--seeds", "0-3", "--methods", "strong,w2sd",
                    "--out", old)


@pytest.mark.parametrize(("methods", "world"), [(2, 4), (5, 5), (5, 2), (3, 6), (1, 3)])
def test_shares_are_exact_disjoint_and_mix_the_methods(methods: int, world: int) -> None:
    names = ["weak", "strong", "w2sd", "extrapolate", "first-order"][:methods]
    grid = Grid([Prompt(i, f"p{i}") for i in range(7)], seed_ranges("0-9"), names, "c", "s")
    shares = [list(grid.share(rank, world)) for rank in range(world)]
    assert sorted(i.id for s in shares for i in s) == sorted(grid.ids)
    assert [len(s) for s in shares] == [grid.share_size(r, world) for r in range(world)]
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    for share in shares:
        per_method = Counter(i.method for i in share)
        expected = len(share) / methods
        assert all(abs(per_method[m] - expected) <= max(3, 0.35 * expected) for m in names), per_method
    positions = [grid.locate(i.as_dict()) for i in grid]
    assert positions == list(range(len(grid)))


def test_seed_ranges_keep_first_appearance_order_without_listing() -> None:
    seeds = seed_ranges("5-7,0-6,9,8")
    assert isinstance(seeds, Seeds) and list(seeds) == [5, 6, 7, 0, 1, 2, 3, 4, 9, 8]
    assert seeds.spec() == "5-7,0-4,9,8" and seeds.position(9) == 8 and 10 not in seeds
    big = seed_ranges("0-100000000,5")
    assert isinstance(big, Seeds) and len(big) == 100_000_001 and big[-1] == 100_000_000
    with pytest.raises(InputError, match="repeats an item"):
        Grid([Prompt(0, "a"), Prompt(1, "a")], [0], ["w2sd"], "c", "s").check_unique()
    with pytest.raises(InputError, match="repeats an item"):
        Grid([Prompt(0, "a")], [0], ["w2sd", "w2sd"], "c", "s").check_unique()
