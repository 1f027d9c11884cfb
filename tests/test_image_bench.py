"""benchmarks/bench_reflection.py keeps running: tiny size, its w2sd and reference-loop outputs agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_reflection_runs_and_matches_the_reference_loop(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_reflection.py"), "--size", "tiny",
                           "--latent", "8", "--steps", "3", "--reps", "1", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["a_max_rel_error"] < 1e-4
    assert figures["nfe"] == {"ours": 7, "cost_ours": 10.0, "cost_plain": 6.0}
    assert figures["lora_layers"] > 0 and figures["b_switch_s"] > 0
