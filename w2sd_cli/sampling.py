"""The one shared W2SD sampler (Bai, Sugiyama & Xie, arXiv 2502.00473, Algorithm 1), torch only.

A *denoiser* is any callable ``denoiser(x, t) -> prediction`` where the prediction is what the
schedule's step consumes, read at the label ``t`` the network was asked about: eps for a VP diffusion
(x0 where ā = 0), velocity for flow matching. One step function
moves a latent between two noise levels in either direction, so denoising and inversion share it
and there is no scheduler state to reset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from w2sd_cli.errors import ModelError

Level = float
"""A noise level: a discrete timestep (VP, ``-1`` = the clean end) or a time in [0, 1] (flow)."""

Denoiser = Callable[[Tensor, Level], Tensor]
Callback = Callable[[dict[str, Any]], None]

PHASES = ("reflect-denoise", "reflect-invert", "denoise")


class Schedule(Protocol):
    """A noise process: moves ``x`` from level ``t_from`` to ``t_to`` given a network's prediction for ``x``.

    ``label`` is the level the network was asked about (default ``t_from``); the reflection's inversion asks
    about the higher level ``t`` while the latent sits at ``t_to``'s neighbour ``t'`` (paper eq. 5).
    """

    def step(self, x: Tensor, prediction: Tensor, t_from: Level, t_to: Level,
             label: Level | None = None) -> Tensor: ...


@dataclass(frozen=True)
class VPSchedule:
    """Variance-preserving diffusion stepped by deterministic DDIM (eta = 0) in eps space.

    Denoisers stepped with it return the canonical VP prediction at the level they were asked about: eps where
    ā > 0, and x0 where ā = 0 (the first level of a zero-terminal-SNR schedule, where eps equals x and says
    nothing about x0). Adapters convert a v- or x0-network's output with ``vp_prediction`` at that level.

    Args:
        alphas_cumprod: ``ā`` for each training timestep (any float dtype; kept in float64).
        final_alpha_cumprod: ``ā`` of the clean end, level ``-1`` (diffusers' ``set_alpha_to_one``).
        clip_x0: clamp the predicted x0 to ``[-clip_x0, clip_x0]`` (diffusers' ``clip_sample``);
            needed by under-trained pixel-space models, breaks exact invertibility.
    """

    alphas_cumprod: Tensor
    final_alpha_cumprod: float = 1.0
    clip_x0: float | None = None

    @classmethod
    def linear(cls, beta_start: float = 1e-4, beta_end: float = 0.02, steps: int = 1000,
               scaled: bool = False, **kwargs: Any) -> VPSchedule:
        """The DDPM linear schedule, or ``scaled_linear`` (linear in sqrt(beta)) as in Stable Diffusion."""
        if scaled:
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
        else:
            betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
        return cls(torch.cumprod(1.0 - betas, 0), **kwargs)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def alpha_bar(self, t: Level) -> float:
        """ā at a level; negative levels are the clean end."""
        if t < 0:
            return self.final_alpha_cumprod
        return float(self.alphas_cumprod[int(t)])

    def step(self, x: Tensor, prediction: Tensor, t_from: Level, t_to: Level,
             label: Level | None = None) -> Tensor:
        """DDIM (eta 0) from ``t_from`` to ``t_to``; with ``t_to > t_from`` this is the exact DDIM inversion.

        ``prediction`` is the canonical prediction for ``x`` at ``label`` (default ``t_from``): eps is kept as it
        is and x0 recomputed from it at ``t_from``. Where ā(label) = 0 the network's eps is its input ``x``; its
        x0 is the prediction when ``label`` is ``t_from``, else recomputed from that eps like any other.
        """
        label = t_from if label is None else label
        a_from, a_to = self.alpha_bar(t_from), self.alpha_bar(t_to)
        if self.alpha_bar(label) == 0.0:
            eps = x
            x0 = prediction if label == t_from else (x - math.sqrt(1.0 - a_from) * eps) / math.sqrt(a_from)
        else:
            eps = prediction
            x0 = (x - math.sqrt(1.0 - a_from) * eps) / math.sqrt(a_from)
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
            eps = (x - math.sqrt(a_from) * x0) / math.sqrt(1.0 - a_from)
        return math.sqrt(a_to) * x0 + math.sqrt(1.0 - a_to) * eps

    def timesteps(self, steps: int, spacing: str = "leading", offset: int = 0) -> list[Level]:
        """DDIM's time grid as diffusers builds it, plus the clean end (``-1``): ``steps + 1`` levels."""
        n = self.num_train_timesteps
        if not 0 < steps <= n:
            raise ValueError(f"steps must be in 1..{n}, got {steps}")
        if spacing == "leading":
            ratio = n // steps
            grid = [i * ratio + offset for i in range(steps)][::-1]
        elif spacing == "trailing":
            grid = [round(n - i * n / steps) - 1 for i in range(steps)]
        elif spacing == "linspace":
            grid = [round(v) for v in torch.linspace(0, n - 1, steps, dtype=torch.float64).tolist()][::-1]
        else:
            raise ValueError(f"unknown timestep spacing {spacing!r}: use leading, trailing or linspace")
        return [float(t) for t in grid] + [-1.0]


@dataclass(frozen=True)
class FlowSchedule:
    """Rectified flow ``x_t = (1 - t) x0 + t noise`` with a velocity model and Euler steps."""

    def step(self, x: Tensor, prediction: Tensor, t_from: Level, t_to: Level,
             label: Level | None = None) -> Tensor:
        """Euler from ``t_from`` to ``t_to``; with ``t_to > t_from`` this inverts one Euler step.

        The velocity is used as the network gave it, whatever level it was asked about (``label`` is unused).
        """
        return x + (t_to - t_from) * prediction

    def timesteps(self, steps: int, shift: float = 1.0) -> list[Level]:
        """``steps + 1`` times from 1 down to 0, optionally shifted toward noise (SD3's ``shift``)."""
        ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        ts = shift * ts / (1 + (shift - 1) * ts)
        return [float(t) for t in ts]


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
"""What a VP network may be trained to output (diffusers' ``prediction_type`` names)."""


def vp_prediction(prediction_type: str, x: Tensor, output: Tensor, alpha_bar: float) -> Tensor:
    """A VP network's raw output for ``x`` at its label as the canonical prediction ``VPSchedule.step`` takes.

    ā > 0: eps (from v: eps = sqrt(ā) v + sqrt(1 - ā) x; from x0: eps = (x - sqrt(ā) x0) / sqrt(1 - ā)).
    ā = 0: x0 (from v: x0 = -v), since eps equals x there.

    Args:
        prediction_type: ``epsilon``, ``v_prediction`` or ``sample``.
        x: the network's input; output: what it returned; alpha_bar: ā at the label it was asked about.

    Raises:
        ModelError: an unknown prediction type, or an eps network asked about ā = 0 (its answer carries no x0).
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ModelError(f"prediction type {prediction_type!r} is not one w2sd samples; set the model's "
                         f"`prediction_type` to one of {', '.join(PREDICTION_TYPES)}.")
    if alpha_bar == 0.0:
        if prediction_type == "epsilon":
            raise ModelError("an eps-predicting network cannot be sampled where ā = 0 (the first level of a "
                             "zero-terminal-SNR schedule), as its answer says nothing about the image; start "
                             "below that level (`timestep_spacing: leading`) or use a v-prediction model.")
        return -output if prediction_type == "v_prediction" else output
    if prediction_type == "v_prediction":
        return math.sqrt(alpha_bar) * output + math.sqrt(1.0 - alpha_bar) * x
    if prediction_type == "sample":
        return (x - math.sqrt(alpha_bar) * output) / math.sqrt(1.0 - alpha_bar)
    return output


@dataclass
class SampleResult:
    """A finished sample: the latent, calls per role, network evaluations and their batch-1 cost.

    A denoiser may carry ``nfe`` (network predictions per call, e.g. 2 for an extrapolation of two
    networks) and ``cost`` (batch-1 forward units per call, e.g. 2 for batched CFG); both default to 1.
    """

    x: Tensor
    calls: dict[str, int] = field(default_factory=dict)
    nfe: int = 0
    cost: float = 0.0


class _Meter:
    """Counts calls, network evaluations and batch-1 cost per role."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.nfe = 0
        self.cost = 0.0

    def __call__(self, role: str, denoiser: Denoiser, x: Tensor, t: Level) -> Tensor:
        self.calls[role] = self.calls.get(role, 0) + 1
        self.nfe += int(getattr(denoiser, "nfe", 1))
        self.cost += float(getattr(denoiser, "cost", 1.0))
        return denoiser(x, t)


def reflect_steps(steps: int, lam: int | None = None, reflect: Iterable[int] | None = None) -> frozenset[int]:
    """Indices of the steps that reflect: the first ``lam`` (default ``steps - 1``), or an explicit set."""
    if reflect is not None:
        chosen = frozenset(int(i) for i in reflect)
        if any(not 0 <= i < steps for i in chosen):
            raise ValueError(f"reflect steps must lie in 0..{steps - 1}, got {sorted(chosen)}")
        return chosen
    lam = steps - 1 if lam is None else lam
    if not 0 <= lam <= steps:
        raise ValueError(f"lambda must be in 0..{steps}, got {lam}")
    return frozenset(range(lam))


def sample_w2sd(strong: Denoiser, weak: Denoiser, final: Denoiser, x: Tensor, schedule: Schedule,
                grid: Sequence[Level], *, lam: int | None = None, reflect: Iterable[int] | None = None,
                rounds: int = 1, reference_interval: bool = False,
                callback: Callback | None = None) -> SampleResult:
    """W2SD (paper Algorithm 1): strong denoise, weak inversion back to the same level, then denoise.

    Args:
        strong, weak: the pair's reflection denoisers. The weak one sees the denoised latent with the
            higher level's label (paper eq. 5).
        final: the denoiser of the closing denoise step (strong at the final CFG, usually).
        x: initial noise at ``grid[0]``.
        schedule: how a latent moves between levels (``VPSchedule`` or ``FlowSchedule``).
        grid: ``T + 1`` levels from the noisiest to the clean end.
        lam: reflect on the first ``lam`` steps (default ``T - 1``); ``reflect`` names them instead.
        rounds: reflections per reflecting step (paper: 1).
        reference_interval: reproduce the reference code's inversion interval
            ``(t' - Δ) → t'`` instead of the exact ``t' → t`` (VP grids only).
        callback: called with a dict per phase (``i``, ``phase``, ``t``, ``t_next``, ``x``, ``nfe``).

    Returns:
        The sample, its calls per role (``strong``, ``weak``, ``final``), NFE and cost.
    """
    steps = len(grid) - 1
    reflecting = reflect_steps(steps, lam, reflect)
    meter = _Meter()

    def report(i: int, phase: str, t: Level, t_next: Level, latent: Tensor) -> None:
        if callback is not None:
            callback({"i": i, "steps": steps, "phase": phase, "t": t, "t_next": t_next, "x": latent,
                      "nfe": meter.nfe})

    for i in range(steps):
        t, t_next = grid[i], grid[i + 1]
        for _ in range(rounds if i in reflecting else 0):
            denoised = schedule.step(x, meter("strong", strong, x, t), t, t_next)
            report(i, "reflect-denoise", t, t_next, denoised)
            eps_weak = meter("weak", weak, denoised, t)
            start, end = (_reference_start(grid, i), t_next) if reference_interval else (t_next, t)
            x = schedule.step(denoised, eps_weak, start, end, label=t)
            report(i, "reflect-invert", t, t_next, x)
        x = schedule.step(x, meter("final", final, x, t), t, t_next)
        report(i, "denoise", t, t_next, x)
    return SampleResult(x, dict(meter.calls), meter.nfe, meter.cost)


def _reference_start(grid: Sequence[Level], i: int) -> Level:
    """The reference's inversion source: one grid spacing below ``t_{i+1}``, or the clean end."""
    spacing = grid[0] - grid[1]
    start = grid[i + 1] - spacing
    return start if start >= 0 else -1.0


def sample_plain(denoiser: Denoiser, x: Tensor, schedule: Schedule, grid: Sequence[Level], *,
                 callback: Callback | None = None) -> SampleResult:
    """Plain deterministic sampling (DDIM or Euler) with one denoiser: W2SD with no reflection."""
    return sample_w2sd(denoiser, denoiser, denoiser, x, schedule, grid, lam=0, callback=callback)


def extrapolate(strong: Denoiser, weak: Denoiser, k: float = 1.0, base: Denoiser | None = None) -> Denoiser:
    """The first-order control ``eps_base + k (eps_s - eps_w)`` at one point (autoguidance w = 1 + k).

    ``base`` defaults to ``strong``: ``eps_s + k (eps_s - eps_w)``. With W2SD's reflection sides and the final
    denoiser as ``base`` this is what one W2SD step equals to first order (docs/method.md); for a guidance pair
    it is plain CFG at ``w_f + k (w_s - w_w)``.
    """
    parts = [strong, weak] if base is None or base is strong else [base, strong, weak]

    def denoise(x: Tensor, t: Level) -> Tensor:
        e_strong = strong(x, t)
        e_base = e_strong if base is None or base is strong else base(x, t)
        return e_base + k * (e_strong - weak(x, t))

    denoise.nfe = sum(int(getattr(d, "nfe", 1)) for d in parts)  # type: ignore[attr-defined]
    denoise.cost = sum(float(getattr(d, "cost", 1.0)) for d in parts)  # type: ignore[attr-defined]
    return denoise


def equal_nfe_steps(steps: int, lam: int | None = None, rounds: int = 1) -> int:
    """Plain-sampling step count with the same network evaluations as W2SD: ``T + 2 λ r``."""
    lam = steps - 1 if lam is None else lam
    return steps + 2 * lam * rounds
