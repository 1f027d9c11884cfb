"""One network as eps, v and x0 predictor gives one algorithm: predictions are read once, at the network's label."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from w2sd_cli.analytic import GaussianMixture, MixtureNetwork
from w2sd_cli.errors import ModelError
from w2sd_cli.sampling import (
    Denoiser,
    Level,
    SampleResult,
    VPSchedule,
    extrapolate,
    sample_plain,
    sample_w2sd,
    vp_prediction,
)

KINDS = ("epsilon", "v_prediction", "sample")
LINEAR = VPSchedule.linear()


def zero_terminal_snr(schedule: VPSchedule) -> VPSchedule:
    """Shift and scale sqrt(ā) so the last level is exactly 0 and the first unchanged (Lin et al. 2024)."""
    root = schedule.alphas_cumprod.sqrt()
    first, last = float(root[0]), float(root[-1])
    rescaled = (root - last) * first / (first - last)
    return VPSchedule(rescaled**2)


ZERO_SNR = zero_terminal_snr(LINEAR)


def bimodal(left: float) -> GaussianMixture:
    return GaussianMixture.of([left, 1 - left], [-4.0, 4.0], 0.8)


def adapted(mixture: GaussianMixture, schedule: VPSchedule, kind: str) -> Denoiser:
    """The exact network trained for ``kind``, read as an adapter reads any VP network: at its label."""
    network = MixtureNetwork(mixture, schedule, kind)

    def denoise(x: Tensor, t: Level) -> Tensor:
        return vp_prediction(kind, x, network(x, t), schedule.alpha_bar(t))

    return denoise


def methods(schedule: VPSchedule, kind: str) -> dict[str, Callable[[Tensor, list[Level]], SampleResult]]:
    """W2SD (both intervals), the self-pair, plain strong and the two extrapolation controls for one kind."""
    strong, weak = adapted(bimodal(0.30), schedule, kind), adapted(bimodal(0.05), schedule, kind)
    final = adapted(bimodal(0.35), schedule, kind)
    return {
        "w2sd": lambda x, g: sample_w2sd(strong, weak, final, x, schedule, g),
        "w2sd-reference-interval": lambda x, g: sample_w2sd(strong, weak, final, x, schedule, g,
                                                            reference_interval=True),
        "self-pair": lambda x, g: sample_w2sd(strong, strong, strong, x, schedule, g),
        "strong": lambda x, g: sample_plain(strong, x, schedule, g),
        "first-order": lambda x, g: sample_plain(extrapolate(strong, weak, 1.0, base=final), x, schedule, g),
        "extrapolate": lambda x, g: sample_plain(extrapolate(final, weak, 1.0), x, schedule, g),
    }


def _noise(n: int, seed: int = 0) -> Tensor:
    return torch.randn(n, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("schedule", "grid"), [(LINEAR, LINEAR.timesteps(20)), (ZERO_SNR, ZERO_SNR.timesteps(20))],
                         ids=["linear", "zero-terminal-snr-leading"])
def test_eps_v_and_x0_networks_give_the_same_samples(schedule: VPSchedule, grid: list[Level]) -> None:
    """The zero-terminal-SNR grid starts at 950, where ā ≈ 3e-5 > 0, so the eps network can run it too."""
    assert schedule.alpha_bar(grid[0]) > 0.0
    x = _noise(400)
    runs = {kind: {name: run(x, grid).x for name, run in methods(schedule, kind).items()} for kind in KINDS}
    for name, eps_sample in runs["epsilon"].items():
        assert torch.isfinite(eps_sample).all()
        for kind in KINDS[1:]:
            worst = float((runs[kind][name] - eps_sample).abs().max())
            assert worst <= 1e-10, (name, kind, worst)
    assert float((runs["epsilon"]["w2sd"] - runs["epsilon"]["strong"]).abs().max()) > 0.1  # W2SD did something


def test_the_1d_left_share_is_the_eps_networks_for_every_parameterisation() -> None:
    """The analytic 1-D setting (strong left weight 0.30, weak 0.05, T = 50, λ = 49, 20,000 samples): eps gave
    0.517; reading v and x0 at the sample's level instead of the label had moved it to 0.562."""
    x = _noise(20_000)
    grid = LINEAR.timesteps(50)
    shares = {}
    for kind in KINDS:
        strong, weak = adapted(bimodal(0.30), LINEAR, kind), adapted(bimodal(0.05), LINEAR, kind)
        shares[kind] = float((sample_w2sd(strong, weak, strong, x, LINEAR, grid).x < 0).double().mean())
    assert shares["epsilon"] == pytest.approx(0.517, abs=0.01)
    assert shares["v_prediction"] == shares["sample"] == shares["epsilon"]


