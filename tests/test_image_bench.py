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


def test_gpu_suite_runs_at_tiny_size_on_the_cpu(tmp_path: Path) -> None:
    """benchmarks/gpu_suite.py as CI runs it: no CUDA, tiny UNet; W2SD equals the reference loop, batch 4 = 1."""
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--steps", "2", "--latent", "8",
                           "--json", str(out)], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["device"] == "cpu" and figures["reference_max_rel_error"] < 1e-4
    assert figures["batch4_seed0_vs_batch1_max_rel_error"] < 1e-4
    assert set(figures["images_per_s_w2sd"]) == {"1", "4"} and figures["predicted"] > 1
