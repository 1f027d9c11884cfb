"""Benchmark: a cold `w2sd gen` on the embedded default pair against the bare import of its libraries.

Each command runs in a fresh process (``--repeats`` times, interleaved, best kept), with one torch thread:
- ``import torch, diffusers, transformers`` (what any diffusers tool pays before doing anything), and the import
  of the two model classes the default pair uses (diffusers imports its submodules lazily);
- ``w2sd gen "two red circles on the left"`` (import, load the shapes pair, 25-step W2SD, checker, PNG);
- ``w2sd --help`` and ``w2sd pairs list`` (these must not import torch at all).

    python benchmarks/bench_cold_start.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="w2sd-cold-")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "W2SD_HOME": out, "HF_HUB_OFFLINE": "1"}
    python = sys.executable
    commands = {
        "import_torch_diffusers_transformers": [python, "-c", "import torch, diffusers, transformers"],
        "import_model_classes": [python, "-c", "from diffusers import UNet2DConditionModel; "
                                 "from transformers import CLIPTextModel"],
        "w2sd_gen_default": [python, "-m", "w2sd_cli", "gen", "two red circles on the left", "--out", out],
        "w2sd_help": [python, "-m", "w2sd_cli", "--help"],
        "w2sd_pairs_list": [python, "-m", "w2sd_cli", "pairs", "list"],
    }
    best = {name: float("inf") for name in commands}
    for _ in range(args.repeats):
        for name, command in commands.items():
            best[name] = min(best[name], timed(command, env))
    figures = {name: round(s, 3) for name, s in best.items()}
    figures["gen_over_bare_import"] = round(best["w2sd_gen_default"] / best["import_torch_diffusers_transformers"], 3)
    figures["gen_over_model_class_import"] = round(best["w2sd_gen_default"] / best["import_model_classes"], 3)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
