"""docs/method.md: the analytic experiments reproduce within sampling noise (20,000 samples, fixed seed)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from w2sd_cli.analytic import (
    GaussianMixture,
    MixtureEps,
    kl_divergence,
    occupancy,
    quadrant_occupancy,
    spread_ratio,
)
from w2sd_cli.sampling import VPSchedule, sample_plain, sample_w2sd

SCHEDULE = VPSchedule.linear()
GRID = SCHEDULE.timesteps(50)
N = 20_000


def _noise(dim: int) -> Tensor:
    return torch.randn(N, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def bimodal(left: float) -> MixtureEps:
    return MixtureEps(GaussianMixture.of([left, 1 - left], [-4.0, 4.0], 0.8), SCHEDULE)


def left_share(x: Tensor) -> float:
    return float((x < 0).double().mean())


@pytest.fixture(scope="module")
def plain_1d() -> float:
    return left_share(sample_plain(bimodal(0.3), _noise(1), SCHEDULE, GRID).x)


def test_1d_w2sd_moves_left_share_toward_ideal(plain_1d: float) -> None:
    strong = bimodal(0.3)
    w2sd = left_share(sample_w2sd(strong, bimodal(0.05), strong, _noise(1), SCHEDULE, GRID).x)
    assert abs(plain_1d - 0.30) < 0.015
    assert 0.47 <= w2sd <= 0.55


def test_1d_zero_difference_is_unchanged(plain_1d: float) -> None:
    strong = bimodal(0.3)
    same = left_share(sample_w2sd(strong, bimodal(0.3), strong, _noise(1), SCHEDULE, GRID).x)
    assert abs(same - plain_1d) <= 0.01


def test_1d_wrong_way_pair_makes_it_worse(plain_1d: float) -> None:
    strong = bimodal(0.3)
    worse = left_share(sample_w2sd(strong, bimodal(0.4), strong, _noise(1), SCHEDULE, GRID).x)
    assert worse < plain_1d - 0.05


def test_1d_small_lambda_helps_little(plain_1d: float) -> None:
    strong = bimodal(0.3)
    few = left_share(sample_w2sd(strong, bimodal(0.05), strong, _noise(1), SCHEDULE, GRID, lam=10).x)
    assert plain_1d <= few <= plain_1d + 0.05


def _quadrants(bottom_left: float) -> MixtureEps:
    other = (1 - bottom_left) / 3
    means = [[-2.5, -2.5], [2.5, -2.5], [-2.5, 2.5], [2.5, 2.5]]
    return MixtureEps(GaussianMixture.of([bottom_left, other, other, other], means, 0.5), SCHEDULE)


def test_2d_w2sd_reduces_quadrant_kl_and_swapped_roles_worsen_it() -> None:
    uniform = torch.full((4,), 0.25, dtype=torch.float64)
    strong, weak = _quadrants(0.10), _quadrants(0.02)
    x = _noise(2)
    plain = quadrant_occupancy(sample_plain(strong, x, SCHEDULE, GRID).x)
    w2sd = quadrant_occupancy(sample_w2sd(strong, weak, strong, x, SCHEDULE, GRID).x)
    swapped = quadrant_occupancy(sample_w2sd(weak, strong, weak, x, SCHEDULE, GRID).x)
    assert 0.055 <= kl_divergence(plain, uniform) <= 0.09
    assert abs(float(plain[0]) - 0.10) < 0.01
    assert kl_divergence(w2sd, uniform) <= 0.02
    assert 0.17 <= float(w2sd[0]) <= 0.23
    assert float(swapped[0]) < 0.01
    assert kl_divergence(swapped, uniform) > kl_divergence(plain, uniform)


def test_mixture_score_matches_autograd() -> None:
    mixture = GaussianMixture.of([0.2, 0.5, 0.3], [[0, 1], [2, -1], [-3, 0.5]], [0.5, 1.0, 0.7])
    x = torch.randn(16, 2, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(mixture.log_prob(x).sum(), x)
    torch.testing.assert_close(mixture.score(x.detach()), grad, rtol=1e-10, atol=1e-12)


def test_mixture_statistics() -> None:
    mixture = GaussianMixture.of([0.5, 0.5], [-4.0, 4.0], 0.8)
    samples = mixture.sample(N, torch.Generator().manual_seed(1))
    share = occupancy(mixture, samples)
    assert abs(float(share[0]) - 0.5) < 0.015
    assert torch.allclose(spread_ratio(mixture, samples), torch.ones(2, dtype=torch.float64), atol=0.03)
    expected_loglik = -0.5 * math.log(2 * math.pi * 0.64) - 0.5 - math.log(2)  # modes barely overlap
    assert abs(float(mixture.log_prob(samples).mean()) - expected_loglik) < 0.03
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture.of([1.0], [[0.0], [1.0]], 1.0)
