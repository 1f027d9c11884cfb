"""Shell completion through click's own machinery: commands, pair names (and a user's card), metric names."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from w2sd_cli.cli import build_app

REGISTRY = Path(__file__).resolve().parents[1] / "registry" / "pairs"


def complete(line: str) -> list[str]:
    """What bash completion offers for ``line`` (the word after the last space is the one being completed)."""
    words = line.split(" ")
    env = {"_W2SD_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    result = CliRunner().invoke(build_app(), [], env=env, prog_name="w2sd")
    assert result.exit_code == 0, result.output
    return [w for w in result.stdout.split("\n") if w]


def test_commands_complete() -> None:
    assert {"gen", "pairs", "pull", "bench", "eval", "cache"} <= set(complete("w2sd "))
    assert complete("w2sd pairs s") == ["show"]


@pytest.mark.parametrize("line", ["w2sd gen --pair ", "w2sd gen -p ", "w2sd pairs show ", "w2sd pull ",
                                  "w2sd pull shapes ", "w2sd bench "])
def test_pair_names_and_aliases_complete(line: str) -> None:
    offered = complete(line)
    assert {"shapes", "toy", "gmm-2d", "quadrants", "hd-lora"} <= set(offered)


def test_pair_completion_filters_by_prefix_and_knows_qualified_names() -> None:
    assert complete("w2sd pairs show gmm-") == ["gmm-1d", "gmm-1d-wrong-way", "gmm-2d"]
    assert "w2sd:gmm-2d" in complete("w2sd gen --pair w2sd:gmm")
    assert complete("w2sd gen --pair no-such-") == []


def test_a_users_own_card_completes(isolated_home: Path) -> None:
    card = (REGISTRY / "gmm-1d.yaml").read_text().replace("name: gmm-1d", "name: my-mixture").replace(
        "aliases: [bimodal]", "aliases: [mine]")
    (isolated_home / "pairs").mkdir()
    (isolated_home / "pairs" / "my-mixture.yaml").write_text(card)
    assert {"my-mixture", "mine"} <= set(complete("w2sd gen --pair m"))


def test_metric_names_complete() -> None:
    assert {"shapes-checker", "mixture-stats", "image-stats"} <= set(complete("w2sd eval run -m "))
    assert complete("w2sd eval run --metric mix") == ["mixture-stats"]
    assert complete("w2sd pairs check shapes -m shapes") == ["shapes-checker"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_installed_bash_completion_completes_pair_names_without_torch(tmp_path: Path) -> None:
    """``--install-completion`` from a bash writes the script ``--show-completion`` prints; sourcing it and pressing
    Tab (the completion function, which runs ``w2sd`` itself) offers pair names, and no run imports torch."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    probe = ("import sys; from w2sd_cli.cli import main\ntry:\n    main()\nfinally:\n"
             "    print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=open(sys.argv[0] + '.log', 'a'))")
    (bin_dir / "w2sd.py").write_text(probe)
    (bin_dir / "w2sd").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{bin_dir / "w2sd.py"}" "$@"\n')
    (bin_dir / "w2sd").chmod(0o755)
    env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run(["bash", "-c", "w2sd --install-completion; true"], env=env, check=True, capture_output=True,
                   timeout=60)
    script = tmp_path / ".bash_completions" / "w2sd.sh"
    assert "_W2SD_COMPLETE" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()
    shown = subprocess.run(["bash", "-c", "w2sd --show-completion; true"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert shown.stdout.strip() == script.read_text().strip()
    function = re.search(r"-F (\S+) w2sd", script.read_text())
    assert function is not None
    tab = (f"source {script}; COMP_WORDS=(w2sd pairs show gmm-); COMP_CWORD=3; {function[1]} w2sd gmm- show; "
           "printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run(["bash", "-c", tab], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["gmm-1d", "gmm-1d-wrong-way", "gmm-2d"], done.stderr[-2000:]
    assert (bin_dir / "w2sd.py.log").read_text().split() == ["NO-TORCH"] * 3
