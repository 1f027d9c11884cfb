"""The training command is reproducible: the same seed and step counts give bit-identical weights (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _train(out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "w2sd_cli.toy.train", "--out", str(out), "--steps", "20",
                    "--weak-step", "8", "--no-scores"], check=True, capture_output=True, env=env, timeout=900)


@pytest.mark.slow
def test_training_twice_gives_identical_weights(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _train(first)
    _train(second)
    files = sorted(p.relative_to(first) for p in first.rglob("*.safetensors"))
    assert {"strong/unet/diffusion_pytorch_model.safetensors", "weak/unet/diffusion_pytorch_model.safetensors"} <= {
        str(f) for f in files}
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    assert (first / "weak" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() != (
        first / "strong" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
