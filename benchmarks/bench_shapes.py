"""Shapes-pair evidence: checker accuracy per attribute for weak, strong, W2SD and the controls, with diversity.

    OMP_NUM_THREADS=1 python benchmarks/bench_shapes.py --self-pair [--per-prompt 6] [--json out.json]

Items: every held-out composition (12) at every count (3), ``--per-prompt`` seeds each, full captions; a single
shape is "a ..." on even seed indices and "one ..." on odd ones, and the count accuracy of each wording is shown.
Accuracy intervals are 95% bootstrap intervals over items; "Δall vs strong" is a paired bootstrap.
Diversity: captions that leave the position free ("two red circles"), ``--diversity-per-prompt`` seeds
each; the normalised entropy of the detected position over seeds (1 = the five positions equally often,
0 = always the same place), averaged over prompts, and the mean number of distinct positions per prompt.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from w2sd_cli.toy.evaluate import MethodResult, evaluate, held_out_items, position_free_items, toy_card
from w2sd_cli.toy.world import POSITIONS

METHODS = ("weak", "strong", "w2sd", "extrapolate", "equal-nfe")
ATTRIBUTES = ("colour", "count", "shape", "position", "all")


def outcomes(result: MethodResult, attribute: str) -> np.ndarray:
    """0/1 per item (all items are scorable and name every attribute here)."""
    if not all(v["scorable"] for v in result.verdicts):
        raise ValueError("an item's caption has words the shapes pair does not know")
    if attribute == "all":
        return np.array([float(v["all"]) for v in result.verdicts])
    return np.array([float(v["checks"][attribute]) for v in result.verdicts])


def bootstrap(values: np.ndarray, rng: np.random.Generator, rounds: int = 2000) -> tuple[float, float]:
    """95% percentile interval of the mean."""
    means = values[rng.integers(0, len(values), (rounds, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def diversity(result: MethodResult) -> dict[str, float]:
    """Normalised position entropy and distinct positions per prompt, plus precision on the named attributes."""
    by_prompt: dict[str, list[str]] = {}
    for v in result.verdicts:
        by_prompt.setdefault(v["prompt"], []).append(v["seen"]["position"] or "none")
    entropies, distinct = [], []
    for positions in by_prompt.values():
        counts = np.array(list(Counter(positions).values()), dtype=float)
        p = counts / counts.sum()
        entropies.append(float(-(p * np.log(p)).sum() / math.log(len(POSITIONS))))
        distinct.append(len(set(positions) - {"none"}))
    return {"position_entropy": float(np.mean(entropies)), "distinct_positions": float(np.mean(distinct)),
            "all_named_correct": float(np.mean([v["all"] for v in result.verdicts]))}


def single_shape_count(result: MethodResult) -> dict[str, float]:
    """Count accuracy on single-shape captions, by how they say it ("a ..." or "one ...")."""
    out = {}
    for word in ("a", "one"):
        hits = [v["checks"]["count"] for v in result.verdicts if v["prompt"].split()[0] == word]
        out[word] = float(np.mean(hits)) if hits else float("nan")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    from w2sd_cli.cards import load_card
    from w2sd_cli.paths import registry_dir

    card = load_card(registry_dir() / "pairs" / "shapes.yaml")
    methods = list(args.methods)
    items = held_out_items(args.per_prompt)
    started = time.perf_counter()
    main = evaluate(card, items, methods)
    free = evaluate(card, position_free_items(args.diversity_per_prompt), methods)
    if args.self_pair:
        strong_path = Path(str(card.models["strong"].path))
        self_card = toy_card(strong_path, strong_path, cfg=card.strong.cfg or 3.0, steps=card.defaults.steps)
        main["w2sd-self"] = evaluate(self_card, items, ["w2sd"])["w2sd"]
        free["w2sd-self"] = evaluate(self_card, position_free_items(args.diversity_per_prompt), ["w2sd"])["w2sd"]
    rng = np.random.default_rng(0)
    report: dict[str, Any] = {"items": len(items), "steps": card.defaults.steps, "card_digest": card.digest(),
                              "methods": {}}
    strong_all = outcomes(main["strong"], "all") if "strong" in main else None
    for method, result in main.items():
        row: dict[str, Any] = {"nfe": result.nfe, "seconds_per_image": result.seconds / len(result.verdicts)}
        for attribute in ATTRIBUTES:
            values = outcomes(result, attribute)
            row[attribute] = {"mean": float(values.mean()), "ci95": bootstrap(values, rng)}
        if strong_all is not None and method != "strong":
            diff = outcomes(result, "all") - strong_all
            row["delta_all_vs_strong"] = {"mean": float(diff.mean()), "ci95": bootstrap(diff, rng)}
        row["single_shape_count"] = single_shape_count(result)
        row["diversity"] = diversity(free[method])
        report["methods"][method] = row
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def markdown(report: dict[str, Any]) -> str:
    """The evidence tables."""
    lines = [f"Held-out items: {report['items']} (DDIM {report['steps']} steps); 95% bootstrap intervals.", "",
             "| method | NFE | colour | count | shape | position | all four | Δall vs strong | s/img |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method, row in report["methods"].items():
        cells = [f"{row[a]['mean']:.2f} [{row[a]['ci95'][0]:.2f}, {row[a]['ci95'][1]:.2f}]" for a in ATTRIBUTES]
        delta = row.get("delta_all_vs_strong")
        d = f"{delta['mean']:+.2f} [{delta['ci95'][0]:+.2f}, {delta['ci95'][1]:+.2f}]" if delta else "—"
        lines.append(f"| {method} | {row['nfe']} | " + " | ".join(cells) + f" | {d} | {row['seconds_per_image']:.3f} |")
    lines += ["", "| method | count, \"a ...\" captions | count, \"one ...\" captions |", "|---|---|---|"]
    for method, row in report["methods"].items():
        single = row["single_shape_count"]
        lines.append(f"| {method} | {single['a']:.2f} | {single['one']:.2f} |")
    lines += ["", "| method | position entropy (1 = even) | distinct positions / prompt | named attributes correct |",
              "|---|---|---|---|"]
    for method, row in report["methods"].items():
        dv = row["diversity"]
        lines.append(f"| {method} | {dv['position_entropy']:.2f} | {dv['distinct_positions']:.2f} | "
                     f"{dv['all_named_correct']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="shapes pair: checker accuracy and diversity per method")
    parser.add_argument("--per-prompt", type=int, default=6, help="seeds per held-out caption (36 captions)")
    parser.add_argument("--diversity-per-prompt", type=int, default=6, help="seeds per position-free caption")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--self-pair", action="store_true", help="add W2SD with weak = strong (control)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw report here")
    args = parser.parse_args()
    report = run(args)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    print(markdown(report))
    print(f"\nwall time {report['wall_seconds']} s")


if __name__ == "__main__":
    main()
