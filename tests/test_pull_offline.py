"""One `w2sd pull PAIR --metrics ...` against the local fake Hub and URL server, then the network off:
`pairs check`, `eval` and `report` run from what it fetched (the pair's prompt set and the metric's models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.store_fakes import FakeServer, sha256
from tests.test_bench_images import tiny_clip
from w2sd_cli.cli import build_app
from w2sd_cli.paths import registry_dir

RUNNER = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
CAPTIONS = b"caption\ntwo red circles on the left\na blue square at the top\n\na green triangle in the centre\n"


@pytest.fixture
def served(tmp_path: Path, isolated_home: Path) -> Iterator[FakeServer]:
    """A tiny CLIP standing in for PickScore on the fake Hub, the Pick-a-Pic captions on the URL server, and
    user cards pointing there: the `pickapic` prompt set, the `pickscore` metric and a shapes pair scored by it."""
    tiny_clip(tmp_path / "clip")
    fake = FakeServer(files={"/captions.csv": CAPTIONS}).start()
    fake.add_repo("org/tiny-clip", {p.relative_to(tmp_path / "clip").as_posix(): p.read_bytes()
                                    for p in (tmp_path / "clip").rglob("*") if p.is_file()})
    write(isolated_home / "prompts" / "pickapic.yaml", {
        "schema": 1, "name": "pickapic", "description": "test captions", "format": "csv", "text_column": "caption",
        "file": {"url": fake.url("/captions.csv"), "sha256": sha256(CAPTIONS), "size": len(CAPTIONS)}})
    write(isolated_home / "metrics" / "pickscore.yaml", {
        "schema": 1, "name": "pickscore", "description": "tiny CLIP",
        "models": {"model": {"repo_id": "org/tiny-clip", "allow_patterns": ["*.json", "*.safetensors"]},
                   "processor": {"repo_id": "org/tiny-clip", "allow_patterns": ["*.json", "*.txt"]}}})
    pair = yaml.safe_load((registry_dir() / "pairs" / "shapes.yaml").read_text())
    for ref in pair["models"].values():
        ref["path"] = str((registry_dir() / "pairs" / ref["path"]).resolve())
    write(isolated_home / "pairs" / "shapes-pick.yaml", pair | {"name": "shapes-pick", "aliases": [],
                                                                 "metrics": ["pickscore"]})
    yield fake
    fake.stop()


def write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))


def w2sd(home: Path, fake: FakeServer, *args: str, offline: bool) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import."""
    env = os.environ | {"HF_ENDPOINT": fake.url(""), "HF_HUB_OFFLINE": "1" if offline else "0",
                        "HF_HOME": str(home / "hf"), "W2SD_HOME": str(home), "W2SD_MIN_FREE_MB": "1",
                        "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5", "OMP_NUM_THREADS": "1",
                        "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "w2sd_cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow  # four CLI processes: about a minute on a busy 2-core machine
def test_after_one_pull_pairs_check_eval_and_report_run_offline(served: FakeServer, isolated_home: Path) -> None:
    before = RUNNER.invoke(build_app(), ["pairs", "check", "shapes-pick", "--offline", "--count", "2"])
    assert before.exit_code != 0 and "w2sd pull" in before.output, before.output

    pulled = w2sd(isolated_home, served, "pull", "shapes-pick", "--metrics", "pickscore", "--json", offline=False)
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    out = json.loads(pulled.stdout)
    assert set(out["prompts"]) == {"pickapic"} and Path(out["prompts"]["pickapic"]).read_bytes() == CAPTIONS
    assert set(out["metrics"]["pickscore"]) == {"model", "processor"}
    assert out["check_metrics"] == {"shapes-pick": "pickscore"}
    served.stop()

    checked = w2sd(isolated_home, served, "pairs", "check", "shapes-pick", "--count", "2", "--seed-count", "1",
                   "--steps", "4", "--json", offline=True)
    assert checked.returncode == 0, checked.stderr[-3000:]
    result = json.loads(checked.stdout)
    assert result["metric"] == "pickscore" and result["verdict"] in ("better", "worse", "unclear")
    run = Path(result["run_dir"])
    rows = [json.loads(line) for line in (run / "manifest.jsonl").read_text().splitlines()]
    assert {r["prompt"] for r in rows} == {"two red circles on the left", "a blue square at the top"}
    reported = w2sd(isolated_home, served, "report", str(run), offline=True)
    assert reported.returncode == 0, reported.stderr[-3000:]
    assert (run / "report" / "report.json").is_file()


def test_pull_fetches_the_check_prompt_set_and_names_the_metric_still_missing(
        served: FakeServer, isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from w2sd_cli.bench.prompts import load_prompt_set

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("W2SD_MIN_FREE_MB", "1")
    result = RUNNER.invoke(build_app(), ["pull", "shapes-pick"])
    assert result.exit_code == 0, result.output
    assert "prompt set pickapic ready" in result.output
    assert "`w2sd pairs check shapes-pick` scores with pickscore: add `--metrics pickscore`" in result.output
    served.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompts = load_prompt_set("pickapic", offline=True)
    assert [p.text for p in prompts.prompts] == ["two red circles on the left", "a blue square at the top",
                                                 "a green triangle in the centre"]


def test_pull_refuses_unknown_metrics_before_downloading_and_needs_something_to_pull(served: FakeServer) -> None:
    result = RUNNER.invoke(build_app(), ["pull", "shapes-pick", "--metrics", "pickscor"])
    assert result.exit_code != 0 and "pickscore" in result.output
    assert served.log == []
    result = RUNNER.invoke(build_app(), ["pull"])
    assert result.exit_code != 0 and "--metrics" in result.output
