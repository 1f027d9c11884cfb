"""w2sd time / plain time predicted from NFE, on the analytic and a small MLP denoiser.

The sampler's overhead beyond the network calls themselves should be negligible: target ratio ≤ 1.02.
Run: ``python benchmarks/bench_sampler.py`` (one thread; takes under a minute).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from w2sd_cli.analytic import GaussianMixture, MixtureEps
from w2sd_cli.sampling import Denoiser, Level, VPSchedule, sample_plain, sample_w2sd

torch.set_num_threads(1)
SCHEDULE = VPSchedule.linear()
GRID = SCHEDULE.timesteps(50)


class MLPDenoiser(torch.nn.Module):
    """A small time-conditioned MLP (random weights: only the timing matters)."""

    def __init__(self, dim: int = 2, width: int = 256) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim + 1, width), torch.nn.SiLU(), torch.nn.Linear(width, width),
                                       torch.nn.SiLU(), torch.nn.Linear(width, dim))

    @torch.no_grad()
    def forward(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        return self.net(torch.cat([x, torch.full_like(x[:, :1], float(t) / 1000)], dim=1))  # type: ignore[no-any-return]


def timed_pair(first: Callable[[], object], second: Callable[[], object], repeats: int = 15) -> tuple[float, float]:
    """Interleaved runs, the fastest of each: robust to other load on the machine."""
    first(), second()
    a, b = [], []
    for _ in range(repeats):
        a.append(_once(first))
        b.append(_once(second))
    return min(a), min(b)


def _once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ratio(name: str, strong: Denoiser, weak: Denoiser, x: torch.Tensor) -> float:
    result = sample_w2sd(strong, weak, strong, x, SCHEDULE, GRID)
    plain, w2sd = timed_pair(lambda: sample_plain(strong, x, SCHEDULE, GRID),
                             lambda: sample_w2sd(strong, weak, strong, x, SCHEDULE, GRID))
    predicted = plain / 50 * result.nfe
    value = w2sd / predicted
    print(f"{name:<28} plain {plain * 1e3:8.1f} ms  w2sd {w2sd * 1e3:8.1f} ms  NFE {result.nfe}  "
          f"w2sd / NFE-predicted plain = {value:.3f}")
    return value


def main() -> None:
    mixture = GaussianMixture.of([0.3, 0.7], [-4.0, 4.0], 0.8)
    weak_mixture = GaussianMixture.of([0.05, 0.95], [-4.0, 4.0], 0.8)
    x1 = torch.randn(20_000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ratio("analytic 1-D, 20k samples", MixtureEps(mixture, SCHEDULE), MixtureEps(weak_mixture, SCHEDULE), x1)
    torch.manual_seed(0)
    strong, weak = MLPDenoiser(), MLPDenoiser()
    x2 = torch.randn(4096, 2, generator=torch.Generator().manual_seed(0))
    # two networks of one size: the NFE prediction assumes every call costs the same
    ratio("MLP 2-D (width 256), 4096", strong, weak, x2)


if __name__ == "__main__":
    main()
