"""GPU suite: plain vs W2SD vs the reference loop, batch 1 vs 4, peak memory, printed as JSON ratios.

On CUDA: an SDXL-size UNet with random weights and a random LoRA at 1024² (128² latent), float16, the paper's
LoRA setting (reflection LoRA 0.8 / -1.5 at CFG 1 / 1, final LoRA 0.8 at CFG 5.5). On the CPU it runs the same
code at tiny size (CI runs it that way, to keep it working).

    python benchmarks/gpu_suite.py                     # CUDA if present, else tiny on the CPU
    python benchmarks/gpu_suite.py --json gpu.json --steps 10

Ratios printed (each measured in this one run):
- ``w2sd_over_plain``: W2SD's time over plain sampling's, against ``predicted`` (the batch-aware cost ratio);
- ``reference_over_w2sd``: the reference loop's time over W2SD's (outputs checked equal);
- ``images_per_s_batch4_over_batch1``: throughput gain from batching seeds (W2SD and plain);
- ``peak_memory_gb``: peak CUDA memory of each run;
- ``flow``: the flow-pair figures of ``gpu_flow.py`` (a FLUX.1-dev-size transformer at 1024², bfloat16: W2SD over
  plain against the NFE ratio, peak memory), after the SDXL figures and with the SDXL UNet freed.
  ``--no-flow`` skips them, ``--flow-only`` runs only them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # this checkout's w2sd_cli, installed or not
from bench_reflection import SCHEDULER, build, forward_time, reference_loop, w2sd_denoisers
from gpu_flow import timed

from w2sd_cli.adapters.unet import grid_from_config, schedule_from_config
from w2sd_cli.sampling import sample_plain, sample_w2sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: 10 on CUDA, 3 on CPU)")
    parser.add_argument("--size", default=None, help="sdxl (CUDA default) or tiny (CPU default)")
    parser.add_argument("--latent", type=int, default=None, help="latent side (default: 128 on CUDA, 16 on CPU)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--no-flow", action="store_true", help="skip the FLUX-size flow figures")
    parser.add_argument("--dtype", default=None, help="float16 (CUDA default), bfloat16 or float32 (CPU default)")
    parser.add_argument("--flow-only", action="store_true", help="only the FLUX-size flow figures")
    args = parser.parse_args()
    if args.flow_only:
        torch.set_grad_enabled(False)
        report({"flow": flow_figures()}, args.json)
        return
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if cuda else torch.float32)
    size = args.size or ("sdxl" if cuda else "tiny")
    latent = args.latent or (128 if cuda else 16)
    steps = args.steps or (10 if cuda else 3)
    torch.set_grad_enabled(False)

    unet, cond, uncond = build(size, device, dtype, rank=32)
    config = {**SCHEDULER, "num_train_timesteps": 1000}
    schedule = schedule_from_config(config)
    grid = grid_from_config(schedule, config, steps)
    lam = steps - 1
    strong, weak, final, _ = w2sd_denoisers(unet, schedule, cond, uncond)
    channels = unet.config.in_channels

    def noise(batch: int) -> torch.Tensor:
        seeds = [torch.randn(1, channels, latent, latent, generator=torch.Generator().manual_seed(s)) for s in
                 range(batch)]
        return torch.cat(seeds).to(device)

    figures: dict[str, Any] = {"device": torch.cuda.get_device_name() if cuda else "cpu", "size": size,
                               "image_side": latent * 8, "dtype": str(dtype).removeprefix("torch."), "steps": steps,
                               "lambda": lam}
    sample_plain(final, noise(1), schedule, grid[:2])  # warm-up
    forward_time(unet, noise(1), cond, 2, 1)
    t1, t2 = forward_time(unet, noise(1), cond, 1, 3), forward_time(unet, noise(1), cond, 2, 3)
    results: dict[int, dict[str, Any]] = {}
    for batch in (1, 4):
        x = noise(batch)
        plain, plain_s, plain_gb = timed(lambda x=x: sample_plain(final, x, schedule, grid), device)
        ours, ours_s, ours_gb = timed(lambda x=x: sample_w2sd(strong, weak, final, x, schedule, grid, lam=lam), device)
        results[batch] = {"plain_s": plain_s, "w2sd_s": ours_s, "plain_peak_gb": plain_gb, "w2sd_peak_gb": ours_gb,
                          "x": ours.x, "cost_ratio": ours.cost / plain.cost}
    x1 = noise(1)
    (ref_x, _, _), ref_s, ref_gb = timed(lambda: reference_loop(unet, x1, schedule, grid, lam, cond, uncond), device)
    error = float((results[1]["x"] - ref_x).abs().max() / ref_x.abs().max())
    batch_error = float((results[4]["x"][:1] - results[1]["x"]).abs().max() / results[1]["x"].abs().max())
    rms = lambda a, b: float((a.float() - b.float()).pow(2).mean().sqrt() / b.float().pow(2).mean().sqrt())  # noqa: E731
    error_rms, batch_error_rms = rms(results[1]["x"], ref_x), rms(results[4]["x"][:1], results[1]["x"])
    time_predicted = (steps * t2 + 2 * lam * t1) / (steps * t2)  # batch-2 final legs, batch-1 reflection legs
    one, four = results[1], results[4]
    figures.update({
        "plain_s_batch1": round(one["plain_s"], 4), "w2sd_s_batch1": round(one["w2sd_s"], 4),
        "reference_s_batch1": round(ref_s, 4),
        "w2sd_over_plain": round(one["w2sd_s"] / one["plain_s"], 4), "predicted": round(one["cost_ratio"], 4),
        "w2sd_over_plain_over_predicted": round(one["w2sd_s"] / one["plain_s"] / one["cost_ratio"], 4),
        "t1_s": round(t1, 5), "t2_s": round(t2, 5), "time_predicted": round(time_predicted, 4),
        "w2sd_over_plain_over_time_predicted": round(one["w2sd_s"] / one["plain_s"] / time_predicted, 4),
        "reference_rms_rel_error": error_rms, "batch4_vs_batch1_rms_rel_error": batch_error_rms,
        "reference_over_w2sd": round(ref_s / one["w2sd_s"], 4), "reference_max_rel_error": error,
        "images_per_s_w2sd": {b: round(b / r["w2sd_s"], 4) for b, r in results.items()},
        "images_per_s_plain": {b: round(b / r["plain_s"], 4) for b, r in results.items()},
        "images_per_s_batch4_over_batch1": {"w2sd": round(4 * one["w2sd_s"] / four["w2sd_s"], 4),
                                            "plain": round(4 * one["plain_s"] / four["plain_s"], 4)},
        "batch4_seed0_vs_batch1_max_rel_error": batch_error,
        "peak_memory_gb": {"plain_batch1": round(one["plain_peak_gb"], 3), "w2sd_batch1": round(one["w2sd_peak_gb"], 3),
                           "reference_batch1": round(ref_gb, 3), "w2sd_batch4": round(four["w2sd_peak_gb"], 3)},
    })
    if not args.no_flow:
        del unet, strong, weak, final, cond, uncond, results, ours, plain, ref_x
        if cuda:
            torch.cuda.empty_cache()
        figures["flow"] = flow_figures()
    report(figures, args.json)
    # relative RMS over the whole latent after every step; on CUDA convolutions use TF32 even in float32
    # (measured on an H200: 1.6e-3 in float32, 3.5e-3 in float16; 2e-6 on the CPU)
    tolerance = 1e-3 if (dtype == torch.float32 and not cuda) else 2e-2
    if error_rms > tolerance or batch_error_rms > tolerance:
        raise SystemExit(f"outputs differ (relative RMS): reference {error_rms:.2e}, batch 4 vs 1 "
                         f"{batch_error_rms:.2e}")


def flow_figures() -> dict[str, Any]:
    """gpu_flow's figures, or the error that stopped them (the SDXL figures are printed either way)."""
    try:
        from gpu_flow import figures

        return figures()
    except Exception as err:  # a failed flow run must not lose the SDXL figures
        return {"error": f"{type(err).__name__}: {err}"[:800]}


def report(figures: dict[str, Any], path: str | None) -> None:
    print(json.dumps(figures, indent=1))
    if path:
        Path(path).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
