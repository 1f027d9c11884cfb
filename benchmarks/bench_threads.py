"""Tiny CPU pairs under load: torch's default thread count against one thread (issue 11, item 10).

    python benchmarks/bench_threads.py [--pair shapes] [--busy 1] [--modes torch-default,one-thread,w2sd]

Runs ``w2sd gen --json`` as a user would, once per mode, on an idle machine and again with ``--busy``
processes spinning (``while True: pass``, stopped afterwards), and prints JSON: the sampling seconds that
``gen`` reports (model loading and imports excluded) and the wall seconds of the whole command, per mode and
condition, and the ratio torch-default / one-thread. Modes: ``torch-default`` sets ``OMP_NUM_THREADS`` to
torch's own default count (an explicit choice w2sd respects), ``one-thread`` sets it to 1, ``w2sd`` sets
neither and lets w2sd choose. The figures are noisy on a shared machine: run it twice.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = {"shapes": "two red circles on the left"}


def run_gen(pair: str, mode: str, default_threads: int, out: Path) -> dict[str, float]:
    """One ``w2sd gen`` in a fresh process: its sampling seconds and the command's wall seconds."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "W2SD_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if mode != "w2sd":
        env["OMP_NUM_THREADS"] = str(default_threads if mode == "torch-default" else 1)
    args = [sys.executable, "-m", "w2sd_cli", "gen", *([PROMPTS[pair]] if pair in PROMPTS else []), "--pair", pair,
            "--out", str(out), "--json"]
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"w2sd gen failed ({mode}): {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    sampling = sum(float(m["seconds"]) for m in summary["methods"].values())
    return {"sampling_s": round(sampling, 2), "wall_s": round(wall, 2)}


def measure(pair: str, modes: list[str], busy: int, default_threads: int, out: Path) -> dict[str, Any]:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(0.5 if busy else 0.0)
        return {mode: run_gen(pair, mode, default_threads, out / f"{mode}-{busy}") for mode in modes}
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", default="shapes")
    parser.add_argument("--busy", type=int, default=1, help="Busy-loop processes for the loaded run.")
    parser.add_argument("--modes", default="torch-default,one-thread,w2sd")
    args = parser.parse_args()
    modes = args.modes.split(",")
    default_threads = torch.get_num_threads() if "OMP_NUM_THREADS" not in os.environ else os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        idle = measure(args.pair, modes, 0, default_threads, Path(tmp))
        loaded = measure(args.pair, modes, args.busy, default_threads, Path(tmp))
    result: dict[str, Any] = {"pair": args.pair, "cpus": os.cpu_count(), "torch_default_threads": default_threads,
                              "busy_processes": args.busy, "idle": idle, "loaded": loaded}
    for condition in ("idle", "loaded"):
        runs = result[condition]
        if "torch-default" in runs and "one-thread" in runs:
            result[f"ratio_{condition}"] = round(runs["torch-default"]["sampling_s"] / runs["one-thread"]["sampling_s"],
                                                 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