def test_v_and_x0_networks_start_finitely_at_alpha_bar_zero() -> None:
    """A trailing grid starts at 999, where ā = 0: eps is x there and the networks' x0 carries the step; the
    reflection there lands on the strong-denoised latent (κ_t = 1, and the weak eps at ā = 0 is its input)."""
    grid = ZERO_SNR.timesteps(20, "trailing")
    assert ZERO_SNR.alpha_bar(grid[0]) == 0.0
    x = _noise(2000, seed=1)
    runs = {kind: {name: run(x, grid).x for name, run in methods(ZERO_SNR, kind).items()}
            for kind in ("v_prediction", "sample")}
    for name, sample in runs["v_prediction"].items():
        assert torch.isfinite(sample).all(), name
        worst = float((runs["sample"][name] - sample).abs().max())
        assert worst <= 1e-10, (name, worst)
    plain_left = float((runs["v_prediction"]["strong"] < 0).double().mean())
    assert plain_left == pytest.approx(0.30, abs=0.04)

    strong, weak = (adapted(bimodal(w), ZERO_SNR, "v_prediction") for w in (0.30, 0.05))
    phases: dict[str, Tensor] = {}
    keep = lambda d: phases.setdefault(d["phase"], d["x"]) if d["i"] == 0 else None  # noqa: E731
    sample_w2sd(strong, weak, strong, x, ZERO_SNR, grid, callback=keep)
    torch.testing.assert_close(phases["reflect-invert"], phases["reflect-denoise"], rtol=0, atol=1e-12)
    with pytest.raises(ModelError, match="zero-terminal-SNR"):
        adapted(bimodal(0.3), ZERO_SNR, "epsilon")(x, grid[0])


def test_the_inversion_reads_the_weak_prediction_at_the_label_not_the_latents_level() -> None:
    """A v network's answer for (x', t) becomes eps with ā_t; the step keeps that eps (paper eq. 5)."""
    t, t_next = 600.0, 500.0
    x_denoised, v = _noise(8, seed=2), _noise(8, seed=3)
    eps = vp_prediction("v_prediction", x_denoised, v, LINEAR.alpha_bar(t))
    inverted = LINEAR.step(x_denoised, eps, t_next, t, label=t)
    a_from, a_to = LINEAR.alpha_bar(t_next), LINEAR.alpha_bar(t)
    x0 = (x_denoised - math.sqrt(1 - a_from) * eps) / math.sqrt(a_from)
    torch.testing.assert_close(inverted, math.sqrt(a_to) * x0 + math.sqrt(1 - a_to) * eps, rtol=0, atol=1e-12)
    at_latent_level = vp_prediction("v_prediction", x_denoised, v, a_from)  # what stepping in v amounted to
    assert float((LINEAR.step(x_denoised, at_latent_level, t_next, t) - inverted).abs().max()) > 1e-3


# ---- the same tiny UNet as an eps network and as a v network, through the public API ----

def v_twin(unet: Any, alphas_cumprod: Tensor) -> Any:
    """A copy of ``unet`` that answers v, computed from its own eps at the timestep label it is asked about."""
    twin = copy.deepcopy(unet)
    eps_forward = twin.forward

    def forward(sample: Tensor, timestep: Any, *args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        eps = eps_forward(sample, timestep, *args, return_dict=False, **kwargs)[0]
        labels = torch.as_tensor(timestep).reshape(-1).long().cpu()
        a = alphas_cumprod[labels].to(sample.dtype).view(-1, 1, 1, 1)
        v = (eps - (1 - a).sqrt() * sample) / a.sqrt()
        return UNet2DConditionOutput(sample=v) if return_dict else (v,)

    twin.forward = forward
    return twin


@pytest.fixture(scope="module")
def eps_and_v_pipelines(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from tests.image_helpers import save_sd
    from w2sd_cli.adapters.unet import schedule_from_config

    folder: Path = save_sd(tmp_path_factory.mktemp("param") / "sd")
    eps_pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None,
                                                       requires_safety_checker=False)
    config = dict(eps_pipe.scheduler.config)
    alphas = schedule_from_config(config).alphas_cumprod
    v_pipe = StableDiffusionPipeline(**{**eps_pipe.components, "unet": v_twin(eps_pipe.unet, alphas),
                                        "scheduler": DDIMScheduler.from_config(config, prediction_type="v_prediction")})
    return eps_pipe, v_pipe


def test_a_unet_as_eps_and_as_v_network_gives_the_same_w2sd_image(eps_and_v_pipelines: tuple[Any, Any]) -> None:
    import numpy as np

    import w2sd_cli

    images = {}
    for name, pipe in zip(("eps", "v"), eps_and_v_pipelines, strict=True):
        pair = w2sd_cli.from_pipelines(pipe, pipe, strong_side=w2sd_cli.SideKnobs(cfg=4.0),
                                       weak_side=w2sd_cli.SideKnobs(cfg=1.0), steps=6)
        images[name] = {m: np.asarray(pair.generate("a fox", seeds=[0], method=m)[0].image, dtype=np.int16)
                        for m in ("strong", "w2sd")}
    for method in ("strong", "w2sd"):
        assert int(np.abs(images["eps"][method] - images["v"][method]).max()) <= 1, method
    assert int(np.abs(images["eps"]["w2sd"] - images["eps"]["strong"]).max()) > 8  # W2SD changed the image
