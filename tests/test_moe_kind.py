"""The moe-experts kind end to end on a tiny random DiT-MoE and a tiny VAE built in the test session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from w2sd_cli.cards import load_card, parse_card
from w2sd_cli.errors import CardError, InputError, ModelError
from w2sd_cli.kinds.base import GenRequest
from w2sd_cli.kinds.moe import MoEExpertsKind
from w2sd_cli.moe.checkpoint import save_network
from w2sd_cli.moe.config import PRESETS
from w2sd_cli.moe.model import DiTMoE, Routing

TINY = PRESETS["tiny"]
REGISTRY = Path(__file__).resolve().parent.parent / "registry" / "pairs"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``dit.safetensors`` (tiny DiT-MoE) and ``vae/`` (tiny AutoencoderKL, factor 8)."""
    from diffusers import AutoencoderKL

    folder = tmp_path_factory.mktemp("moe-models")
    torch.manual_seed(0)
    save_network(DiTMoE(TINY), folder / "dit.safetensors")
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8),
                        layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=64)
    vae.save_pretrained(folder / "vae")
    return folder


def card_data(models: Path, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema": 1, "name": "tiny-moe", "kind": "moe-experts", "description": "tiny random DiT-MoE",
        "models": {"dit": {"path": str(models / "dit.safetensors"), "format": "dit-moe"},
                   "vae": {"path": str(models / "vae"), "format": "vae"}},
        "strong": {"model": "dit", "experts": "top", "cfg": 1.5},
        "weak": {"model": "dit", "experts": "bottom", "cfg": 1.5},
        "final": {"model": "dit", "experts": "top", "cfg": 1.5},
        "defaults": {"steps": 4, "width": 64, "height": 64},
        "options": {"architecture": "tiny"},
    }
    data.update(changes)
    return data


def test_generates_pngs_with_their_recipe(models: Path, tmp_path: Path) -> None:
    from PIL import Image

    from w2sd_cli.images import read_recipe

    card = parse_card(card_data(models))
    events: list[dict[str, Any]] = []
    request = GenRequest(prompt="goldfish", out=tmp_path, seed=3, compare=True).resolved(card)
    result = MoEExpertsKind().generate(card, request, events.append)
    names = sorted(p.name for p in result.files)
    assert names == [f"tiny-moe-s3-{m}.png" for m in ("compare", "strong", "w2sd", "weak")]
    pixels = {}
    for method in ("weak", "strong", "w2sd"):
        with Image.open(tmp_path / f"tiny-moe-s3-{method}.png") as image:
            assert image.size == (64, 64)
            pixels[method] = torch.from_numpy(np.asarray(image, dtype=np.float32))
    assert pixels["w2sd"].std() > 0
    assert not torch.equal(pixels["w2sd"], pixels["strong"]) and not torch.equal(pixels["weak"], pixels["strong"])
    recipe = read_recipe(tmp_path / "tiny-moe-s3-w2sd.png")
    assert recipe["class_label"] == 1 and recipe["prompt"] == "class 1" and recipe["cfg"] == 1.5
    assert recipe["routing"]["weak"] == "bottom-2 of 4"
    methods = result.summary["methods"]
    assert methods["w2sd"]["nfe"] == 4 + 2 * 3 and methods["w2sd"]["cost"] == 2.0 * 10
    assert methods["weak"]["nfe"] == 4
    assert {e["method"] for e in events} == {"weak", "strong", "w2sd"}


@torch.no_grad()
def test_weak_side_is_the_same_network_routed_to_its_worst_experts(models: Path) -> None:
    card = parse_card(card_data(models))
    from safetensors.torch import load_file

    net = DiTMoE(TINY)
    net.load_state_dict(load_file(str(models / "dit.safetensors")))
    kind = MoEExpertsKind()
    pair = kind.prepare(card, GenRequest(steps=4).resolved(card), {"dit": net}, label=2)
    x = pair.noise(0)
    t = torch.tensor([500.0])
    labels, null = torch.tensor([2]), torch.tensor([TINY.num_classes])

    def guided(routing: Routing) -> torch.Tensor:
        cond, uncond = net(x, t, labels, routing)[:, :4], net(x, t, null, routing)[:, :4]
        return uncond + 1.5 * (cond - uncond)

    torch.testing.assert_close(pair.strong(x, 500.0), guided(Routing("top")), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pair.weak(x, 500.0), guided(Routing("bottom")), atol=1e-5, rtol=1e-4)
    assert (pair.strong(x, 500.0) - pair.weak(x, 500.0)).abs().max() > 1e-4
    assert pair.grid == [750.0, 500.0, 250.0, 0.0, -1.0]


