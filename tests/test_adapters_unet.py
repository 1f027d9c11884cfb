"""The UNet adapter agrees with diffusers' own DDIM scheduler on a tiny UNet built from a config."""

from __future__ import annotations

import pytest
import torch

from w2sd_cli.adapters.unet import CFGDenoiser, Conditioning, grid_from_config, schedule_from_config, unet_network
from w2sd_cli.sampling import sample_plain


def tiny_unet(prediction_type: str = "epsilon") -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4,
    ).eval()


@pytest.mark.parametrize(("spacing", "prediction_type"), [("leading", "epsilon"), ("leading", "v_prediction")])
def test_plain_sampling_matches_diffusers_ddim(spacing: str, prediction_type: str) -> None:
    from diffusers import DDIMScheduler

    config = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
              "beta_schedule": "scaled_linear", "set_alpha_to_one": False, "steps_offset": 1,
              "timestep_spacing": spacing, "prediction_type": prediction_type, "clip_sample": False}
    scheduler = DDIMScheduler(**config)
    scheduler.set_timesteps(6)
    schedule = schedule_from_config(config)
    grid = grid_from_config(schedule, config, 6)
    assert grid[:-1] == [float(t) for t in scheduler.timesteps]
    torch.testing.assert_close(schedule.alphas_cumprod.float(), scheduler.alphas_cumprod)

    unet = tiny_unet()
    cond = Conditioning(torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(1)))
    uncond = Conditioning(torch.zeros(1, 3, 8))
    denoiser = CFGDenoiser(unet_network(unet), schedule, cond, uncond, cfg=3.0, prediction_type=prediction_type)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = sample_plain(denoiser, x, schedule, grid)
        ref = x.clone()
        for t in scheduler.timesteps:
            out = unet(torch.cat([ref, ref]), t, encoder_hidden_states=torch.cat([uncond.hidden_states,
                                                                                   cond.hidden_states])).sample
            u, c = out.chunk(2)
            ref = scheduler.step(u + 3.0 * (c - u), t, ref).prev_sample
    torch.testing.assert_close(ours.x, ref, rtol=1e-4, atol=1e-4)
    assert ours.cost == 12.0


def test_trailing_grid_matches_diffusers_timesteps() -> None:
    """diffusers steps trailing grids to ``t - 1000 // steps``, which is not the next grid level; we step
    grid level to grid level, so only the grid itself is compared."""
    from diffusers import DDIMScheduler

    config = {"timestep_spacing": "trailing", "steps_offset": 0}
    scheduler = DDIMScheduler(**config)
    scheduler.set_timesteps(7)
    schedule = schedule_from_config(config)
    assert grid_from_config(schedule, config, 7)[:-1] == [float(t) for t in scheduler.timesteps]


def test_cfg_zero_and_one_use_a_single_branch() -> None:
    calls: list[int] = []

    def network(x: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        calls.append(x.shape[0])
        return cond.hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1) * torch.ones_like(x)

    schedule = schedule_from_config({})
    cond, uncond = Conditioning(torch.ones(1, 2, 3)), Conditioning(torch.zeros(1, 2, 3))
    x = torch.zeros(1, 4, 2, 2)
    assert float(CFGDenoiser(network, schedule, cond, uncond, 1.0)(x, 10).mean()) == 1.0
    assert float(CFGDenoiser(network, schedule, cond, uncond, 0.0)(x, 10).mean()) == 0.0
    assert float(CFGDenoiser(network, schedule, cond, uncond, 2.5)(x, 10).mean()) == 2.5
    assert calls == [1, 1, 2]
