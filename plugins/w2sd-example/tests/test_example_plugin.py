"""The example plugin, installed with pip, appears in w2sd and its pair runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner


@pytest.fixture(autouse=True)
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from w2sd_cli import plugins
    from w2sd_cli.cli import build_app

    monkeypatch.setenv("W2SD_HOME", str(tmp_path))
    monkeypatch.delenv("W2SD_LOAD_PLUGINS", raising=False)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    plugins.reset()
    build_app.cache_clear()


def test_the_pair_is_listed_with_its_plugin() -> None:
    from w2sd_cli.cli import build_app

    result = CliRunner().invoke(build_app(), ["pairs", "list", "--json"])
    pairs = {p["name"]: p for p in json.loads(result.stdout)["pairs"]}
    assert pairs["ring-tempered"]["plugin"] == "example"
    assert pairs["ring-tempered"]["kind"] == "tempered"


def test_w2sd_flattens_the_tempered_ring(tmp_path: Path) -> None:
    from w2sd_cli.cli import build_app

    result = CliRunner().invoke(build_app(), ["gen", "--pair", "ring", "--samples", "4000", "--out", str(tmp_path),
                                              "--json"])
    assert result.exit_code == 0, result.output
    methods = json.loads(result.stdout)["methods"]
    assert methods["w2sd"]["kl_to_uniform"] < methods["strong"]["kl_to_uniform"] / 2
    assert methods["weak"]["kl_to_uniform"] > methods["strong"]["kl_to_uniform"]


def test_the_kind_works_in_bench_and_the_python_api(tmp_path: Path) -> None:
    import w2sd_cli
    from w2sd_cli.cli import build_app

    pair = w2sd_cli.load_pair("ring")
    [strong] = pair.generate(method="strong", samples=2000)
    [w2sd] = pair.generate(samples=2000)
    assert w2sd.verdicts["mode-balance"]["kl_to_uniform"] < strong.verdicts["mode-balance"]["kl_to_uniform"]
    result = CliRunner().invoke(build_app(), ["bench", "ring", "--seeds", "0-1", "--samples", "500", "--steps", "10",
                                              "--out", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["complete"]
    check = CliRunner().invoke(build_app(), ["pairs", "check", "ring", "--count", "4", "--seed-count", "1",
                                             "--samples", "1000", "--steps", "20", "--json"])
    assert check.exit_code == 0, check.output
    verdict = json.loads(check.stdout)
    assert verdict["metric"].startswith("mode-balance") and verdict["verdict"] == "better"
    assert verdict["mean"] < verdict["baseline_mean"]  # lower KL to uniform