def test_class_comes_from_the_class_option_or_the_prompt(models: Path, tmp_path: Path) -> None:
    card = parse_card(card_data(models))
    kind = MoEExpertsKind()
    request = GenRequest(out=tmp_path, extra={"class_label": 7}, steps=1).resolved(card)
    assert kind.generate(card, request).summary["class_label"] == 7
    with pytest.raises(InputError, match="class-conditional"):
        kind.generate(card, GenRequest(out=tmp_path).resolved(card))
    with pytest.raises(InputError, match="beyond this model"):
        kind.generate(card, GenRequest(prompt="golden retriever", out=tmp_path).resolved(card))
    with pytest.raises(InputError, match="64×64"):
        kind.generate(card, GenRequest(prompt="3", width=256, out=tmp_path).resolved(card))


def test_card_problems_are_reported_before_loading(models: Path) -> None:
    kind = MoEExpertsKind()
    with pytest.raises(CardError, match=r"options\.vae"):
        kind.check(parse_card(card_data(models, options={"architecture": "tiny", "vae": "dit"})))
    with pytest.raises(CardError, match="Did you mean 'tiny'"):
        kind.check(parse_card(card_data(models, options={"architecture": "tiny2"})))
    with pytest.raises(CardError, match="unknown DiT-MoE config fields"):
        kind.check(parse_card(card_data(models, options={"architecture": "tiny", "config": {"experts": 3}})))
    with pytest.raises(CardError, match="exceeds"):
        kind.check(parse_card(card_data(models, options={"architecture": "tiny", "experts_per_token": 5})))


def test_a_checkpoint_of_another_shape_is_refused(models: Path, tmp_path: Path) -> None:
    card = parse_card(card_data(models, options={"architecture": "tiny", "config": {"num_experts": 6}}))
    with pytest.raises(ModelError, match=r"missing keys: blocks\.0\.moe\.experts\.4"):
        MoEExpertsKind().generate(card, GenRequest(prompt="1", out=tmp_path).resolved(card))


def test_the_built_in_card_is_valid() -> None:
    card = load_card(REGISTRY / "dit-moe-s.yaml")
    kind = MoEExpertsKind()
    kind.check(card)
    assert kind.model_keys(card) == ["dit", "vae"]
    assert kind.network_config(card) == PRESETS["DiT-MoE-S/2-8E2A"]
    assert card.models["dit"].filename == "dit_moe_s_8E2A.pt"
    assert (card.strong.experts, card.weak.experts, card.strong.cfg) == ("top", "bottom", 1.5)


def test_cli_gen_with_a_user_card(models: Path, isolated_home: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from w2sd_cli.cli import build_app

    (isolated_home / "pairs").mkdir()
    (isolated_home / "pairs" / "tiny-moe.yaml").write_text(yaml.safe_dump(card_data(models)))
    out = tmp_path / "out"
    result = CliRunner().invoke(build_app(), ["gen", "tench", "--pair", "tiny-moe", "--steps", "2",
                                              "--out", str(out), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert (out / "tiny-moe-s1-w2sd.png").is_file()
    result = CliRunner().invoke(build_app(), ["gen", "--pair", "tiny-moe", "--class", "11", "--out", str(out)])
    assert result.exit_code != 0
    assert "out of range" in result.output


def test_the_built_in_card_offline_names_what_is_missing(tmp_path: Path) -> None:
    from w2sd_cli.errors import W2SDError

    card = load_card(REGISTRY / "dit-moe-s.yaml")
    request = GenRequest(prompt="golden retriever", out=tmp_path, offline=True).resolved(card)
    with pytest.raises(W2SDError, match="sd-vae-ft-mse"):
        MoEExpertsKind().generate(card, request)
    assert not list(tmp_path.iterdir())


@torch.no_grad()
def test_random_and_renormalized_routing_come_from_the_card(models: Path) -> None:
    from safetensors.torch import load_file

    data = card_data(models, options={"architecture": "tiny", "random_seed": 4, "renormalize": True,
                                      "experts_per_token": 3})
    data["weak"] = {"model": "dit", "experts": "random", "cfg": 1.0}
    card = parse_card(data)
    net = DiTMoE(TINY)
    net.load_state_dict(load_file(str(models / "dit.safetensors")))
    pair = MoEExpertsKind().prepare(card, GenRequest(steps=2).resolved(card), {"dit": net}, label=5)
    x, t = pair.noise(1), torch.tensor([999.0])
    expected = net(x, t, torch.tensor([5]), Routing("random", k=3, seed=4, renormalize=True))[:, :4]
    torch.testing.assert_close(pair.weak(x, 999.0), expected)
    assert pair.info["routing"]["weak"] == "random-3 of 4 renormalized"
    assert getattr(pair.weak, "cost", None) == 1.0
