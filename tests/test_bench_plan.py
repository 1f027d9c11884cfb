"""`w2sd bench` says what it plans before rendering; shards write the same bytes; eval defaults; clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from w2sd_cli.hookspecs import hookimpl

SMALL = ("--samples", "60", "--steps", "3")


def cli(*args: Any) -> Any:
    from w2sd_cli.cli import build_app

    return CliRunner().invoke(build_app(), [str(a) for a in args])


def test_bench_prints_the_plan_before_rendering(tmp_path: Path) -> None:
    result = cli("bench", "gmm-1d", "--seeds", "0-3", "--methods", "strong,w2sd", *SMALL, "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "planned 8 items (1 prompts × 4 seeds × 2 methods): 8 to render, 0 already done" in text
    assert f"about {4 * (3 + (3 + 2 * 2))} network evaluations" in text
    assert text.index("planned") < text.index("rendered 8")
    again = " ".join(cli("bench", "gmm-1d", "--seeds", "0-3", "--methods", "strong,w2sd", *SMALL, "--out",
                         tmp_path / "r").output.split())
    assert "0 to render, 8 already done" in again


def test_a_huge_grid_is_announced_with_its_size() -> None:
    from w2sd_cli.bench.grid import Grid, Prompt, plan_summary, seed_ranges

    grid = Grid([Prompt(0, "")], seed_ranges("0-1000000000"), ["weak", "strong", "w2sd", "extrapolate",
                                                                 "first-order"], "c", "s")
    plan = plan_summary(grid, 50, 49, 1, len(grid), 0)
    assert plan["items"] == 5_000_000_005 and "planned 5,000,000,005 items" in plan["text"]
    assert plan["nfe"] == 1_000_000_001 * (50 + 50 + 148 + 100 + 150)


def test_a_sharded_run_writes_the_same_bytes_as_one_process(tmp_path: Path) -> None:
    grid = ("--seeds", "0-2", "--methods", "strong,w2sd", *SMALL)
    assert cli("bench", "gmm-1d", *grid, "--out", tmp_path / "one").exit_code == 0
    for rank in (0, 1):
        assert cli("bench", "gmm-1d", *grid, "--shard", f"{rank}/2", "--out", tmp_path / "two").exit_code == 0
    one = {p.name: p.read_bytes() for p in (tmp_path / "one" / "items").iterdir()}
    two = {p.name: p.read_bytes() for p in (tmp_path / "two" / "items").iterdir()}
    assert len(one) == 12 and one == two  # 6 sample sets and their recipes


def test_a_missing_executor_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("W2SD_LOAD_PLUGINS", "")
    result = cli("bench", "gmm-1d", "--executor", "ray", "--out", tmp_path / "r")
    assert result.exit_code == 1 and "pip install w2sd-ray" in " ".join(result.output.split())


def test_a_prompt_folder_is_not_reported_missing(tmp_path: Path) -> None:
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "mine.txt").write_text("a red circle\n", encoding="utf-8")
    result = cli("bench", "shapes", "--prompts", tmp_path / "set", "--out", tmp_path / "r")
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "is a folder, not a prompt file" in text and "mine.txt" in text


def test_json_stdout_stays_json_when_something_prints_during_the_run(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import os
        from w2sd_cli.cli.bench import stdout_for_json
        from w2sd_cli.cli.output import print_json
        with stdout_for_json(True):
            os.write(1, b"(raylet) A worker died or was killed\\n")
            print("a library's print")
        print_json({"done": 1})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"done": 1}
    assert "A worker died" in proc.stderr and "a library's print" in proc.stderr


class SamplesPlugin:
    """A plugin sample-set kind whose card names the plugin's own metric."""

    @hookimpl
    def register_pair_kinds(self, register: Callable[[Any], None]) -> None:
        from w2sd_cli.kinds.analytic import AnalyticKind

        class PluginGaussians(AnalyticKind):
            name = "plugin-gaussians"

        register(PluginGaussians())

    @hookimpl
    def register_pairs(self, register: Callable[[Any], None]) -> None:
        mixture = {"weights": [0.3, 0.7], "means": [[-4.0], [4.0]], "stds": 0.8}
        register({"schema": 1, "name": "plugin-samples", "kind": "plugin-gaussians", "description": "x",
                  "strong": {"mixture": mixture}, "weak": {"mixture": {**mixture, "weights": [0.1, 0.9]}},
                  "defaults": {"steps": 3, "samples": 60}, "metrics": ["sample-mean"],
                  "options": {"ideal": {**mixture, "weights": [0.5, 0.5]}}})

    @hookimpl
    def register_metrics(self, register: Callable[[Any], None]) -> None:
        class SampleMean:
            name, inputs, summary = "sample-mean", "samples", "the mean of the samples"

            def score(self, outputs: list[Any], prompts: list[str], card: Any = None) -> list[dict[str, float]]:
                return [{"mean": float(o.mean())} for o in outputs]

        register(SampleMean())


@pytest.fixture
def samples_plugin() -> Iterator[None]:
    from w2sd_cli.testing import installed_plugin

    with installed_plugin(SamplesPlugin()):
        yield


def test_eval_without_a_metric_uses_the_cards_metrics(samples_plugin: None, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("bench", "plugin-samples", "--seeds", "0-1", "--methods", "strong,w2sd", "--out", run).exit_code == 0
    result = cli("eval", run, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scored"] == {"sample-mean": 4}
