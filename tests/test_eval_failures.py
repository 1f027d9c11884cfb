"""A metric that raises on one item: `w2sd eval` names the metric and the item, keeps every other score,
finishes the other items and metrics, says how many failed and exits 1; `w2sd report` shows the scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from typer.testing import CliRunner

from tests import bench_instant
from tests.bench_helpers import invoke, invoke_json, prompt_file
from w2sd_cli.hookspecs import hookimpl

RUNNER = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
PROMPTS = ["a fox", "a cat w2sd+5"]  # the cat's W2SD images are 5 levels brighter: seed 1 is level 106
ITEMS = 2 * 3 * 2  # prompts × seeds 0-2 × methods strong,w2sd


class Flaky:
    """The grey level, except on one image (level 106 of the cat prompt), where it raises like a broken model."""

    name = "flaky"
    summary = "grey level, but raises on one item (test metric)"
    directions: ClassVar[dict[str, int]] = {"score": 1}
    broken = True
    always = False
    calls = 0

    def score(self, images: Any, prompts: Any) -> list[dict[str, float]]:
        Flaky.calls += 1
        levels = [float(np.asarray(im.convert("RGB"))[4, 4, 1]) for im in images]
        for level, prompt in zip(levels, prompts, strict=True):
            if Flaky.always or (Flaky.broken and "cat" in prompt and level == 106):
                raise RuntimeError("CUDA error: device-side assert triggered")
        return [{"score": level} for level in levels]


class FlakyPlugin:
    @hookimpl
    def register_metrics(self, register: Any) -> None:
        register(Flaky())


def _install() -> None:
    from w2sd_cli.plugins import get_host

    bench_instant.install()
    get_host().add(FlakyPlugin(), "test-flaky", "test")


def _run(tmp_path: Path) -> Path:
    _install()
    Flaky.broken, Flaky.always = True, False
    run = tmp_path / "run"
    invoke("bench", "instant", "--prompts", prompt_file(tmp_path, PROMPTS), "--seeds", "0-2", "--methods",
           "strong,w2sd", "--out", run)
    return run


def _eval(run: Path, *args: str) -> Any:
    from w2sd_cli.cli import build_app

    return RUNNER.invoke(build_app(), ["eval", str(run), *args])


def _rows(run: Path, metric: str) -> dict[str, float]:
    path = run / "scores" / f"{metric}.jsonl"
    return {row["id"]: row["values"]["score"] for row in map(json.loads, path.read_text().splitlines())}


def test_a_metric_failing_on_one_item_names_it_keeps_the_rest_and_the_report_shows_them(tmp_path: Path) -> None:
    run = _run(tmp_path)
    result = _eval(run, "--metric", "flaky", "--metric", "level")
    text = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "This is a bug" not in text
    [failure] = [json.loads(line) for line in (run / "scores" / "flaky.failures.jsonl").read_text().splitlines()]
    assert (failure["prompt"], failure["seed"], failure["method"]) == ("a cat w2sd+5", 1, "w2sd")
    assert (f"metric flaky failed on item {failure['id']} (prompt 1 'a cat w2sd+5', seed 1, method w2sd): "
            "RuntimeError: CUDA error: device-side assert triggered") in text
    assert f"metric flaky failed on 1 of {ITEMS} items" in text
    assert "flaky: scored 11, kept 0 earlier scores, failed on 1" in text
    flaky, level = _rows(run, "flaky"), _rows(run, "level")
    assert len(flaky) == ITEMS - 1 and failure["id"] not in flaky, "the batch's other items are scored"
    assert len(level) == ITEMS, "the next metric still ran"
    assert all(flaky[i] == level[i] for i in flaky)

    report = invoke_json("report", run)
    assert "flaky" in report["metrics"] and "level" in report["metrics"]
    human = invoke("report", run)
    assert "no scores yet" not in human.output


def test_the_rerun_scores_only_the_failed_item_and_clears_the_failure(tmp_path: Path) -> None:
    run = _run(tmp_path)
    assert _eval(run, "--metric", "flaky").exit_code == 1
    Flaky.broken, Flaky.calls = False, 0
    again = _eval(run, "--metric", "flaky", "--json")
    assert again.exit_code == 0, again.output
    facts = json.loads(again.stdout)
    assert (facts["scored"], facts["reused"], facts["failed"]) == ({"flaky": 1}, {"flaky": ITEMS - 1}, {})
    assert Flaky.calls == 1 and len(_rows(run, "flaky")) == ITEMS
    assert not (run / "scores" / "flaky.failures.jsonl").exists()


def test_json_output_lists_the_failures_and_still_exits_1(tmp_path: Path) -> None:
    run = _run(tmp_path)
    result = _eval(run, "--metric", "flaky", "--json")
    assert result.exit_code == 1
    facts = json.loads(result.stdout)
    assert facts["failed"] == {"flaky": 1} and facts["scored"] == {"flaky": ITEMS - 1}
    assert facts["failures"]["flaky"][0]["error"].startswith("RuntimeError: CUDA error")


def test_a_metric_that_fails_everything_is_stopped_and_the_report_says_so(tmp_path: Path) -> None:
    run = _run(tmp_path)
    Flaky.always = True
    result = _eval(run, "--metric", "flaky", "--metric", "level", "--batch-size", "1")
    text = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "metric flaky failed on 10 of 12 items (stopped after 10 failures without one score; 2 items were not " \
           "tried)" in text
    assert len(_rows(run, "level")) == ITEMS
    assert not (run / "scores" / "flaky.meta.json").exists()


def test_scores_without_their_description_are_not_called_no_scores(tmp_path: Path) -> None:
    """An eval killed after its first batch leaves scores but no METRIC.meta.json (the old code wrote it last)."""
    run = _run(tmp_path)
    assert _eval(run, "--metric", "level").exit_code == 0
    (run / "scores" / "level.meta.json").unlink()
    human = invoke("report", run)
    text = " ".join(human.output.split())
    assert "no scores yet" not in text
    assert f"scores of level are in {run / 'scores'} but their description (METRIC.meta.json) is missing" in text
    assert _eval(run, "--metric", "level").exit_code == 0
    assert "level" in invoke_json("report", run)["metrics"]



def test_pairs_check_stops_naming_the_failed_item_instead_of_judging_fewer(tmp_path: Path) -> None:
    from w2sd_cli.cli import build_app

    _install()
    Flaky.broken, Flaky.always = True, False
    prompts = prompt_file(tmp_path, PROMPTS)
    result = RUNNER.invoke(build_app(), ["pairs", "check", "instant", "--prompts", str(prompts), "--count", "2",
                                         "--seed-count", "3", "--metric", "flaky", "--out", str(tmp_path / "c")])
    text = " ".join(result.output.split())
    assert result.exit_code == 1, text
    assert "This is a bug" not in text
    assert "metric flaky failed on item " in text and "(prompt 1 'a cat w2sd+5', seed 1, method w2sd)" in text
    assert "metric flaky failed on 1 of 12 items" in text
