"""GPU figures for flow pairs: a FLUX.1-dev-size transformer (random weights) at 1024², bfloat16, W2SD vs plain.

The pair is the ``flux-guidance`` shape: distilled guidance 3.5 (strong, final) against 1.0 (weak), one network
call per prediction, so W2SD should cost ``(T + 2 λ) / T`` plain runs. Text conditioning is random (no text
encoders: they run once per prompt and are not what is timed). On CUDA the 12 B-parameter transformer is built
directly on the GPU in bfloat16; on the CPU the same code runs a tiny transformer in seconds (a test does that).

    python benchmarks/gpu_flow.py                 # CUDA if present, else tiny on the CPU; prints JSON
    python benchmarks/gpu_flow.py --steps 10 --json flow.json

Figures: ``w2sd_over_plain`` against ``predicted`` (the NFE ratio), seconds per forward, peak CUDA memory of
each run and of the weights alone, and whether the samples stayed finite (random weights in bfloat16).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from w2sd_cli.adapters.flow import flow_grid, flux_network, image_tokens
from w2sd_cli.adapters.unet import CFGDenoiser, Conditioning
from w2sd_cli.sampling import FlowSchedule, sample_plain, sample_w2sd

FLUX_DEV = {"patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
            "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768,
            "guidance_embeds": True, "axes_dims_rope": (16, 56, 56)}
"""FLUX.1-dev's transformer config (11.9 B parameters)."""
TINY = {"patch_size": 1, "in_channels": 16, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
        "num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 32, "guidance_embeds": True,
        "axes_dims_rope": (4, 4, 8)}
FLUX_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
                  "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], Any], device: torch.device) -> tuple[Any, float, float]:
    """(result, seconds, peak GB) of one run."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    out = run()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return out, time.perf_counter() - start, peak


def build(config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> Any:
    """The transformer with random weights, initialised where it will run and in its dtype."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = FluxTransformer2DModel(**config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def run(size: str, device: torch.device, dtype: torch.dtype, steps: int, side: int, text_tokens: int) -> dict[str, Any]:
    """Build the transformer, time plain and W2SD sampling at batch 1, return the figures."""
    config = FLUX_DEV if size == "flux" else TINY
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    transformer = build(config, device, dtype)
    weights_gb = sum(p.numel() * p.element_size() for p in transformer.parameters()) / 2**30
    params = sum(p.numel() for p in transformer.parameters())
    channels, latent = config["in_channels"] // 4, side // 8
    generator = torch.Generator("cpu").manual_seed(1)
    states = torch.randn(1, text_tokens, config["joint_attention_dim"], generator=generator).to(device, dtype)
    pooled = torch.randn(1, config["pooled_projection_dim"], generator=generator).to(device, dtype)
    cond = Conditioning(states, {"pooled": pooled})
    grid = flow_grid(FLUX_SCHEDULER, "flux", steps, image_tokens("flux", latent, latent, 1))
    schedule = FlowSchedule()
    strong = CFGDenoiser(flux_network(transformer, 3.5), schedule, cond, None, 1.0, "velocity", dtype=dtype)
    weak = CFGDenoiser(flux_network(transformer, 1.0), schedule, cond, None, 1.0, "velocity", dtype=dtype)
    x = torch.randn(1, channels, latent, latent, generator=torch.Generator("cpu").manual_seed(2)).to(device)
    with torch.inference_mode():
        strong(x, grid[0])  # warm-up (kernels, allocator)
        plain, plain_s, plain_gb = timed(lambda: sample_plain(strong, x, schedule, grid), device)
        ours, ours_s, ours_gb = timed(lambda: sample_w2sd(strong, weak, strong, x, schedule, grid, lam=steps - 1),
                                      device)
    return {
        "size": size, "parameters_b": round(params / 1e9, 3), "image_side": side, "latent_tokens":
        image_tokens("flux", latent, latent, 1), "text_tokens": text_tokens, "dtype": str(dtype).removeprefix("torch."),
        "steps": steps, "lambda": steps - 1, "nfe": {"plain": plain.nfe, "w2sd": ours.nfe},
        "plain_s": round(plain_s, 4), "w2sd_s": round(ours_s, 4), "s_per_forward": round(plain_s / plain.nfe, 4),
        "w2sd_over_plain": round(ours_s / plain_s, 4), "predicted": round(ours.cost / plain.cost, 4),
        "w2sd_over_plain_over_predicted": round(ours_s / plain_s / (ours.cost / plain.cost), 4),
        "peak_memory_gb": {"weights": round(weights_gb, 3), "plain": round(plain_gb, 3), "w2sd": round(ours_gb, 3)},
        "finite": bool(torch.isfinite(plain.x).all() and torch.isfinite(ours.x).all()),
    }


def figures(steps: int | None = None, size: str | None = None, side: int | None = None) -> dict[str, Any]:
    """The flow figures on CUDA (FLUX size, 1024², bfloat16) or the CPU (tiny, float32)."""
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    size = size or ("flux" if cuda else "tiny")
    out = run(size, device, torch.bfloat16 if cuda else torch.float32, steps or (10 if cuda else 3),
              side or (1024 if size == "flux" else 64), 512 if size == "flux" else 16)
    out["device"] = torch.cuda.get_device_name() if cuda else "cpu"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: 10 on CUDA, 3 on CPU)")
    parser.add_argument("--size", choices=("flux", "tiny"), default=None, help="flux (CUDA default) or tiny")
    parser.add_argument("--side", type=int, default=None, help="image side in pixels (default 1024; tiny: 64)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    result = figures(args.steps, args.size, args.side)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
