"""The UNet adapter agrees with diffusers' own DDIM scheduler on a tiny UNet built from a config."""

from __future__ import annotations

import pytest
import torch

from w2sd_cli.adapters.unet import CFGDenoiser, Conditioning, grid_from_config, schedule_from_config, unet_network
from w2sd_cli.errors import ModelError
from w2sd_cli.sampling import sample_plain


def tiny_unet(prediction_type: str = "epsilon") -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4,
    ).eval()


SD_BETAS = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "clip_sample": False}
CASES = {
    "leading-eps": ({**SD_BETAS, "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading",
                     "prediction_type": "epsilon"}, 6),
    "leading-v": ({**SD_BETAS, "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading",
                   "prediction_type": "v_prediction"}, 6),
    "trailing-eps": ({**SD_BETAS, "timestep_spacing": "trailing", "prediction_type": "epsilon"}, 5),
    "trailing-v-zero-snr": ({**SD_BETAS, "timestep_spacing": "trailing", "prediction_type": "v_prediction",
                             "rescale_betas_zero_snr": True}, 5),
}


def _conditioning() -> tuple[Conditioning, Conditioning]:
    return Conditioning(torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(1))), Conditioning(
        torch.zeros(1, 3, 8))


def _cfg_output(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, scale: float = 3.0) -> torch.Tensor:
    cond, uncond = _conditioning()
    hidden = torch.cat([uncond.hidden_states, cond.hidden_states])
    u, c = unet(torch.cat([x, x]), t, encoder_hidden_states=hidden).sample.chunk(2)
    return u + scale * (c - u)


