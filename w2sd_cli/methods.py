"""The sampling methods every comparison needs, over a prepared pair: W2SD and its controls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from w2sd_cli.sampling import (
    Callback,
    SampleResult,
    equal_nfe_steps,
    extrapolate,
    sample_plain,
    sample_w2sd,
)

if TYPE_CHECKING:
    from w2sd_cli.kinds.base import PreparedPair

METHODS = ("weak", "strong", "w2sd", "first-order", "extrapolate", "equal-nfe")
"""weak/strong: plain sampling with one side (at the final knobs); w2sd: reflection; first-order:
eps_final + k (eps_s - eps_w) with the reflection sides, what W2SD equals to first order (for a guidance pair,
CFG at 2 w_s - w_w); extrapolate: eps_final + k (eps_final - eps_weak) at the final knobs (autoguidance
w = 1 + k); equal-nfe: plain strong with T + 2λ steps."""


def run_method(pair: PreparedPair, method: str, x: Tensor, *, lam: int | None = None, rounds: int = 1,
               k: float = 1.0, reference_interval: bool = False, callback: Callback | None = None) -> SampleResult:
    """Sample ``x`` with one method.

    Args:
        pair: the prepared pair.
        method: one of ``METHODS``.
        x: the initial latent at ``pair.grid[0]``.
        lam, rounds, reference_interval: W2SD's knobs (``lam`` also sizes the equal-NFE control).
        k: the extrapolation weight.
        callback: per-phase observer.
    """
    if method == "weak":
        return sample_plain(pair.weak_plain, x, pair.schedule, pair.grid, callback=callback)
    if method == "strong":
        return sample_plain(pair.final, x, pair.schedule, pair.grid, callback=callback)
    if method == "w2sd":
        return sample_w2sd(pair.strong, pair.weak, pair.final, x, pair.schedule, pair.grid, lam=lam, rounds=rounds,
                           reference_interval=reference_interval, callback=callback)
    if method == "first-order":
        return sample_plain(extrapolate(pair.strong, pair.weak, k, base=pair.final), x, pair.schedule, pair.grid,
                            callback=callback)
    if method == "extrapolate":
        return sample_plain(extrapolate(pair.final, pair.weak_plain, k), x, pair.schedule, pair.grid,
                            callback=callback)
    if method == "equal-nfe":
        steps = equal_nfe_steps(len(pair.grid) - 1, lam, rounds)
        return sample_plain(pair.final, x, pair.schedule, pair.make_grid(steps), callback=callback)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
