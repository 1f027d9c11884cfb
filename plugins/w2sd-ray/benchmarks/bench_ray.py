"""Throughput of `w2sd bench --executor ray` on a local Ray instance, and what the driver costs per item.

    OMP_NUM_THREADS=1 python plugins/w2sd-ray/benchmarks/bench_ray.py [--cpus 2] [--seeds 0-23]

1. items/s with 1 and with 2 CPU actors on an analytic pair (gmm-2d), counted from the moment every actor
   has loaded the pair (steady state), and their ratio;
2. the driver's own time per item (fetching and unpickling the result, writing the files atomically, the
   sha256 check and the fsynced manifest line) as a fraction of one shapes-pair item (a tiny text-to-image
   UNet: the stand-in for a small SD model), both measured here in this run.

Prints one JSON object. All figures come from this one run; on a shared, loaded machine they move.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def steady_rate(run: Path, **request: Any) -> dict[str, Any]:
    """Run one bench; items/s after every actor is ready, and the outcome's per-actor figures."""
    from w2sd_cli.bench.runner import BenchRequest, bench

    marks: list[tuple[float, int]] = []
    ready: list[float] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("event") == "ready":
            ready.append(time.perf_counter())
        elif event.get("phase") == "item" and event.get("done"):
            marks.append((time.perf_counter(), int(event["done"])))

    outcome = bench(BenchRequest(out=run, **request), observe)
    actors = len(outcome.extra["actors"])
    start = max(ready[:actors])
    after = [(t, n) for t, n in marks if t >= start]
    base = max([n for t, n in marks if t < start], default=0)
    rate = (after[-1][1] - base) / (after[-1][0] - start)
    return {"actors": actors, "items": outcome.rendered, "items_per_s": round(rate, 3),
            "driver_seconds_per_item": outcome.extra["driver_seconds_per_item"],
            "per_actor_items_per_s": [a["items_per_s"] for a in outcome.extra["actors"]]}


def shapes_item_seconds(run: Path, seeds: str) -> float:
    """Median seconds of one shapes item (25 steps, one seed per call) in this process, warm-up excluded."""
    from w2sd_cli.bench.manifest import read_lines
    from w2sd_cli.bench.runner import BenchRequest, bench

    bench(BenchRequest(pair="shapes", out=run, prompts="shapes", limit=1, seeds=seeds, methods=("w2sd",)))
    return statistics.median(line["seconds"] for line in read_lines(run / "manifest.jsonl") if not line["warmup"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--seeds", default="0-23")
    parser.add_argument("--samples", type=int, default=10000)
    args = parser.parse_args()

    import ray
    import w2sd_ray

    from w2sd_cli.testing import installed_plugin

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    gmm = {"pair": "gmm-2d", "seeds": args.seeds, "samples": args.samples, "steps": 50,
           "methods": ("strong", "w2sd"), "executor": "ray"}
    with tempfile.TemporaryDirectory() as tmp, installed_plugin(w2sd_ray, "ray"):
        root = Path(tmp)
        one = steady_rate(root / "one", **gmm, executor_options={"actors": "1"})
        two = steady_rate(root / "two", **gmm, executor_options={"actors": "2"})
        shapes = steady_rate(root / "shapes-ray", pair="shapes", prompts="shapes", limit=2, seeds="0-9",
                             methods=("w2sd",), executor="ray")
        item = shapes_item_seconds(root / "shapes-local", "0-5")
    ray.shutdown()
    print(json.dumps({
        "cpus": args.cpus, "load_average": os.getloadavg(),
        "gmm_2d_1_actor": one, "gmm_2d_2_actors": two,
        "speedup_2_vs_1": round(two["items_per_s"] / one["items_per_s"], 3),
        "shapes_via_ray": shapes, "shapes_item_seconds_local": round(item, 4),
        "driver_overhead_fraction_of_shapes_item": round(shapes["driver_seconds_per_item"] / item, 4),
        "driver_overhead_gmm_item_fraction_of_shapes_item": round(two["driver_seconds_per_item"] / item, 4),
    }, indent=1))


if __name__ == "__main__":
    main()
