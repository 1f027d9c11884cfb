"""Benchmark: images per second at batch 1, 4 and 8 through the engine, on a tiny SD pipeline (CPU).

A tiny SD 1.x-style pipeline (w2sd_cli.testing.save_tiny_sd) as a LoRA-free checkpoint pair (two UNet seeds),
W2SD at CFG 1/1 and a final CFG of 5.5 (batch-2 calls), 8 seeds. Each batch size renders the same 8 seeds,
interleaved over ``--repeats`` rounds so load changes on a shared machine hit every size alike; outputs are
checked equal to batch 1 (an image depends only on its seed).

    python benchmarks/bench_batch.py [--steps 10] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from w2sd_cli.api import pair_from_card
    from w2sd_cli.cards import parse_card
    from w2sd_cli.testing import save_tiny_sd

    root = Path(tempfile.mkdtemp(prefix="w2sd-bench-batch-"))
    card = parse_card({"schema": 1, "name": "tiny-sd", "kind": "diffusers", "description": "benchmark",
                       "models": {"strong": {"path": str(save_tiny_sd(root / "strong", seed=1))},
                                  "weak": {"path": str(save_tiny_sd(root / "weak", seed=2))}},
                       "strong": {"model": "strong"}, "weak": {"model": "weak"}, "defaults": {"steps": args.steps}})
    pair = pair_from_card(card, device="cpu")
    seeds = list(range(args.seeds))
    pair.generate("a red circle", seeds=seeds[:1])  # warm-up
    sizes = (1, 4, 8)
    seconds = {b: [] for b in sizes}
    outputs: dict[int, list[np.ndarray]] = {}
    for _ in range(args.repeats):
        for b in sizes:
            start = time.perf_counter()
            made = pair.generate("a red circle", seeds=seeds, batch_size=b)
            seconds[b].append(time.perf_counter() - start)
            outputs[b] = [np.asarray(s.image, dtype=np.int16) for s in made]
    error = max(int(np.abs(x - y).max()) for b in sizes for x, y in zip(outputs[b], outputs[1], strict=True))
    best = {b: min(v) for b, v in seconds.items()}
    figures = {"steps": args.steps, "seeds": args.seeds, "threads": args.threads, "image_side": 16,
               "images_per_s": {b: round(args.seeds / s, 3) for b, s in best.items()},
               "speedup_over_batch1": {b: round(best[1] / s, 3) for b, s in best.items()},
               "max_pixel_difference_vs_batch1": error}
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    if error > 1:
        raise SystemExit(f"batched outputs differ from batch 1 by {error} grey levels")


if __name__ == "__main__":
    main()
