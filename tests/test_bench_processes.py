"""`w2sd bench` as real processes: SIGKILL mid-run then resume, and two ranks under torchrun (CPU)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bench_helpers import manifest
from w2sd_cli.bench.manifest import read_lines

GRID = ("gmm-2d", "--seeds", "0-9", "--samples", "3000", "--steps", "30", "--methods", "weak,strong,w2sd,extrapolate")


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "W2SD_HOME": str(home), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _bench(out: Path, home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "w2sd_cli", "bench", *GRID, "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=120, env=_env(home))


def test_a_killed_bench_resumes_to_exactly_the_uninterrupted_manifest(tmp_path: Path) -> None:
    home = tmp_path / "home"
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen([sys.executable, "-m", "w2sd_cli", "bench", *GRID, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(home))
    part = killed / "manifest.rank-0.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(read_lines(part)) < 5:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    survived = len(read_lines(part))
    assert 5 <= survived < 40, "the run must be killed mid-way"
    assert not (killed / "manifest.jsonl").exists()
    first = Path(read_lines(part)[0]["file"]).name
    stale, foreign = killed / "items" / f".{first}.x1y2.tmp", killed / "items" / ".notes.tmp"
    stale.write_bytes(b"half")
    foreign.write_bytes(b"keep")
    resumed = _bench(killed, home, "--json")
    assert not stale.exists() and foreign.exists()
    assert resumed.returncode == 0, resumed.stderr
    assert f'"skipped": {survived}' in resumed.stdout
    assert _bench(clean, home).returncode == 0
    assert manifest(killed) == manifest(clean)
    assert len(manifest(clean)) == 40


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun is not installed")
def test_two_ranks_under_torchrun_share_the_grid_and_merge(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out, single = tmp_path / "ranks", tmp_path / "single"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port), "-m",
           "w2sd_cli", "bench", "gmm-1d", "--seeds", "0-4", "--samples", "300", "--steps", "10", "--methods",
           "weak,strong,w2sd,extrapolate", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=_env(home))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = read_lines(out / "manifest.jsonl")
    assert {ln["rank"] for ln in lines} == {0, 1} and {ln["world"] for ln in lines} == {2}
    assert len(read_lines(out / "manifest.rank-0.jsonl")) + len(read_lines(out / "manifest.rank-1.jsonl")) == 20
    solo = subprocess.run([sys.executable, "-m", "w2sd_cli", "bench", "gmm-1d", "--seeds", "0-4", "--samples", "300",
                           "--steps", "10", "--methods", "weak,strong,w2sd,extrapolate", "--out", str(single)],
                          capture_output=True, text=True, timeout=120, env=_env(home))
    assert solo.returncode == 0, solo.stderr
    assert manifest(out) == manifest(single)
