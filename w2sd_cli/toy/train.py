"""Train the shapes pair from scratch on CPU: ``python -m w2sd_cli.toy.train --out DIR [--minutes M | --steps N]``.

One torch thread, fixed seeds, scenes rendered on the fly. The UNet and the text encoder train jointly;
an exponential moving average (EMA) of both is kept. **strong** = the final EMA, **weak** = the EMA
snapshot at 20% of training (the autoguidance recipe: same data, same model, less training). Each is
saved as a diffusers-style folder (``unet/ text_encoder/ tokenizer/ scheduler/``) in fp16 safetensors.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from w2sd_cli.toy import components
from w2sd_cli.toy.world import render, sample_scene, training_caption

log = logging.getLogger("w2sd.toy.train")

WEAK_FRACTION = 0.2


def batch(step: int, size: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Images in [-1, 1] and captions of training batch ``step`` (a pure function of its arguments)."""
    images, captions = [], []
    for i in range(size):
        index = (seed * 1_000_003 + step * size + i)
        scene = sample_scene(index, "train")
        images.append(render(scene))
        captions.append(training_caption(scene, random.Random(index)))
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return pixels, captions


class EMA:
    """An exponential moving average of several modules' parameters (decay warms up from 0)."""

    def __init__(self, modules: list[torch.nn.Module], decay: float) -> None:
        self.modules = modules
        self.copies = [copy.deepcopy(m).eval().requires_grad_(False) for m in modules]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for live, avg in zip(self.modules, self.copies, strict=True):
            for p, q in zip(live.parameters(), avg.parameters(), strict=True):
                q.lerp_(p, 1 - d)

    def snapshot(self) -> list[torch.nn.Module]:
        return [copy.deepcopy(c) for c in self.copies]


def save_model(folder: Path, unet: torch.nn.Module, text_encoder: torch.nn.Module, tokenizer: Any) -> None:
    """Write a diffusers-style model folder with fp16 weights."""
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler

    folder.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(unet).half().save_pretrained(folder / "unet", safe_serialization=True)  # type: ignore[operator]
    copy.deepcopy(text_encoder).half().save_pretrained(folder / "text_encoder",  # type: ignore[operator]
                                                       safe_serialization=True)
    tokenizer.save_pretrained(folder / "tokenizer")
    DDIMScheduler(**components.SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")


def train(out: Path, *, minutes: float | None, steps: int | None, weak_step: int | None = None,
          batch_size: int = 32, lr: float = 1e-3, ema_decay: float = 0.999, seed: int = 0) -> dict[str, Any]:
    """Train and save ``out/strong`` and ``out/weak``; returns the training record for the model card.

    Args:
        out: output folder.
        minutes: wall-clock budget; the weak snapshot is taken at 20% of it.
        steps: train exactly this many steps instead (reproducible on any machine).
        weak_step: the step of the weak snapshot (default 20% of ``steps``).
        batch_size, lr, ema_decay, seed: the recipe.
    """
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    tokenizer = components.build_tokenizer()
    text_encoder = components.build_text_encoder(len(tokenizer))
    unet = components.build_unet()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ema = EMA([unet, text_encoder], ema_decay)
    from w2sd_cli.adapters.unet import schedule_from_config

    alpha_bar = schedule_from_config(components.SCHEDULER_CONFIG).alphas_cumprod.float()
    generator = torch.Generator().manual_seed(seed)
    start = time.monotonic()
    budget = None if minutes is None else minutes * 60.0
    weak_at = weak_step if weak_step is not None else (None if steps is None else max(1, int(steps * WEAK_FRACTION)))
    weak: list[torch.nn.Module] | None = None
    losses: list[float] = []
    history: list[dict[str, float]] = []
    step = 0
    while True:
        elapsed = time.monotonic() - start
        if (steps is not None and step >= steps) or (budget is not None and elapsed >= budget):
            break
        if weak is None and ((weak_at is not None and step >= weak_at)
                             or (weak_at is None and budget is not None and elapsed >= WEAK_FRACTION * budget)):
            weak, weak_step = ema.snapshot(), step
            save_model(out / "weak", weak[0], weak[1], tokenizer)
            log.info("weak snapshot at step %d", step)
        warm = min(1.0, (step + 1) / 200)
        for group in optimiser.param_groups:
            group["lr"] = lr * warm
        x0, captions = batch(step, batch_size, seed)
        t = torch.randint(0, alpha_bar.numel(), (batch_size,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = alpha_bar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        states = components.encode(tokenizer, text_encoder, captions)
        pred = unet(xt, t, encoder_hidden_states=states, return_dict=False)[0]
        target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v-prediction
        loss = torch.nn.functional.mse_loss(pred, target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        ema.update(step)
        losses.append(loss.item())
        step += 1
        if step % 200 == 0:
            mean = float(np.mean(losses[-200:]))
            history.append({"step": step, "loss": round(mean, 5), "minutes": round(elapsed / 60, 2)})
            log.info("step %d loss %.4f (%.1f min)", step, mean, elapsed / 60)
        if step % 2000 == 0:
            save_model(out / "strong", ema.copies[0], ema.copies[1], tokenizer)
    if weak is None:
        raise RuntimeError("training ended before the weak snapshot; give it more steps or minutes")
    save_model(out / "strong", ema.copies[0], ema.copies[1], tokenizer)
    record = {
        "steps": step, "weak_step": weak_step, "batch_size": batch_size, "lr": lr, "ema_decay": ema_decay,
        "seed": seed, "minutes": round((time.monotonic() - start) / 60, 1),
        "final_loss": round(float(np.mean(losses[-500:])), 5), "loss_history": history,
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "text_encoder_parameters": sum(p.numel() for p in text_encoder.parameters()),
    }
    (out / "training.json").write_text(json.dumps(record, indent=1))
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="folder for strong/, weak/ and MODEL_CARD.md")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget (default 40)")
    parser.add_argument("--steps", type=int, default=None, help="train exactly this many steps instead")
    parser.add_argument("--weak-step", type=int, default=None, help="step of the weak snapshot (default 20%%)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--card-only", action="store_true", help="only (re)write MODEL_CARD.md from saved weights")
    parser.add_argument("--no-scores", action="store_true", help="write MODEL_CARD.md without the checker scores "
                        "(they sample the held-out set, minutes on a CPU; the weights are the same either way)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    minutes = args.minutes if args.minutes is not None or args.steps is not None else 40.0
    if not args.card_only:
        train(args.out, minutes=minutes, steps=args.steps, weak_step=args.weak_step, seed=args.seed)
    record = json.loads((args.out / "training.json").read_text())
    from w2sd_cli.toy.card import write_model_card

    write_model_card(args.out, record, scores={} if args.no_scores else None)
    log.info("wrote %s", args.out / "MODEL_CARD.md")


if __name__ == "__main__":
    main()
