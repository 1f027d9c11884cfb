"""Benchmark: w2sd's reflection against a re-creation of the reference loop, in the paper's LoRA setting.

A UNet of SD 1.5's (or SDXL's) size with random weights and a random LoRA on its attention and
feed-forward projections; reflection LoRA 0.8 / -1.5 at CFG 1 / 1, final LoRA 0.8 at CFG 5.5
(docs/method.md, Cost). Per-step figures:

(a) speed-up of w2sd over the reference loop (three ``set_adapters`` rewires per step, every leg a
    CFG batch-2 call), with outputs checked equal within float tolerance, against the bound from
    network work alone, 3·t2 / (2·t1 + t2) (t1, t2: batch-1 and batch-2 UNet forward times);
(b) one LoRA scale switch (w2sd's in-place write) and one ``set_adapters`` rewire, each over one
    UNet forward;
(c) w2sd's measured time over the time its batch-aware NFE predicts (batch-1 calls × t1 + batch-2
    calls × t2), and over plain sampling's measured time scaled by the cost ratio.

Every step is measured interleaved (t1, t2, then one step of each method from its own latent), so a load
change on a shared machine hits all methods alike; figures are means over the reflected steps.

    python benchmarks/bench_reflection.py                 # SD 1.5 size, CPU, 64x64 latent, 3 steps
    python benchmarks/bench_reflection.py --size sdxl --latent 128 --device cuda --dtype float16
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from w2sd_cli.adapters.lora import LoraScales
from w2sd_cli.adapters.unet import CFGDenoiser, Conditioning, grid_from_config, schedule_from_config, unet_network
from w2sd_cli.sampling import VPSchedule, sample_plain, sample_w2sd

ADAPTER = "w2sd_detail"
STRONG, WEAK, FINAL, FINAL_CFG = 0.8, -1.5, 0.8, 5.5
SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "set_alpha_to_one": False,
             "steps_offset": 1, "timestep_spacing": "leading"}
SIZES: dict[str, dict[str, Any]] = {
    "sd15": {"block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8,
             "layers_per_block": 2},
    "sdxl": {"block_out_channels": (320, 640, 1280), "cross_attention_dim": 2048, "attention_head_dim": (5, 10, 20),
             "layers_per_block": 2, "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
             "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
             "transformer_layers_per_block": (1, 2, 10), "use_linear_projection": True,
             "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
             "projection_class_embeddings_input_dim": 2816},
    "tiny": {"block_out_channels": (32, 64), "cross_attention_dim": 32, "attention_head_dim": 4, "layers_per_block": 1,
             "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
             "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "norm_num_groups": 8},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(size: str, device: torch.device, dtype: torch.dtype, rank: int) -> tuple[Any, Conditioning, Conditioning]:
    """A random UNet with a random (non-zero) LoRA, and random text conditioning for both CFG branches."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SIZES[size]).to(device, dtype).eval()
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]),
                     adapter_name=ADAPTER)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    g = torch.Generator().manual_seed(1)
    cross = unet.config.cross_attention_dim

    def cond() -> Conditioning:
        states = torch.randn(1, 77, cross, generator=g).to(device, dtype)
        if unet.config.addition_embed_type != "text_time":
            return Conditioning(states)
        added = {"text_embeds": torch.randn(1, 1280, generator=g).to(device, dtype),
                 "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]], device=device, dtype=dtype)}
        return Conditioning(states, added)

    return unet, cond(), cond()


def forward_time(unet: Any, x: Tensor, cond: Conditioning, batch: int, reps: int) -> float:
    """Best-of-``reps`` seconds for one UNet forward at ``batch``."""
    xs = x.to(unet.dtype).repeat(batch, 1, 1, 1)
    c = cond if batch == 1 else cond.batch(cond)
    best = float("inf")
    for _ in range(reps):
        sync(x.device)
        start = time.perf_counter()
        unet_network(unet)(xs, torch.full((batch,), 500.0, device=x.device), c)
        sync(x.device)
        best = min(best, time.perf_counter() - start)
    return best


def reference_loop(unet: Any, x: Tensor, schedule: VPSchedule, grid: list[float], lam: int, cond: Conditioning,
                   uncond: Conditioning) -> tuple[Tensor, list[float], list[float]]:
    """The reference's structure: rewire adapters before each leg, run every leg as CFG batch 2.

    The inversion uses the exact interval t' -> t (not the reference's off-by-one) so outputs compare.

    Returns:
        The sample, seconds per step, and seconds per step spent in ``set_adapters``.
    """
    net = unet_network(unet)
    both = uncond.batch(cond)
    rewiring = 0.0

    def rewire(scale: float) -> None:
        nonlocal rewiring
        sync(x.device)
        start = time.perf_counter()
        unet.set_adapters([ADAPTER], [scale])
        sync(x.device)
        rewiring += time.perf_counter() - start

    def eps(latent: Tensor, t: float, cfg: float) -> Tensor:
        out = net(torch.cat([latent, latent]).to(unet.dtype), torch.full((2,), t, device=x.device), both).float()
        u, c = out.chunk(2)
        return u + cfg * (c - u)

    steps, rewired = [], []
    for i in range(len(grid) - 1):
        sync(x.device)
        start, before = time.perf_counter(), rewiring
        t, t_next = grid[i], grid[i + 1]
        if i < lam:
            rewire(STRONG)
            denoised = schedule.step(x, eps(x, t, 1.0), t, t_next)
            rewire(WEAK)
            x = schedule.step(denoised, eps(denoised, t, 1.0), t_next, t)
        rewire(FINAL)
        x = schedule.step(x, eps(x, t, FINAL_CFG), t, t_next)
        sync(x.device)
        steps.append(time.perf_counter() - start)
        rewired.append(rewiring - before)
    return x, steps, rewired


def w2sd_denoisers(unet: Any, schedule: VPSchedule, cond: Conditioning, uncond: Conditioning
                   ) -> tuple[CFGDenoiser, CFGDenoiser, CFGDenoiser, LoraScales]:
    """strong, weak and final as the diffusers kind builds them: batch 1 at CFG 1, in-place scale switches."""
    unet.set_adapters([ADAPTER], [1.0])
    scales = LoraScales.scan([unet])
    net = unet_network(unet)

    def side(scale: float) -> Callable[[Tensor, Tensor, Conditioning], Tensor]:
        def network(x: Tensor, timestep: Tensor, c: Conditioning) -> Tensor:
            scales.apply({ADAPTER: scale})
            return net(x, timestep, c)
        return network

    make = lambda scale, cfg: CFGDenoiser(side(scale), schedule, cond, uncond, cfg, dtype=unet.dtype)  # noqa: E731
    return make(STRONG, 1.0), make(WEAK, 1.0), make(FINAL, FINAL_CFG), scales


def timed_sample(run: Callable[[Callable[[dict[str, Any]], None]], Any], device: torch.device
                 ) -> tuple[Any, list[float]]:
    """Run a sampler, returning its result and the seconds of each step (from its callbacks)."""
    marks: list[float] = []

    def callback(info: dict[str, Any]) -> None:
        if info["phase"] == "denoise":
            sync(device)
            marks.append(time.perf_counter())

    sync(device)
    start = time.perf_counter()
    result = run(callback)
    return result, [b - a for a, b in zip([start, *marks[:-1]], marks, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="sd15")
    parser.add_argument("--latent", type=int, default=64, help="latent side (64 = 512² images for SD 1.5)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rank", type=int, default=32, help="LoRA rank")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--reps", type=int, default=2, help="repetitions of each single-forward timing")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.set_grad_enabled(False)

    unet, cond, uncond = build(args.size, device, dtype, args.rank)
    config = {**SCHEDULER, "num_train_timesteps": 1000}
    schedule = schedule_from_config(config)
    grid = grid_from_config(schedule, config, args.steps)
    lam = args.steps - 1
    x = torch.randn(1, 4, args.latent, args.latent, generator=torch.Generator().manual_seed(2)).to(device)

    strong, weak, final, scales = w2sd_denoisers(unet, schedule, cond, uncond)
    forward_time(unet, x, cond, 1, 1)  # warm-up, both batch shapes
    forward_time(unet, x, cond, 2, 1)

    # Step by step, interleaved, so a load change on a shared machine hits every method alike:
    # t1, t2, then one step of w2sd, of the reference loop and of plain sampling from their own latents.
    x_ours, x_ref, x_plain = x, x, x
    rows: list[dict[str, float]] = []
    ours_cost = plain_cost = 0.0
    ours_nfe = 0
    for i in range(args.steps):
        sub, reflect = grid[i:i + 2], 1 if i < lam else 0
        t1, t2 = forward_time(unet, x, cond, 1, args.reps), forward_time(unet, x, cond, 2, args.reps)
        ours, (ours_s,) = timed_sample(lambda cb, x0=x_ours, r=reflect, g=sub: sample_w2sd(
            strong, weak, final, x0, schedule, g, lam=r, callback=cb), device)
        x_ref, (ref_s,), (rewired_s,) = reference_loop(unet, x_ref, schedule, sub, reflect, cond, uncond)
        plain, (plain_s,) = timed_sample(lambda cb, x0=x_plain, g=sub: sample_plain(final, x0, schedule, g,
                                                                                    callback=cb), device)
        x_ours, x_plain = ours.x, plain.x
        ours_cost, plain_cost, ours_nfe = ours_cost + ours.cost, plain_cost + plain.cost, ours_nfe + ours.nfe
        rows.append({"t1": t1, "t2": t2, "ours": ours_s, "reference": ref_s, "rewiring": rewired_s,
                     "plain": plain_s, "reflect": reflect})
    reflected = [r for r in rows if r["reflect"]]
    t1 = sum(r["t1"] for r in rows) / len(rows)
    t2 = sum(r["t2"] for r in rows) / len(rows)
    rewiring = sum(r["rewiring"] for r in rows)

    switches = 200
    sync(device)
    start = time.perf_counter()
    for k in range(switches):
        scales.apply({ADAPTER: STRONG if k % 2 else WEAK})
    sync(device)
    switch = (time.perf_counter() - start) / switches
    rewires = 3 * lam

    error = float((x_ours - x_ref).abs().max() / x_ref.abs().max())
    mean = lambda key, items: sum(r[key] for r in items) / len(items)  # noqa: E731
    reflected_ours, reflected_ref = mean("ours", reflected), mean("reference", reflected)
    rewired_per_reflected_step = mean("rewiring", reflected)
    bound = sum(3 * r["t2"] / (2 * r["t1"] + r["t2"]) for r in reflected) / len(reflected)
    speedup = sum(r["reference"] / r["ours"] for r in reflected) / len(reflected)
    speedup_network = sum((r["reference"] - r["rewiring"]) / r["ours"] for r in reflected) / len(reflected)
    predicted = sum(2 * r["t1"] * r["reflect"] + r["t2"] for r in rows)  # batch-1 reflection, batch-2 final legs
    ours_total, plain_total = sum(r["ours"] for r in rows), sum(r["plain"] for r in rows)
    cost_ratio = ours_cost / plain_cost
    figures = {
        "size": args.size, "latent": args.latent, "steps": args.steps, "lambda": lam, "device": str(device),
        "dtype": args.dtype, "threads": torch.get_num_threads(), "lora_layers": len(scales.slots),
        "t1_s": round(t1, 4), "t2_s": round(t2, 4),
        "a_reflected_step_ours_s": round(reflected_ours, 4), "a_reflected_step_reference_s": round(reflected_ref, 4),
        "a_speedup": round(speedup, 4), "a_bound": round(bound, 4),
        "a_speedup_without_rewiring": round(speedup_network, 4),
        "a_speedup_without_rewiring_over_bound": round(speedup_network / bound, 4),
        "a_reference_rewiring_per_reflected_step_s": round(rewired_per_reflected_step, 5),
        "a_max_rel_error": error,
        "b_switch_s": switch, "b_switch_over_t1": switch / t1,
        "b_set_adapters_s": rewiring / rewires if rewires else None,
        "b_set_adapters_over_t1": rewiring / rewires / t1 if rewires else None,
        "c_ours_total_s": round(ours_total, 4), "c_predicted_s": round(predicted, 4),
        "c_ours_over_predicted": round(ours_total / predicted, 4),
        "c_plain_total_s": round(plain_total, 4), "c_cost_ratio": cost_ratio,
        "c_ours_over_plain_times_cost": round(ours_total / (plain_total * cost_ratio), 4),
        "nfe": {"ours": ours_nfe, "cost_ours": ours_cost, "cost_plain": plain_cost},
        "per_step": [{k: round(v, 5) for k, v in r.items()} for r in rows],
    }
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        if key != "per_step":
            print(f"{key:<{width}}  {value}")
    for row in figures["per_step"]:  # type: ignore[attr-defined]
        print("step", row)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(figures, stream, indent=2)
    if error > (1e-3 if dtype == torch.float32 else 2e-2):
        raise SystemExit(f"outputs differ: max relative error {error:.2e}")


if __name__ == "__main__":
    main()
