"""The ``tempered`` kind and the ``mode-balance`` metric, written only against ``w2sd_cli.plugin``.

A tempered pair: the strong model is a Gaussian mixture with weights π; the weak model is the same mixture with
weights π^τ (τ > 1 exaggerates the strong model's bias), so W2SD pushes the other way, toward flatter weights.
The scores are exact, so the kind needs no training and no download. Sampling, batching, files, panels and
recipes are w2sd's engine's job; a kind only answers load / prepare / decode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from w2sd_cli.plugin import Condition, LoadSettings, PairCard, PairKind, PreparedPair, Settings, Strict


class TemperedOptions(Strict):
    """Options of a ``tempered`` card: the strong mixture (isotropic, one std) and the temperature τ."""

    means: list[list[float]] = Field(min_length=1)
    weights: list[float] = Field(min_length=1)
    std: float = Field(0.5, gt=0)
    temperature: float = Field(2.0, gt=0)


class TemperedKind(PairKind):
    """Analytic mixtures whose weak side is the strong one, tempered."""

    name = "tempered"
    summary = "Gaussian mixture; weak = strong with weights^temperature (example plugin)"
    options_model = TemperedOptions
    output = "samples"
    conditioning = "none"
    gen_methods = ("weak", "strong", "w2sd")
    compare_methods = gen_methods

    def load(self, card: PairCard, settings: LoadSettings) -> TemperedPair:
        return TemperedPair(self.options(card))


class TemperedPair:
    """Exact eps of the strong and weak mixtures under the VP schedule (no models to load)."""

    def __init__(self, options: TemperedOptions) -> None:
        self.options = options

    def prepare(self, condition: Condition, settings: Settings) -> PreparedPair:
        import torch

        from w2sd_cli.plugin import VPSchedule

        schedule = VPSchedule.linear()
        o = self.options
        means = torch.tensor(o.means, dtype=torch.float64)
        strong = torch.tensor(o.weights, dtype=torch.float64)
        weak = strong**o.temperature

        def eps_of(weights: Any) -> Any:
            log_w = torch.log(weights / weights.sum())

            def eps(x: Any, t: float) -> Any:
                a = schedule.alpha_bar(t)
                var = a * o.std**2 + 1 - a
                diff = x[:, None, :] - math.sqrt(a) * means[None]  # (N, K, D)
                log_r = log_w - (diff**2).sum(-1) / (2 * var)
                r = torch.softmax(log_r, dim=1)
                score = -(r[..., None] * diff).sum(1) / var
                return -math.sqrt(1 - a) * score

            return eps

        samples = settings.samples or 20_000

        def noise(seed: int) -> Any:
            generator = torch.Generator().manual_seed(seed)
            return torch.randn(samples, means.shape[1], dtype=torch.float64, generator=generator)

        e_strong, e_weak = eps_of(strong), eps_of(weak)
        sides = {"strong": {"weights": o.weights}, "weak": {"weights": weak.tolist()},
                 "final": {"weights": o.weights}, "weak_plain": {"weights": weak.tolist()}}
        return PreparedPair(strong=e_strong, weak=e_weak, final=e_strong, weak_plain=e_weak, schedule=schedule,
                            grid=schedule.timesteps(settings.steps), make_grid=schedule.timesteps, noise=noise,
                            sides=sides)

    def decode(self, x: Any, count: int) -> list[Any]:
        return [part.numpy() for part in x.chunk(count)]

    def provenance(self) -> dict[str, Any]:
        return {"device": "cpu", "dtype": "float64"}


class ModeBalance:
    """Share of samples nearest each mode: KL to equal shares (lower is better) and the emptiest mode's share."""

    name = "mode-balance"
    summary = "tempered pairs: KL(mode shares || uniform) and the least-visited mode's share"
    inputs = "samples"
    directions = {"kl_to_uniform": -1, "emptiest_share": 1}  # noqa: RUF012
    primary = "kl_to_uniform"

    def score(self, samples: Sequence[Any], prompts: Sequence[str], card: Any = None) -> list[dict[str, float]]:
        import numpy as np

        means = np.asarray(TemperedKind().options(card).means)
        rows = []
        for x in samples:
            nearest = np.argmin(((np.asarray(x)[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
            share = np.bincount(nearest, minlength=len(means)) / len(nearest)
            kl = float(np.sum(np.where(share > 0, share * np.log(np.maximum(share, 1e-12) * len(means)), 0.0)))
            rows.append({"kl_to_uniform": kl, "emptiest_share": float(share.min())})
        return rows
