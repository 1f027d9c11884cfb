"""The CLI through CliRunner and, for the main paths, as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from w2sd_cli.cli import build_app

SNAPSHOTS = Path(__file__).parent / "snapshots"
RUNNER = CliRunner(env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})


def invoke(*args: str) -> object:
    return RUNNER.invoke(build_app(), list(args))


def w2sd(*args: str, home: Path, timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "W2SD_HOME": str(home), "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-m", "w2sd_cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)  # type: ignore[call-overload]


def test_help_snapshot() -> None:
    """`W2SD_UPDATE_SNAPSHOTS=1 pytest tests/test_cli.py -k snapshot` rewrites it after a deliberate change."""
    result = invoke("--help")
    assert result.exit_code == 0  # type: ignore[attr-defined]
    if os.environ.get("W2SD_UPDATE_SNAPSHOTS"):
        (SNAPSHOTS / "help.txt").write_text(result.stdout)  # type: ignore[attr-defined]
    expected = (SNAPSHOTS / "help.txt").read_text()
    assert result.stdout == expected  # type: ignore[attr-defined]


def test_pairs_list_and_show_json() -> None:
    listed = invoke("pairs", "list", "--json")
    names = {p["name"] for p in json.loads(listed.stdout)["pairs"]}  # type: ignore[attr-defined]
    assert {"gmm-1d", "gmm-2d", "gmm-1d-wrong-way"} <= names
    shown = json.loads(invoke("pairs", "show", "quadrants", "--json").stdout)  # type: ignore[attr-defined]
    assert shown["card"]["name"] == "gmm-2d"
    assert shown["resolved_defaults"]["lam"] == 49 and shown["kind"]["name"] == "analytic"


def test_pairs_list_human_output_goes_to_stderr() -> None:
    result = invoke("pairs", "list")
    assert result.exit_code == 0 and result.stdout == ""  # type: ignore[attr-defined]
    assert "gmm-2d" in result.stderr  # type: ignore[attr-defined]


BAD_INPUTS = [
    (["gen", "--pair", "gmm-3d"], 1, "Did you mean"),
    (["pairs", "show", "nope"], 1, "No pair called 'nope'"),
    (["gen", "--pair", "gmm-1d", "--steps", "0"], 2, "--steps"),
    (["gen", "--pair", "gmm-1d", "--steps", "many"], 2, "--steps"),
    (["gen", "--pair", "gmm-1d", "--steps", "5", "--lambda", "9"], 1, "--lambda 9 exceeds --steps 5"),
    (["gen", "--pair", "gmm-1d", "--seed", "-3"], 2, "--seed"),
    (["gen", "--pair", "gmm-1d", "--rounds", "0"], 2, "--rounds"),
    (["gen", "--pair", "gmm-1d", "--bogus"], 2, "No such option"),
    (["pairs", "frobnicate"], 2, "No such command"),
    (["frobnicate"], 2, "No such command"),
    (["gen", "--pair", "gmm-1d", "--cfg", "-1"], 1, "--cfg"),
    (["gen", "--pair", "gmm-1d", "--num-images", "0"], 2, "--num-images"),
]


@pytest.mark.parametrize(("args", "code", "text"), BAD_INPUTS, ids=[" ".join(a) for a, _, _ in BAD_INPUTS])
def test_bad_cli_input_gives_one_clear_error(args: list[str], code: int, text: str) -> None:
    result = invoke(*args)
    assert result.exit_code == code  # type: ignore[attr-defined]
    assert text in result.output  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]


def test_malformed_user_card_is_a_clear_error_on_use(isolated_home: Path) -> None:
    (isolated_home / "pairs").mkdir()
    (isolated_home / "pairs" / "mine.yaml").write_text(
        "schema: 1\nname: mine\nkind: analytic\ndescription: d\noptions: {ideal: {weights: [1], means: [[0]], "
        "stds: 1}}\n")
    result = invoke("gen", "--pair", "mine")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert "analytic pairs need `strong.mixture`" in result.output  # type: ignore[attr-defined]


def test_debug_env_shows_tracebacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("W2SD_DEBUG", "1")
    result = invoke("pairs", "show", "nope")
    assert result.exit_code == 1 and result.exception is not None  # type: ignore[attr-defined]


def test_gen_analytic_via_cli_runner(tmp_path: Path) -> None:
    result = invoke("gen", "--pair", "gmm-1d", "--samples", "2000", "--steps", "20", "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    summary = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert summary["methods"]["w2sd"]["nfe"] == 20 + 2 * 19
    assert summary["methods"]["extrapolate"]["nfe"] == 40
    png = Path(summary["files"][0])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analytic_oracles_through_the_cli_subprocess(tmp_path: Path) -> None:
    """The core issue's §5 numbers, reproduced by the installed command as a user would run it."""
    one = w2sd("gen", "--pair", "gmm-1d", "--out", str(tmp_path), "--json", home=tmp_path)
    assert one.returncode == 0, one.stderr
    methods = json.loads(one.stdout)["methods"]
    assert abs(methods["strong"]["underweighted_share"] - 0.30) < 0.015
    assert 0.47 <= methods["w2sd"]["underweighted_share"] <= 0.55

    two = w2sd("gen", "--pair", "gmm-2d", "--out", str(tmp_path), "--json", home=tmp_path)
    methods = json.loads(two.stdout)["methods"]
    assert 0.055 <= methods["strong"]["kl_to_ideal"] <= 0.09
    assert methods["w2sd"]["kl_to_ideal"] <= 0.02
    assert methods["w2sd"]["mean_loglik"] < methods["strong"]["mean_loglik"] + 0.1

    wrong = w2sd("gen", "--pair", "gmm-1d-wrong-way", "--out", str(tmp_path), "--json", home=tmp_path)
    methods = json.loads(wrong.stdout)["methods"]
    assert methods["w2sd"]["underweighted_share"] < methods["strong"]["underweighted_share"] - 0.05


def test_ctrl_c_exits_130_and_leaves_no_partial_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "W2SD_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "w2sd_cli", "gen", "--pair", "gmm-2d", "--samples", "400000",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Interrupted" in stderr
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("args", [["--help"], ["pairs", "list"], ["pairs", "show", "gmm-2d"], ["plugins"]])
def test_fast_paths_import_no_heavy_library(args: list[str], tmp_path: Path) -> None:
    """`w2sd --help` and `w2sd pairs list` must stay fast: no torch, diffusers, transformers or peft on their path."""
    code = ("import sys; from w2sd_cli.cli import main; sys.argv = ['w2sd', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'peft', 'huggingface_hub', 'matplotlib')"
            " if m in sys.modules)\nprint('HEAVY', heavy, file=sys.stderr)")
    env = {**os.environ, "W2SD_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=60)
    assert "HEAVY []" in result.stderr, result.stderr[-2000:]


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("w2sd ")  # type: ignore[attr-defined]
