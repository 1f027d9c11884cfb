"""Gaussian mixtures with closed-form scores at every noise level: exact "models" and test oracles.

Under VP noising ``x_t = sqrt(ā) x0 + sqrt(1 - ā) n`` a mixture with weights π_k, means μ_k and
isotropic std s_k stays a mixture with means ``sqrt(ā) μ_k`` and variances ``ā s_k² + 1 - ā``, and
``eps = -sqrt(1 - ā) ∇ log p_t``. Under flow noising ``x_t = (1 - t) x0 + t n`` the means are
``(1 - t) μ_k`` and the variances ``(1 - t)² s_k² + t²``. Torch only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from w2sd_cli.sampling import Level, VPSchedule


@dataclass(frozen=True)
class GaussianMixture:
    """An isotropic Gaussian mixture in ``dim`` dimensions, held in float64.

    Args:
        weights: mixture weights (normalised on construction).
        means: one row per component, shape ``(K, dim)``.
        stds: one isotropic standard deviation per component.
    """

    weights: Tensor
    means: Tensor
    stds: Tensor

    @classmethod
    def of(cls, weights: Sequence[float], means: Sequence[Sequence[float]] | Sequence[float],
           stds: Sequence[float] | float) -> GaussianMixture:
        """Build from plain lists; 1-D means may be given as a flat list."""
        w = torch.tensor(list(weights), dtype=torch.float64)
        m = torch.tensor(means, dtype=torch.float64)
        if m.ndim == 1:
            m = m[:, None]
        s = torch.as_tensor(stds, dtype=torch.float64).expand(m.shape[0]).clone()
        if w.ndim != 1 or w.shape[0] != m.shape[0]:
            raise ValueError(f"{w.shape[0]} weights for {m.shape[0]} means")
        if (w < 0).any() or float(w.sum()) <= 0:
            raise ValueError("mixture weights must be non-negative and not all zero")
        if (s <= 0).any():
            raise ValueError("component stds must be positive")
        return cls(w / w.sum(), m, s)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def noised(self, scale: float, noise_std: float) -> GaussianMixture:
        """The law of ``scale · x0 + noise_std · n``."""
        return GaussianMixture(self.weights, scale * self.means,
                               torch.sqrt(scale**2 * self.stds**2 + noise_std**2))

    def log_prob(self, x: Tensor) -> Tensor:
        """Log density at each row of ``x`` (shape ``(N, dim)``)."""
        return torch.logsumexp(self._component_log_probs(x), dim=1).to(x.dtype)

    def score(self, x: Tensor) -> Tensor:
        """∇ log p at each row of ``x``."""
        xd = x.to(torch.float64)
        resp = torch.softmax(self._component_log_probs(xd), dim=1)  # (N, K)
        var = self.stds**2
        pull = (self.means[None, :, :] - xd[:, None, :]) / var[None, :, None]
        return (resp[:, :, None] * pull).sum(1).to(x.dtype)

    def posterior_mean(self, x: Tensor, scale: float, noise_std: float) -> Tensor:
        """``E[x0 | scale · x0 + noise_std · n = x]`` at each row of ``x``; finite at ``scale = 0`` (the mean)."""
        xd = x.to(torch.float64)
        resp = torch.softmax(self.noised(scale, noise_std)._component_log_probs(xd), dim=1)  # (N, K)
        var = self.stds**2
        gain = scale * var / (scale**2 * var + noise_std**2)  # per component
        shift = xd[:, None, :] - scale * self.means[None, :, :]
        component = self.means[None, :, :] + gain[None, :, None] * shift
        return (resp[:, :, None] * component).sum(1).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` float64 samples."""
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return self.means[idx] + self.stds[idx, None] * noise

    def assign(self, x: Tensor) -> Tensor:
        """The nearest component mean of each row (the "mode" a sample landed in)."""
        return torch.cdist(x.to(torch.float64), self.means).argmin(dim=1)

    def _component_log_probs(self, x: Tensor) -> Tensor:
        xd = x.to(torch.float64)
        var = self.stds**2
        sq = ((xd[:, None, :] - self.means[None, :, :]) ** 2).sum(-1)
        norm = -0.5 * self.dim * torch.log(2 * math.pi * var)
        return torch.log(self.weights)[None, :] + norm[None, :] - 0.5 * sq / var[None, :]