def _ours(config: dict[str, object], steps: int, unet: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    schedule = schedule_from_config(config)
    cond, uncond = _conditioning()
    denoiser = CFGDenoiser(unet_network(unet), schedule, cond, uncond, cfg=3.0,
                           prediction_type=str(config["prediction_type"]))
    result = sample_plain(denoiser, x, schedule, grid_from_config(schedule, config, steps))
    assert result.cost == 2.0 * steps
    return result.x


@pytest.mark.parametrize("case", list(CASES))
def test_plain_sampling_matches_diffusers_ddim(case: str) -> None:
    """Leading grids, and trailing grids whose steps divide 1000, are where diffusers' DDIM steps grid level to
    grid level (it steps to ``t - 1000 // steps``), so there its loop is the reference."""
    from diffusers import DDIMScheduler

    config, steps = CASES[case]
    scheduler = DDIMScheduler(**config)
    scheduler.set_timesteps(steps)
    schedule = schedule_from_config(config)
    assert grid_from_config(schedule, config, steps)[:-1] == [float(t) for t in scheduler.timesteps]
    torch.testing.assert_close(schedule.alphas_cumprod.float(), scheduler.alphas_cumprod)
    assert schedule.final_alpha_cumprod == pytest.approx(float(scheduler.final_alpha_cumprod))

    unet = tiny_unet()
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = _ours(config, steps, unet, x)
        ref = x.clone()
        for t in scheduler.timesteps:
            ref = scheduler.step(_cfg_output(unet, ref, t), t, ref).prev_sample
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside diffusers' Euler
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_linspace_sampling_matches_diffusers_euler_on_the_ddim_grid(prediction_type: str) -> None:
    """diffusers' DDIM steps a linspace grid to ``t - 1000 // steps``, off the grid; its Euler scheduler steps
    grid to grid, and first-order Euler in ``x / sqrt(ā)`` against ``sqrt((1 - ā) / ā)`` is DDIM, so Euler on
    DDIM's own linspace grid is the reference."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    config = {**SD_BETAS, "timestep_spacing": "linspace", "prediction_type": prediction_type}
    ddim = DDIMScheduler(**config)
    ddim.set_timesteps(6)
    schedule = schedule_from_config(config)
    grid = grid_from_config(schedule, config, 6)
    assert grid[:-1] == [float(t) for t in ddim.timesteps] == [999.0, 799.0, 599.0, 400.0, 200.0, 0.0]

    euler = EulerDiscreteScheduler(**{k: v for k, v in config.items() if k != "clip_sample"})
    euler.set_timesteps(timesteps=[int(t) for t in grid[:-1]])
    unet = tiny_unet()
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = _ours(config, 6, unet, x)
        ref = x * float(1.0 + euler.sigmas[0] ** 2) ** 0.5
        for t in euler.timesteps:
            ref = euler.step(_cfg_output(unet, euler.scale_model_input(ref, t), t), t, ref).prev_sample
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 7, 30, 333, 1000])
def test_grids_equal_diffusers_set_timesteps(spacing: str, steps: int) -> None:
    from diffusers import DDIMScheduler

    config = {"timestep_spacing": spacing, "steps_offset": 0}
    scheduler = DDIMScheduler(**config)
    scheduler.set_timesteps(steps)
    schedule = schedule_from_config(config)
    grid = grid_from_config(schedule, config, steps)
    assert grid[:-1] == [float(t) for t in scheduler.timesteps]
    assert grid[-1] == -1.0


def test_zero_terminal_snr_v_steps_stay_finite_at_alpha_bar_zero() -> None:
    """ā = 0 at t = 999: eps equals x there, so the adapter turns v into x0 = -v, which carries the step; W2SD's
    inversion back into ā = 0 is finite too."""
    from w2sd_cli.sampling import sample_w2sd

    config, steps = CASES["trailing-v-zero-snr"]
    schedule = schedule_from_config(config)
    assert schedule.alpha_bar(999) == 0.0
    x, v = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    stepped = schedule.step(x, -v, 999, 799)
    a = schedule.alpha_bar(799)
    torch.testing.assert_close(stepped, -(a**0.5) * v + (1 - a) ** 0.5 * x)
    unet = tiny_unet()
    cond, uncond = _conditioning()
    strong = CFGDenoiser(unet_network(unet), schedule, cond, uncond, cfg=3.0, prediction_type="v_prediction")
    weak = CFGDenoiser(unet_network(unet), schedule, cond, uncond, cfg=1.0, prediction_type="v_prediction")
    with torch.no_grad():
        result = sample_w2sd(strong, weak, strong, x[None], schedule, grid_from_config(schedule, config, steps))
    assert torch.isfinite(result.x).all()
    assert result.calls == {"strong": steps - 1, "weak": steps - 1, "final": steps}


def test_the_named_class_gives_the_betas_and_its_own_clip_setting() -> None:
    """An Euler config with zero-SNR rescaling ends at ā = 0 (Euler itself nudges it to 2^-24 for its sigmas) and
    does not clip, though DDIM's default would; an SD1.5-style PNDM config gives the same ā as DDIM."""
    from diffusers import DDIMScheduler

    euler = {"_class_name": "EulerDiscreteScheduler", **SD_BETAS, "rescale_betas_zero_snr": True,
             "prediction_type": "v_prediction", "timestep_spacing": "trailing"}
    del euler["clip_sample"]
    schedule = schedule_from_config(euler)
    assert schedule.alpha_bar(999) == 0.0
    assert schedule.clip_x0 is None
    assert schedule_from_config({k: v for k, v in euler.items() if k != "_class_name"}).clip_x0 == 1.0
    pndm = {"_class_name": "PNDMScheduler", **SD_BETAS, "skip_prk_steps": True, "set_alpha_to_one": False,
            "steps_offset": 1}
    ddim = DDIMScheduler(**SD_BETAS)
    torch.testing.assert_close(schedule_from_config(pndm).alphas_cumprod.float(), ddim.alphas_cumprod)
    assert grid_from_config(schedule_from_config(pndm), pndm, 4) == [751.0, 501.0, 251.0, 1.0, -1.0]


@pytest.mark.parametrize(("config", "named"), [
    ({"thresholding": True}, "thresholding"),
    ({"prediction_type": "flow_prediction"}, "prediction_type"),
    ({"variance_type": "learned_range"}, "variance_type"),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler"}, "FlowMatchEulerDiscreteScheduler"),
    ({"beta_schedule": "sigmoid-ish"}, "sigmoid-ish"),
])
def test_settings_w2sd_cannot_honour_are_refused_by_name(config: dict[str, object], named: str) -> None:
    with pytest.raises(ModelError, match=named):
        schedule_from_config(config)


def test_an_eps_model_cannot_start_at_zero_terminal_snr() -> None:
    config = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "epsilon"}
    schedule = schedule_from_config(config)
    with pytest.raises(ModelError, match="zero-terminal-SNR"):
        grid_from_config(schedule, config, 10)
    leading = {**config, "timestep_spacing": "leading"}
    assert grid_from_config(schedule, leading, 10)[0] == 900.0
    with pytest.raises(ModelError, match="timestep_spacing"):
        grid_from_config(schedule, {"timestep_spacing": "cosine"}, 10)


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
