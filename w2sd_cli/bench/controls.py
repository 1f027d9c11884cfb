"""The methods a bench compares: ``w2sd_cli.methods.METHODS`` plus W2SD's exact first-order control.

One W2SD step equals a DDIM step with ``eps_final(x~) + eps_s(x) - eps_w(x')`` (METHOD.md §2), which to first
order is ``eps_final + (eps_s - eps_w)`` with the *reflection* sides. ``first-order`` samples exactly that at
one point per step. For a guidance pair (one model at CFG w_s and w_w, final at w_f) it is plain CFG at
``w_f + k (w_s - w_w)``: CFG at ``2 w_s - w_w`` for the paper's Z-Sampling setting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from w2sd_cli.methods import METHODS, run_method

if TYPE_CHECKING:
    from torch import Tensor

    from w2sd_cli.kinds.base import PreparedPair
    from w2sd_cli.sampling import Callback, Denoiser, Level, SampleResult

BENCH_METHODS = (*METHODS, "first-order")


def first_order(final: Denoiser, strong: Denoiser, weak: Denoiser, k: float = 1.0) -> Denoiser:
    """``eps_final + k (eps_strong - eps_weak)``, all at the same point; ``strong`` is reused when it is ``final``."""
    same = final is strong

    def denoise(x: Tensor, t: Level) -> Tensor:
        e_strong = strong(x, t)
        e_final = e_strong if same else final(x, t)
        return e_final + k * (e_strong - weak(x, t))

    parts = [strong, weak] if same else [final, strong, weak]
    denoise.nfe = sum(int(getattr(d, "nfe", 1)) for d in parts)  # type: ignore[attr-defined]
    denoise.cost = sum(float(getattr(d, "cost", 1.0)) for d in parts)  # type: ignore[attr-defined]
    return denoise


def sample(pair: PreparedPair, method: str, x: Tensor, *, lam: int | None = None, rounds: int = 1, k: float = 1.0,
           reference_interval: bool = False, callback: Callback | None = None) -> SampleResult:
    """``run_method`` for every method of ``BENCH_METHODS``."""
    if method == "first-order":
        from w2sd_cli.sampling import sample_plain

        return sample_plain(first_order(pair.final, pair.strong, pair.weak, k), x, pair.schedule, pair.grid,
                            callback=callback)
    return run_method(pair, method, x, lam=lam, rounds=rounds, k=k, reference_interval=reference_interval,
                      callback=callback)