@dataclass(frozen=True)
class MixtureEps:
    """The exact eps-predictor of a mixture under a VP schedule: a ``Denoiser``."""

    mixture: GaussianMixture
    schedule: VPSchedule

    def __call__(self, x: Tensor, t: Level) -> Tensor:
        a = self.schedule.alpha_bar(t)
        p_t = self.mixture.noised(math.sqrt(a), math.sqrt(1.0 - a))
        return -math.sqrt(1.0 - a) * p_t.score(x)


@dataclass(frozen=True)
class MixtureNetwork:
    """The exact VP network of a mixture trained for ``prediction_type``: its raw output, as a network gives it.

    ``epsilon``, ``v_prediction`` (v = sqrt(ā) eps - sqrt(1 - ā) x0) or ``sample`` (x0 = E[x0 | x_t]); all three
    are finite at ā = 0 except eps, which is x there. Read it with ``sampling.vp_prediction`` at its label.
    """

    mixture: GaussianMixture
    schedule: VPSchedule
    prediction_type: str = "epsilon"

    def __call__(self, x: Tensor, t: Level) -> Tensor:
        a = self.schedule.alpha_bar(t)
        x0 = self.mixture.posterior_mean(x, math.sqrt(a), math.sqrt(1.0 - a))
        if self.prediction_type == "sample":
            return x0
        eps = MixtureEps(self.mixture, self.schedule)(x, t)
        if self.prediction_type == "v_prediction":
            return math.sqrt(a) * eps - math.sqrt(1.0 - a) * x0
        return eps


@dataclass(frozen=True)
class MixtureVelocity:
    """The exact velocity ``E[n - x0 | x_t]`` of a mixture under rectified-flow noising: a ``Denoiser``."""

    mixture: GaussianMixture

    def __call__(self, x: Tensor, t: Level) -> Tensor:
        t = min(max(float(t), 1e-6), 1.0 - 1e-6)
        p_t = self.mixture.noised(1.0 - t, t)
        noise = -t * p_t.score(x)
        x0 = (x - t * noise) / (1.0 - t)
        return noise - x0


def occupancy(mixture: GaussianMixture, x: Tensor) -> Tensor:
    """Share of samples nearest to each component mean."""
    counts = torch.bincount(mixture.assign(x), minlength=mixture.weights.shape[0]).to(torch.float64)
    return counts / counts.sum()


def kl_divergence(p: Tensor, q: Tensor) -> float:
    """KL(p ‖ q) of two discrete distributions (0 · log 0 = 0)."""
    mask = p > 0
    return float((p[mask] * torch.log(p[mask] / q[mask])).sum())


def quadrant_occupancy(x: Tensor) -> Tensor:
    """2-D: share of samples in the quadrants (bottom-left, bottom-right, top-left, top-right)."""
    right = (x[:, 0] > 0).long()
    top = (x[:, 1] > 0).long()
    counts = torch.bincount(2 * top + right, minlength=4).to(torch.float64)
    return counts / counts.sum()


def spread_ratio(mixture: GaussianMixture, x: Tensor) -> Tensor:
    """Per component: std of the samples assigned to it over the component's true std (1 = right)."""
    labels = mixture.assign(x)
    ratios = []
    for k in range(mixture.weights.shape[0]):
        members = x[labels == k].to(torch.float64)
        if members.shape[0] < 2:
            ratios.append(float("nan"))
            continue
        spread = members.sub(members.mean(0)).pow(2).sum(1).mean().div(mixture.dim).sqrt()
        ratios.append(float(spread / mixture.stds[k]))
    return torch.tensor(ratios, dtype=torch.float64)
