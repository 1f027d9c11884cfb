"""A diffusers UNet (eps, v or x0 prediction) or flow transformer plus conditioning and CFG, as a ``Denoiser``.

CFG 1 runs the conditional branch alone and CFG 0 the unconditional branch alone, each at batch 1;
any other scale runs both branches in one batch-2 call.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from w2sd_cli.errors import ModelError
from w2sd_cli.sampling import PREDICTION_TYPES, Level, VPSchedule, vp_prediction


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

    Each branch's output is read once, at the label the network was asked about (``vp_prediction``): eps, or x0
    where ā = 0; guidance combines those, which equals diffusers' guidance in the network's own terms.

    Args:
        network: the raw network call.
        schedule: the VP schedule (its ā at the label converts the network's output). Flow models
            (``prediction_type`` ``velocity``) step their output as it is.
        cond, uncond: conditioning of the two branches (``uncond`` unused at CFG 1).
        cfg: the guidance scale.
        prediction_type: ``epsilon``, ``v_prediction``, ``sample`` or ``velocity`` (flow matching).
        dtype: the network's dtype; inputs are cast to it, outputs back to the latent's dtype.
        learned_sigma: the network outputs ``2·C`` channels (eps, variance); keep the eps half.
        guided_channels: guide only the first N channels; the rest keep the conditional prediction (upstream
            DiT's ``forward_with_cfg`` guides 3 of the 4 latent channels). ``None``: all channels.
    """

    network: Network
    schedule: Any
    cond: Conditioning
    uncond: Conditioning | None
    cfg: float
    prediction_type: str = "epsilon"
    dtype: torch.dtype | None = None
    learned_sigma: bool = False
    guided_channels: int | None = None

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
        guided = e_uncond + self.cfg * (e_cond - e_uncond)
        if self.guided_channels is None:
            return guided
        c = self.guided_channels
        return torch.cat([guided[:, :c], e_cond[:, c:]], dim=1)

    def _eps(self, x: Tensor, t: Level, cond: Conditioning) -> Tensor:
        net_x = x.to(self.dtype) if self.dtype is not None else x
        timestep = torch.full((x.shape[0],), float(t), device=x.device)
        out = self.network(net_x, timestep, cond.to_batch(x.shape[0])).to(x.dtype)
        if self.learned_sigma:
            out = out[:, : x.shape[1]]
        if self.prediction_type == "velocity":  # a flow model's output is what its Euler step takes
            return out
        return self._convert(x, out, self.schedule.alpha_bar(t))

    def _convert(self, x: Tensor, out: Tensor, a: float) -> Tensor:
        """The network's output at its label as the schedule's canonical prediction."""
        return vp_prediction(self.prediction_type, x, out, a)


LEARNED_VARIANCE = ("learned", "learned_range")
SPACINGS = ("leading", "trailing", "linspace")


def schedule_from_config(config: dict[str, Any]) -> VPSchedule:
    """The VP schedule of a model's diffusers scheduler config, as diffusers' own classes read it.

    The class named by ``_class_name`` (DDIM when absent or unknown) gives the betas, so its ``beta_schedule``,
    ``trained_betas`` and ``rescale_betas_zero_snr`` apply, and ``clip_sample`` (off for classes that never clip);
    w2sd samples with DDIM, so ``DDIMScheduler.from_config`` over those betas gives ā and the clean end
    (``set_alpha_to_one``). A zero-terminal-SNR schedule ends at ā = 0 exactly; there v- and x0-predicting models
    give x0 (``vp_prediction``), so the step stays finite. The prediction type is the denoiser's business, not the
    schedule's.

    Raises:
        ModelError: a setting w2sd cannot honour (``thresholding``, a prediction type other than eps, v or x0,
            a learned variance, a scheduler with no betas such as flow matching).
    """
    named, ddim = _schedulers(config)
    clip = float(named.config.get("clip_sample_range", 1.0)) if named.config.get("clip_sample", False) else None
    return VPSchedule(ddim.alphas_cumprod.to(torch.float64), final_alpha_cumprod=float(ddim.final_alpha_cumprod),
                      clip_x0=clip)


def grid_from_config(schedule: VPSchedule, config: dict[str, Any], steps: int) -> list[Level]:
    """DDIM's levels for ``steps``: ``DDIMScheduler.set_timesteps`` of the config (spacing, offset), then -1.

    Raises:
        ModelError: the grid cannot be sampled (a level past the schedule; an eps model asked to start at ā = 0).
    """
    ddim = _schedulers(config)[1]
    if not 0 < steps <= schedule.num_train_timesteps:
        raise ModelError(f"steps must be in 1..{schedule.num_train_timesteps} for this model, got {steps}.")
    spacing = ddim.config.timestep_spacing
    if spacing not in SPACINGS:
        raise ModelError(f"scheduler config: `timestep_spacing: {json.dumps(spacing)}` is not supported; DDIM knows "
                         f"{', '.join(SPACINGS)}.")
    ddim.set_timesteps(steps)
    grid = [float(t) for t in ddim.timesteps.tolist()]
    if grid[0] >= schedule.num_train_timesteps:
        raise ModelError(f"scheduler config: {steps} steps with `steps_offset: {ddim.config.steps_offset}` reach "
                         f"timestep {int(grid[0])}, past the model's last ({schedule.num_train_timesteps - 1}); "
                         "use fewer steps.")
    if config.get("prediction_type", "epsilon") == "epsilon" and schedule.alpha_bar(grid[0]) == 0.0:
        raise ModelError("scheduler config: an eps-predicting model with a zero-terminal-SNR schedule "
                         "(`rescale_betas_zero_snr`) cannot start at timestep "
                         f"{int(grid[0])}, where ā = 0 and eps says nothing about the image; use "
                         "`timestep_spacing: leading`, or a v-prediction model.")
    return [*grid, -1.0]


def _schedulers(config: dict[str, Any]) -> tuple[Any, Any]:
    """The class the config names and ``DDIMScheduler.from_config`` over its betas, after refusing what w2sd
    cannot honour."""
    import diffusers

    name = config.get("_class_name")
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        cls = diffusers.DDIMScheduler
    what = f"scheduler config ({cls.__name__})"
    for key, refused, why in (
            ("thresholding", (True,), "dynamic thresholding rescales x0 per sample, which w2sd's sampler does not do"),
            ("variance_type", LEARNED_VARIANCE, "the network predicts a variance too, which w2sd's UNet adapter "
                                                "does not split off")):
        if config.get(key) in refused:
            raise ModelError(f"{what}: `{key}: {json.dumps(config[key])}` is not supported: {why}. Edit the model's "
                             "scheduler/scheduler_config.json if the model does not need it.")
    if config.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
        raise ModelError(f"{what}: `prediction_type: {json.dumps(config['prediction_type'])}` is not supported; w2sd "
                         f"samples models that predict {', '.join(PREDICTION_TYPES)}.")
    try:
        named = cls.from_config(config)
        betas = getattr(named, "betas", None)
        if not isinstance(betas, torch.Tensor):
            raise ModelError(f"{what}: this scheduler has no betas (a flow-matching model?); w2sd's UNet adapter "
                             "needs a variance-preserving (DDPM/DDIM-type) noise schedule.")
        ddim = diffusers.DDIMScheduler.from_config(config, trained_betas=betas.tolist(), rescale_betas_zero_snr=False)
        return named, ddim
    except (ValueError, NotImplementedError, TypeError) as err:
        raise ModelError(f"{what}: {err}") from None
