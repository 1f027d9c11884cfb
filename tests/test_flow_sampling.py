"""The velocity form of W2SD and the flow grids: exact identities on fixed velocity fields, no networks."""

from __future__ import annotations

import math

import pytest
import torch

from w2sd_cli.sampling import FlowSchedule, sample_plain, sample_w2sd


def field(scale: float, shift: float):
    """A smooth, non-linear velocity field v(x, t) (a stand-in network)."""
    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        return scale * torch.tanh(x) * (1 + t) + shift * t
    return velocity


def test_one_reflection_is_x_plus_dt_times_the_velocity_gap() -> None:
    schedule = FlowSchedule()
    strong, weak = field(1.0, 0.2), field(0.6, -0.1)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t, t_next = 0.8, 0.55
    denoised = schedule.step(x, strong(x, t), t, t_next)  # x' = x + (t' - t) v_s(x, t)
    assert torch.allclose(denoised, x + (t_next - t) * strong(x, t))
    reflected = schedule.step(denoised, weak(denoised, t), t_next, t)  # x~ = x' + (t - t') v_w(x', t)
    identity = x + (t_next - t) * (strong(x, t) - weak(denoised, t))
    assert torch.allclose(reflected, identity, atol=1e-12, rtol=0)
    assert not torch.allclose(reflected, x)  # a real difference between the sides moves the sample

    # what the shared sampler does in its first reflected step, with the final step taken from x~
    seen: list[dict] = []
    sample_w2sd(strong, weak, strong, x, schedule, [t, t_next], lam=1, callback=seen.append)
    invert = next(s["x"] for s in seen if s["phase"] == "reflect-invert")
    assert torch.allclose(invert, identity, atol=1e-12, rtol=0)


def test_one_euler_step_with_a_fixed_velocity_inverts_exactly() -> None:
    schedule = FlowSchedule()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v = torch.randn_like(x)
    for t, t_next in ((1.0, 0.9), (0.5, 0.1), (0.2, 0.0)):
        there = schedule.step(x, v, t, t_next)
        back = schedule.step(there, v, t_next, t)
        assert torch.allclose(back, x, atol=1e-14, rtol=0)


def test_self_pair_reflection_is_exact_for_a_time_independent_field_and_lambda_zero_is_plain() -> None:
    schedule = FlowSchedule()
    grid = schedule.timesteps(6, shift=3.0)
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    strong, weak = field(1.0, 0.3), field(0.5, 0.0)
    plain = sample_plain(strong, x, schedule, grid)
    assert torch.equal(sample_w2sd(strong, weak, strong, x, schedule, grid, lam=0).x, plain.x)
    assert plain.nfe == 6
    constant = torch.randn_like(x)

    def fixed(z: torch.Tensor, t: float) -> torch.Tensor:
        return constant
    # a self-pair with a velocity that ignores x: every reflection returns exactly where it started
    assert torch.allclose(sample_w2sd(fixed, fixed, fixed, x, schedule, grid).x,
                          sample_plain(fixed, x, schedule, grid).x, atol=1e-13, rtol=0)
    full = sample_w2sd(strong, weak, strong, x, schedule, grid)
    assert full.nfe == 6 + 2 * 5 and full.calls == {"strong": 5, "weak": 5, "final": 6}


def test_sd3_grid_is_diffusers_static_shift() -> None:
    from w2sd_cli.adapters.flow import flow_grid

    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
    grid = flow_grid(config, "sd3", 28, image_tokens=4096)

    def shifted(s: float) -> float:
        return 3.0 * s / (1 + 2.0 * s)
    # diffusers spaces T times between sigma_max and sigma_min of its (already shifted) training sigmas, then shifts
    low = shifted(1 / 1000)
    expected = [shifted(1 + (low - 1) * i / 27) for i in range(28)] + [0.0]
    assert len(grid) == 29 and grid[0] == 1.0 and grid[-1] == 0.0
    assert max(abs(a - b) for a, b in zip(grid, expected, strict=True)) < 1e-6


@pytest.mark.parametrize("side, tokens", [(1024, 4096), (512, 1024), (256, 256)])
def test_flux_grid_shifts_with_the_image_token_count(side: int, tokens: int) -> None:
    from w2sd_cli.adapters.flow import flow_grid, image_tokens

    assert image_tokens("flux", side // 8, side // 8, 1) == tokens
    config = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
              "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}
    grid = flow_grid(config, "flux", 28, tokens)
    mu = 0.5 + (1.15 - 0.5) * (tokens - 256) / (4096 - 256)  # FluxPipeline's calculate_shift
    expected = [math.exp(mu) / (math.exp(mu) + (1 / s - 1)) for s in (1 - i * (1 - 1 / 28) / 27 for i in range(28))]
    assert max(abs(a - b) for a, b in zip(grid[:-1], expected, strict=True)) < 1e-6 and grid[-1] == 0.0
    sd3_like = flow_grid({**config, "use_dynamic_shifting": False}, "flux", 28, tokens)
    assert sd3_like != grid  # without dynamic shifting the static shift applies instead


def test_schedulers_w2sd_cannot_honour_are_refused() -> None:
    from w2sd_cli.adapters.flow import flow_grid
    from w2sd_cli.errors import ModelError

    with pytest.raises(ModelError, match="stochastic_sampling"):
        flow_grid({"shift": 3.0, "stochastic_sampling": True}, "sd3", 4, 64)
    with pytest.raises(ModelError, match="invert_sigmas"):
        flow_grid({"shift": 3.0, "invert_sigmas": True}, "sd3", 4, 64)
