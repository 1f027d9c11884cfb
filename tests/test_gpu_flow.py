"""benchmarks/gpu_flow.py keeps running: on the CPU it runs the FLUX-shaped pair at tiny size, through gpu_suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_suite_flow_figures_run_tiny_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "flow.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--flow-only", "--json",
                           str(out)], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    flow = json.loads(out.read_text())["flow"]
    assert "error" not in flow, flow
    assert flow["size"] == "tiny" and flow["device"] == "cpu" and flow["finite"]
    assert flow["nfe"] == {"plain": 3, "w2sd": 3 + 2 * 2} and flow["predicted"] == round(7 / 3, 4)
    assert flow["w2sd_over_plain"] > 0 and flow["latent_tokens"] == 16  # a figure, not a timed assertion
    assert json.loads(done.stdout)["flow"]["steps"] == 3
