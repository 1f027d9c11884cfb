"""The report's numbers checked against an independent recomputation, on an instant test pair (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests import bench_instant
from tests.bench_helpers import invoke, invoke_json, prompt_file


def _run(tmp_path: Path, rows: list[str], seeds: str = "0-2", methods: str = "weak,strong,w2sd") -> Path:
    bench_instant.install()
    prompts = prompt_file(tmp_path, rows, "prompts.csv")
    run = tmp_path / "run"
    invoke("bench", "instant", "--prompts", prompts, "--seeds", seeds, "--methods", methods, "--out", run)
    invoke("eval", run, "--metric", "level")
    return run


def test_per_category_diversity_uses_only_that_categorys_prompts(tmp_path: Path) -> None:
    rows = ["prompt,category", "a fox,varied", "a cat,varied", "same tree,flat", "same rock,flat", "same sea,flat"]
    run = _run(tmp_path, rows)
    report = invoke_json("report", run, "--no-plots", "--no-html")
    groups = [json.loads(x) for x in (run / "scores" / "level.diversity.jsonl").read_text().splitlines()]
    by_prompt = {(g["prompt_index"], g["method"]): g["value"] for g in groups}
    categories = {0: "varied", 1: "varied", 2: "flat", 3: "flat", 4: "flat"}
    for row in report["categories"]:
        if row["metric"] != "level.diversity":
            continue
        mine = [v for (index, method), v in by_prompt.items()
                if method == row["method"] and categories[index] == row["category"]]
        assert row["n"] == len(mine) and row["mean"] == pytest.approx(float(np.mean(mine)))
    flat = [r for r in report["categories"] if r["metric"] == "level.diversity" and r["category"] == "flat"]
    assert flat and all(r["mean"] == pytest.approx(0, abs=1e-6) for r in flat)
    overall = next(r for r in report["rows"] if r["metric"] == "level.diversity" and r["method"] == "w2sd")
    assert overall["mean"] > 0
    table = invoke("report", run, "--no-plots", "--no-html").output
    assert "level.diversity (flat)" in table


def test_a_csv_needs_a_named_prompt_column_and_keeps_its_first_prompt(tmp_path: Path) -> None:
    from w2sd_cli.bench.prompts import load_prompt_set
    from w2sd_cli.errors import InputError

    with_ids = prompt_file(tmp_path, ["id,description", "1,a red fox", "2,a blue car"], "ids.csv")
    with pytest.raises(InputError, match=r"'id', 'description'.*header line such as `prompt,category`"):
        load_prompt_set(str(with_ids))
    bare = prompt_file(tmp_path, ["a red fox", "a blue car", "a green tree"], "bare.csv")
    with pytest.raises(InputError, match=r"first row is 'a red fox'"):
        load_prompt_set(str(bare))
    named = prompt_file(tmp_path, ["id,Caption", "1,a red fox", "2,a blue car"], "named.csv")
    assert [p.text for p in load_prompt_set(str(named)).prompts] == ["a red fox", "a blue car"]


def test_prompts_from_a_pipe_as_bash_process_substitution_gives_them(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    code = ("import sys, json; from w2sd_cli.bench.prompts import load_prompt_set; "
            "s = load_prompt_set(sys.argv[1]); print(json.dumps([s.sha256 is not None, "
            "[(p.text, p.category) for p in s.prompts]]))")
    cases = {"printf 'a red fox\\na blue car\\n'": [["a red fox", None], ["a blue car", None]],
             "printf 'prompt,category\\na red fox,animal\\n'": [["a red fox", "animal"]],
             "printf '{\"prompt\": \"a fox\"}\\n'": [["a fox", None]]}
    for producer, expected in cases.items():
        done = subprocess.run(["bash", "-c", f'"$0" -c "$1" <({producer})', sys.executable, code],
                              capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [True, expected]


def test_pairs_check_gives_both_means_and_says_when_both_sides_are_pinned(tmp_path: Path) -> None:
    bench_instant.install()
    flat = prompt_file(tmp_path, ["same fox", "same cat"])
    args = ("pairs", "check", "instant", "--prompts", flat, "--count", "2", "--seed-count", "2")
    pinned = invoke(*args, "--metric", "level", "--out", tmp_path / "a").output
    assert "both score 100 on every prompt" in pinned and "cannot show a difference" in pinned
    assert "no clear difference" not in pinned and "mean 100 (W2SD) vs 100 (strong)" in pinned
    best = invoke_json(*args, "--metric", "image-stats", "--key", "clipped", "--out", tmp_path / "b")
    assert best["ceiling"] is True and best["best"] == 0 and best["mean"] == best["baseline_mean"] == 0
    assert "best value" in invoke(*args, "--metric", "image-stats", "--key", "clipped", "--out",
                                  tmp_path / "b").output
    varied = prompt_file(tmp_path, ["a fox w2sd+5", "a cat w2sd+7"], "varied.txt")
    result = invoke_json("pairs", "check", "instant", "--prompts", varied, "--count", "2", "--seed-count", "2",
                         "--metric", "level", "--out", tmp_path / "c")
    assert result["mean"] - result["baseline_mean"] == pytest.approx(6) and not result["ceiling"]
    assert result["constant"] is None and "fewer than 10" in result["warning"]


def test_signed_deltas_ties_count_half_and_small_n_warnings(tmp_path: Path) -> None:
    rows = ["prompt", "one w2sd+5", "two", "three", "four w2sd-3"]
    run = _run(tmp_path, rows, seeds="0")
    report = invoke_json("report", run, "--no-plots", "--no-html")
    w2sd = next(r for r in report["rows"] if r["metric"] == "level" and r["method"] == "w2sd")["vs_strong"]
    assert w2sd["win_rate"] == pytest.approx((1 + 0.5 * 2) / 4) and w2sd["diff"] == pytest.approx(0.5)
    assert any("Only 4 prompts" in w for w in report["warnings"])
    table = invoke("report", run, "--no-plots", "--no-html").output
    assert "+0.5" in table and "-40" in table, "Δ shows its sign, up and down"
    assert "ties count half" in table and "warning: Only 4 prompts" in table
    many = _run(tmp_path / "many", ["prompt", *(f"prompt {n}" for n in range(10))], seeds="0")
    assert invoke_json("report", many, "--no-plots", "--no-html")["warnings"] == []


def test_message_slips(tmp_path: Path) -> None:
    from w2sd_cli.bench.metrics.base import MetricLoad, get_metric
    from w2sd_cli.errors import InputError, OfflineError
    from w2sd_cli.paths import registry_dir

    invoke("bench", "gmm-1d", "--seeds", "0", "--samples", "50", "--steps", "4", "--methods", "strong",
           "--out", tmp_path / "run")
    from w2sd_cli.bench.evaluate import evaluate

    with pytest.raises(InputError, match=r"made sample sets;") as err:
        evaluate(tmp_path / "run", ["image-stats"])
    assert "sampless" not in str(err.value)
    with pytest.raises(InputError) as err:
        get_metric("nosuchmetric")
    assert "Did you mean" not in str(err.value) and "Installed metrics" in str(err.value)
    with pytest.raises(InputError, match="Did you mean 'pickscore'"):
        get_metric("pickscor")
    with pytest.raises(InputError, match="Did you mean 'image-stats'"):
        get_metric("stats")
    with pytest.raises(OfflineError) as offline:
        get_metric("pickscore").load(MetricLoad(device="cpu", offline=True))
    text = str(offline.value)
    shipped = registry_dir() / "metrics" / "pickscore.yaml"
    assert f"copy the card {shipped}" in text and shipped.is_file() and "laion/CLIP-ViT-H-14" in text
