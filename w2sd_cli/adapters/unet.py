"""A diffusers UNet (eps or v prediction) plus conditioning and CFG, as a ``Denoiser``.

CFG 1 runs the conditional branch alone and CFG 0 the unconditional branch alone, each at batch 1;
any other scale runs both branches in one batch-2 call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from w2sd_cli.sampling import Level, VPSchedule, eps_from_v, eps_from_x0


@dataclass(frozen=True)
class Conditioning:
    """What the UNet is conditioned on for one branch: text states plus SDXL's ``added_cond_kwargs``."""

    hidden_states: Tensor
    added: dict[str, Tensor] = field(default_factory=dict)

    def to_batch(self, n: int) -> Conditioning:
        """The same conditioning for a batch of ``n`` latents (a batch-1 conditioning is expanded, not copied)."""
        if self.hidden_states.shape[0] == n:
            return self
        if self.hidden_states.shape[0] != 1:
            raise ValueError(f"conditioning of batch {self.hidden_states.shape[0]} for {n} latents")
        return Conditioning(self.hidden_states.expand(n, *self.hidden_states.shape[1:]),
                            {k: v.expand(n, *v.shape[1:]) for k, v in self.added.items()})

    def batch(self, other: Conditioning) -> Conditioning:
        """Both branches stacked (``self`` first)."""
        added = {k: torch.cat([v, other.added[k]]) for k, v in self.added.items()}
        return Conditioning(torch.cat([self.hidden_states, other.hidden_states]), added)


Network = Callable[[Tensor, Tensor, Conditioning], Tensor]
"""``network(x, timestep, conditioning) -> raw prediction`` (what the model was trained to output)."""


def unet_network(unet: Any, extra: Callable[[Tensor, Tensor, Conditioning], dict[str, Any]] | None = None) -> Network:
    """Wrap a diffusers ``UNet2DConditionModel``; ``extra`` adds keyword arguments (e.g. ControlNet residuals)."""

    def call(x: Tensor, timestep: Tensor, cond: Conditioning) -> Tensor:
        kwargs = extra(x, timestep, cond) if extra is not None else {}
        added = cond.added or None
        out = unet(x, timestep, encoder_hidden_states=cond.hidden_states, added_cond_kwargs=added,
                   return_dict=False, **kwargs)[0]
        return out

    return call


@dataclass
class CFGDenoiser:
    """eps of a conditional network at one CFG scale: ``eps_u + cfg (eps_c - eps_u)``.

    Args:
        network: the raw network call.
        schedule: the VP schedule (to convert v or x0 predictions to eps).
        cond, uncond: conditioning of the two branches (``uncond`` unused at CFG 1).
        cfg: the guidance scale.
        prediction_type: ``epsilon``, ``v_prediction`` or ``sample``.
        dtype: the network's dtype; inputs are cast to it, outputs back to the latent's dtype.
        learned_sigma: the network outputs ``2·C`` channels (eps, variance); keep the eps half.
    """

    network: Network
    schedule: VPSchedule
    cond: Conditioning
    uncond: Conditioning | None
    cfg: float
    prediction_type: str = "epsilon"
    dtype: torch.dtype | None = None
    learned_sigma: bool = False

    @property
    def cost(self) -> float:
        """Batch-1 units per call: 1 at CFG 0 or 1, 2 otherwise."""
        return 1.0 if self.cfg in (0.0, 1.0) else 2.0

    def __call__(self, x: Tensor, t: Level) -> Tensor:
        if self.cfg == 1.0 or self.uncond is None:
            if self.uncond is None and self.cfg != 1.0:
                raise ValueError("CFG other than 1 needs an unconditional branch")
            return self._eps(x, t, self.cond)
        if self.cfg == 0.0:
            return self._eps(x, t, self.uncond)
        n = x.shape[0]
        both = self._eps(torch.cat([x, x]), t, self.uncond.to_batch(n).batch(self.cond.to_batch(n)))
        e_uncond, e_cond = both.chunk(2)
        return e_uncond + self.cfg * (e_cond - e_uncond)

    def _eps(self, x: Tensor, t: Level, cond: Conditioning) -> Tensor:
        net_x = x.to(self.dtype) if self.dtype is not None else x
        timestep = torch.full((x.shape[0],), float(t), device=x.device)
        out = self.network(net_x, timestep, cond.to_batch(x.shape[0])).to(x.dtype)
        if self.learned_sigma:
            out = out[:, : x.shape[1]]
        a = self.schedule.alpha_bar(t)
        if self.prediction_type == "v_prediction":
            return eps_from_v(x, out, a)
        if self.prediction_type == "sample":
            return eps_from_x0(x, out, a)
        return out


def schedule_from_config(config: dict[str, Any]) -> VPSchedule:
    """The VP schedule of a diffusers scheduler config (DDPM/DDIM/PNDM/Euler... share these keys)."""
    n = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
    kind = config.get("beta_schedule", "linear")
    if config.get("trained_betas"):
        betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
    elif kind == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float64)
    elif kind == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    elif kind == "squaredcos_cap_v2":
        steps = torch.arange(n + 1, dtype=torch.float64) / n
        f = torch.cos((steps + 0.008) / 1.008 * torch.pi / 2) ** 2
        betas = torch.clamp(1 - f[1:] / f[:-1], max=0.999)
    else:
        raise ValueError(f"unsupported beta_schedule {kind!r}")
    alphas_cumprod = torch.cumprod(1.0 - betas, 0)
    final = 1.0 if config.get("set_alpha_to_one", True) else float(alphas_cumprod[0])
    clip = float(config.get("clip_sample_range", 1.0)) if config.get("clip_sample", False) else None
    return VPSchedule(alphas_cumprod, final_alpha_cumprod=final, clip_x0=clip)


def grid_from_config(schedule: VPSchedule, config: dict[str, Any], steps: int) -> list[Level]:
    """DDIM levels for ``steps`` with the config's ``timestep_spacing`` and ``steps_offset``."""
    return schedule.timesteps(steps, config.get("timestep_spacing", "leading"), int(config.get("steps_offset", 0)))
