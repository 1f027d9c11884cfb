"""Two `w2sd bench` processes on one run folder: the second is refused at once (naming the first and how to
shard) instead of rendering everything again; shards of one split run side by side; a killed holder's lock
is gone with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests import bench_instant
from tests.bench_helpers import prompt_file
from w2sd_cli.bench.manifest import read_lines

RUNNER = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
ITEMS = 2 * 3 * 2
HOLD = r"""
import sys, time
from pathlib import Path
from tests import bench_instant
from w2sd_cli.bench.runner import BenchRequest, bench

bench_instant.install()
out, prompts, shard, gate = Path(sys.argv[1]), sys.argv[2], sys.argv[3] or None, Path(sys.argv[4])

def observer(info):
    if info.get("phase") == "item" and info["done"] == 0 and not gate.exists():
        gate.with_suffix(".held").touch()
        while not gate.exists():
            time.sleep(0.02)

bench(BenchRequest(pair="instant", out=out, prompts=prompts, seeds="0-2", methods=("strong", "w2sd"),
                   shard=shard), observer)
"""


class Holder:
    """A real `w2sd bench` process that stops at its first item until ``release()``."""

    def __init__(self, tmp_path: Path, run: Path, prompts: Path, shard: str = "") -> None:
        self.gate = tmp_path / f"gate{shard.replace('/', '-')}"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run), str(prompts), shard, str(self.gate)],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while not self.gate.with_suffix(".held").exists():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, "the holder never reached its first item"
            time.sleep(0.05)

    def release(self) -> None:
        self.gate.touch()
        _out, err = self.proc.communicate(timeout=90)
        assert self.proc.returncode == 0, err[-3000:]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    bench_instant.install()
    yield tmp_path / "run", prompt_file(tmp_path, ["a fox", "a cat"])


def _bench(run: Path, prompts: Path, *extra: str) -> object:
    from w2sd_cli.cli import build_app

    return RUNNER.invoke(build_app(), ["bench", "instant", "--prompts", str(prompts), "--seeds", "0-2",
                                       "--methods", "strong,w2sd", "--out", str(run), *extra])


def _lines(run: Path) -> list[dict]:
    return [line for path in sorted(run.glob("manifest.rank-*.jsonl")) for line in read_lines(path)]


def test_a_second_bench_on_the_same_folder_is_refused_and_names_the_first(tmp_path: Path,
                                                                        grid: tuple[Path, Path]) -> None:
    run, prompts = grid
    holder = Holder(tmp_path, run, prompts)
    second = _bench(run, prompts)
    text = " ".join(second.output.split())  # type: ignore[attr-defined]
    assert second.exit_code == 75, text  # type: ignore[attr-defined]
    assert f"Another `w2sd bench` is already working in {run} (pid {holder.proc.pid} on " in text
    assert "rendering the whole grid since" in text and "--shard 0/2 and --shard 1/2" in text
    assert "This is a bug" not in text
    assert len(_lines(run)) == 0, "the refused process rendered nothing"
    holder.release()
    assert len(_lines(run)) == ITEMS
    again = _bench(run, prompts, "--json")
    assert again.exit_code == 0, again.output  # type: ignore[attr-defined]
    facts = json.loads(again.stdout)  # type: ignore[attr-defined]
    assert (facts["rendered"], facts["skipped"]) == (0, ITEMS)
    ids = [line["id"] for line in _lines(run)]
    assert len(ids) == len(set(ids)) == ITEMS, "no item rendered twice"


def test_shards_of_one_split_run_side_by_side_but_a_duplicate_shard_is_refused(tmp_path: Path,
                                                                             grid: tuple[Path, Path]) -> None:
    run, prompts = grid
    holder = Holder(tmp_path, run, prompts, "0/2")
    other = _bench(run, prompts, "--shard", "1/2")
    assert other.exit_code == 0, other.output  # type: ignore[attr-defined]
    same = _bench(run, prompts, "--shard", "0/2")
    assert same.exit_code == 75 and "rendering share 0/2 since" in " ".join(same.output.split())  # type: ignore
    whole = _bench(run, prompts)
    assert whole.exit_code == 75 and f"pid {holder.proc.pid}" in whole.output  # type: ignore[attr-defined]
    holder.release()
    ids = [line["id"] for line in _lines(run)]
    assert len(ids) == len(set(ids)) == ITEMS


def test_the_lock_of_a_killed_bench_does_not_block_the_resume(tmp_path: Path, grid: tuple[Path, Path]) -> None:
    run, prompts = grid
    Holder(tmp_path, run, prompts).kill()
    assert (run / ".bench.rank-0.lock").exists()
    resumed = _bench(run, prompts)
    assert resumed.exit_code == 0, resumed.output  # type: ignore[attr-defined]
    assert len(_lines(run)) == ITEMS
