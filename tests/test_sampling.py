"""The sampler against exact oracles: closed forms, recorded calls and the analytic mixtures."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from w2sd_cli.analytic import GaussianMixture, MixtureEps, MixtureVelocity
from w2sd_cli.errors import ModelError
from w2sd_cli.sampling import (
    FlowSchedule,
    Level,
    VPSchedule,
    equal_nfe_steps,
    extrapolate,
    reflect_steps,
    sample_plain,
    sample_w2sd,
    vp_prediction,
)

SCHEDULE = VPSchedule.linear()
GRID = SCHEDULE.timesteps(50)


def bimodal(left: float) -> GaussianMixture:
    return GaussianMixture.of([left, 1 - left], [-4.0, 4.0], 0.8)


def _noise(n: int, dim: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> Tensor:
    return torch.randn(n, dim, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("pair", [(999, 979), (519, 499), (19, -1)])
def test_ddim_denoise_then_invert_returns_start(dtype: torch.dtype, tol: float, pair: tuple[int, int]) -> None:
    x = _noise(64, 4, dtype)
    eps = _noise(64, 4, dtype, seed=1)
    t, t_next = pair
    back = SCHEDULE.step(SCHEDULE.step(x, eps, t, t_next), eps, t_next, t)
    assert (back - x).norm() / x.norm() <= tol


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-6), (torch.float64, 1e-14)])
def test_flow_step_then_inverse_returns_start(dtype: torch.dtype, tol: float) -> None:
    x, v = _noise(64, 4, dtype), _noise(64, 4, dtype, seed=1)
    back = FlowSchedule().step(FlowSchedule().step(x, v, 0.7, 0.65), v, 0.65, 0.7)
    assert (back - x).norm() / x.norm() <= tol


def test_v_and_x0_outputs_become_eps_at_their_label_and_x0_where_alpha_bar_is_zero() -> None:
    x0, eps = _noise(8, 3), _noise(8, 3, seed=1)
    a = SCHEDULE.alpha_bar(400)
    x = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
    v = math.sqrt(a) * eps - math.sqrt(1 - a) * x0
    torch.testing.assert_close(vp_prediction("v_prediction", x, v, a), eps, rtol=0, atol=1e-12)
    torch.testing.assert_close(vp_prediction("sample", x, x0, a), eps, rtol=0, atol=1e-12)
    assert vp_prediction("epsilon", x, eps, a) is eps
    # at ā = 0, x is pure noise: v = -x0, and the canonical prediction is x0
    torch.testing.assert_close(vp_prediction("v_prediction", eps, -x0, 0.0), x0, rtol=0, atol=0)
    torch.testing.assert_close(vp_prediction("sample", eps, x0, 0.0), x0, rtol=0, atol=0)
    with pytest.raises(ModelError, match="zero-terminal-SNR"):
        vp_prediction("epsilon", eps, eps, 0.0)
    with pytest.raises(ModelError, match="prediction_type"):
        vp_prediction("flow", x, eps, a)


def test_one_w2sd_step_is_ddim_with_effective_eps() -> None:
    """docs/method.md: x~ = x - κ (eps_s(x) - eps_w(x')), and the step uses eps_s(x~) + eps_s(x) - eps_w(x')."""
    strong, weak = MixtureEps(bimodal(0.3), SCHEDULE), MixtureEps(bimodal(0.05), SCHEDULE)
    x = _noise(256, 1) * 3
    t, t_next = GRID[10], GRID[11]
    grid = [t, t_next]
    result = sample_w2sd(strong, weak, strong, x, SCHEDULE, grid, lam=1)

    denoised = SCHEDULE.step(x, strong(x, t), t, t_next)
    a = SCHEDULE.alpha_bar(t)
    sigma = math.sqrt((1 - a) / a)
    sigma_next = math.sqrt((1 - SCHEDULE.alpha_bar(t_next)) / SCHEDULE.alpha_bar(t_next))
    kappa = math.sqrt(a) * (sigma - sigma_next)
    reflected = x - kappa * (strong(x, t) - weak(denoised, t))
    eps_eff = strong(reflected, t) + strong(x, t) - weak(denoised, t)
    expected = SCHEDULE.step(x, eps_eff, t, t_next)
    torch.testing.assert_close(result.x, expected, rtol=0, atol=1e-10)
    assert result.calls == {"strong": 1, "weak": 1, "final": 1}


def test_lambda_zero_equals_plain_sampling_exactly() -> None:
    strong, weak = MixtureEps(bimodal(0.3), SCHEDULE), MixtureEps(bimodal(0.05), SCHEDULE)
    x = _noise(512, 1)
    w2sd = sample_w2sd(strong, weak, strong, x, SCHEDULE, GRID, lam=0)
    plain = sample_plain(strong, x, SCHEDULE, GRID)
    assert torch.equal(w2sd.x, plain.x)
    assert w2sd.nfe == plain.nfe == 50


def test_self_pair_stays_within_the_inversion_error() -> None:
    """Weak = strong is not a no-op (eq. 5 approximation), but the drift shrinks like 1/steps."""
    model = MixtureEps(bimodal(0.3), SCHEDULE)
    x = _noise(2000, 1)
    drift, share_change = {}, {}
    for steps in (25, 50, 100):
        grid = SCHEDULE.timesteps(steps)
        plain = sample_plain(model, x, SCHEDULE, grid).x
        self_pair = sample_w2sd(model, model, model, x, SCHEDULE, grid).x
        drift[steps] = float((self_pair - plain).abs().mean())
        share_change[steps] = abs(float((self_pair < 0).double().mean() - (plain < 0).double().mean()))
    # measured: 0.42, 0.22, 0.11 (mean |move|; the modes sit at ±4): first order in 1/steps
    assert 0 < drift[100] < drift[50] < drift[25]
    assert 0.15 < drift[50] < 0.3
    assert 3.5 < drift[25] / drift[100] < 4.5
    assert max(share_change.values()) <= 0.01  # it moves samples within modes, not between them


class Recorder:
    """A denoiser that records (role, latent, level) of every call and returns zeros plus a role mark."""

    def __init__(self, log: list[tuple[str, Tensor, Level]], role: str, value: float) -> None:
        self.log, self.role, self.value = log, role, value

    def __call__(self, x: Tensor, t: Level) -> Tensor:
        self.log.append((self.role, x.clone(), t))
        return torch.full_like(x, self.value)


def test_recorded_calls_pin_latents_and_timestep_labels() -> None:
    log: list[tuple[str, Tensor, Level]] = []
    strong, weak, final = Recorder(log, "strong", 0.3), Recorder(log, "weak", -0.2), Recorder(log, "final", 0.1)
    grid = SCHEDULE.timesteps(4)  # 750, 500, 250, 0, -1
    phases: list[tuple[int, str]] = []
    x = _noise(3, 2)
    sample_w2sd(strong, weak, final, x, SCHEDULE, grid, callback=lambda d: phases.append((d["i"], d["phase"])))

    roles = [(r, t) for r, _, t in log]
    expected: list[tuple[str, Level]] = []
    for i in range(4):
        if i < 3:
            expected += [("strong", grid[i]), ("weak", grid[i])]
        expected.append(("final", grid[i]))
    assert roles == expected
    # the weak network sees the strong-denoised latent, with the higher level's label
    denoised = SCHEDULE.step(x, torch.full_like(x, 0.3), grid[0], grid[1])
    torch.testing.assert_close(log[1][1], denoised)
    assert phases[:3] == [(0, "reflect-denoise"), (0, "reflect-invert"), (0, "denoise")]
    assert phases[-1] == (3, "denoise")


def test_explicit_reflect_set_and_rounds() -> None:
    log: list[tuple[str, Tensor, Level]] = []
    model = Recorder(log, "m", 0.0)
    grid = SCHEDULE.timesteps(6)
    result = sample_w2sd(model, model, model, _noise(2, 2), SCHEDULE, grid, reflect={1, 4}, rounds=2)
    assert result.calls == {"strong": 4, "weak": 4, "final": 6}
    assert reflect_steps(6) == frozenset(range(5))
    with pytest.raises(ValueError, match="reflect steps"):
        reflect_steps(6, reflect=[6])
    with pytest.raises(ValueError, match="lambda"):
        reflect_steps(6, lam=7)


def test_reference_interval_parity_switch() -> None:
    """The reference inverts over (t' - Δ) → t'; the default inverts over t' → t."""
    grid = SCHEDULE.timesteps(10)  # spacing 100: 900 ... 0, -1
    eps_s, eps_w = 0.4, -0.3
    x = _noise(4, 2)
    strong = lambda z, t: torch.full_like(z, eps_s)  # noqa: E731
    weak = lambda z, t: torch.full_like(z, eps_w)  # noqa: E731
    log: list[Tensor] = []
    keep = lambda d: log.append(d["x"]) if d["phase"] == "reflect-invert" else None  # noqa: E731
    sample_w2sd(strong, weak, strong, x, SCHEDULE, grid, lam=1, callback=keep)
    sample_w2sd(strong, weak, strong, x, SCHEDULE, grid, lam=1, reference_interval=True, callback=keep)
    denoised = SCHEDULE.step(x, torch.full_like(x, eps_s), 900, 800)
    w = torch.full_like(x, eps_w)
    torch.testing.assert_close(log[0], SCHEDULE.step(denoised, w, 800, 900), rtol=0, atol=1e-12)
    torch.testing.assert_close(log[1], SCHEDULE.step(denoised, w, 700, 800), rtol=0, atol=1e-12)
    assert not torch.allclose(log[0], log[1])

    # at the clean end the reference's source level falls below 0: it uses the final ā
    log.clear()
    sample_w2sd(strong, weak, strong, x, SCHEDULE, grid, reflect={8}, reference_interval=True, callback=keep)
    assert len(log) == 1


def test_extrapolation_control_and_equal_nfe() -> None:
    strong = lambda z, t: torch.full_like(z, 0.5)  # noqa: E731
    weak = lambda z, t: torch.full_like(z, 0.2)  # noqa: E731
    combined = extrapolate(strong, weak, k=1.0)
    assert torch.allclose(combined(torch.zeros(2), 10), torch.full((2,), 0.8))
    assert equal_nfe_steps(50) == 148 and equal_nfe_steps(50, lam=10, rounds=2) == 90
    base = lambda z, t: torch.full_like(z, 1.0)  # noqa: E731
    first_order = extrapolate(strong, weak, k=2.0, base=base)
    assert torch.allclose(first_order(torch.zeros(2), 10), torch.full((2,), 1.6))
    assert first_order.nfe == 3  # type: ignore[attr-defined]
    result = sample_plain(combined, torch.zeros(3), SCHEDULE, SCHEDULE.timesteps(5))
    assert result.cost == 10.0 and result.nfe == 10 and result.calls == {"final": 5}


def test_timestep_grids_follow_diffusers_spacing() -> None:
    assert SCHEDULE.timesteps(50, "leading", 1)[:3] == [981.0, 961.0, 941.0]
    assert SCHEDULE.timesteps(50, "leading", 1)[-2:] == [1.0, -1.0]
    assert SCHEDULE.timesteps(4, "trailing") == [999.0, 749.0, 499.0, 249.0, -1.0]
    with pytest.raises(ValueError, match="spacing"):
        SCHEDULE.timesteps(4, "cosine")


def test_clip_x0_keeps_prediction_in_range() -> None:
    clipped = VPSchedule(SCHEDULE.alphas_cumprod, clip_x0=1.0)
    x = torch.full((4,), 10.0)
    out = clipped.step(x, torch.zeros(4), 500, -1)
    assert float(out.abs().max()) <= 1.0 + 1e-6


def test_flow_matching_w2sd_runs_through_the_same_sampler() -> None:
    flow = FlowSchedule()
    grid = flow.timesteps(50)
    strong, weak = MixtureVelocity(bimodal(0.3)), MixtureVelocity(bimodal(0.05))
    x = _noise(20000, 1)
    plain = float((sample_plain(strong, x, flow, grid).x < 0).double().mean())
    w2sd = float((sample_w2sd(strong, weak, strong, x, flow, grid).x < 0).double().mean())
    assert abs(plain - 0.30) < 0.02
    assert w2sd > plain + 0.1
