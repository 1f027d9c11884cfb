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
from w2sd_cli.kinds.base import Condition, Settings
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


def _pair(card: Any, **load: Any) -> Any:
    from w2sd_cli.api import pair_from_card

    return pair_from_card(card, **load)


def test_generates_images_with_their_recipe(models: Path, tmp_path: Path) -> None:
    card = parse_card(card_data(models))
    events: list[dict[str, Any]] = []
    made = _pair(card).compare("goldfish", seeds=[3], observer=events.append)
    pixels = {}
    for method in ("weak", "strong", "w2sd"):
        image = made.samples[method][0].image
        assert image.size == (64, 64)
        pixels[method] = torch.from_numpy(np.asarray(image, dtype=np.float32))
    assert pixels["w2sd"].std() > 0
    assert not torch.equal(pixels["w2sd"], pixels["strong"]) and not torch.equal(pixels["weak"], pixels["strong"])
    w2sd = made.samples["w2sd"][0]
    recipe = w2sd.recipe
    assert recipe["sides"]["final"]["class_label"] == 1 and recipe["prompt"] == "goldfish"
    assert recipe["sides"]["final"]["cfg"] == 1.5 and recipe["sides"]["weak"]["routing"] == "bottom-2 of 4"
    assert w2sd.nfe == 4 + 2 * 3 and w2sd.cost == 2.0 * 10
    assert made.samples["weak"][0].nfe == 4
    assert {e["method"] for e in events} == {"weak", "strong", "w2sd"}


@torch.no_grad()
def test_weak_side_is_the_same_network_routed_to_its_worst_experts(models: Path) -> None:
    card = parse_card(card_data(models))
    pair = _pair(card)
    net = pair.engine.loaded.networks["dit"]
    prepared = pair.engine.prepare(Condition(class_label=2), Settings.resolve(card, steps=4))
    x = prepared.noise(0)
    t = torch.tensor([500.0])
    labels, null = torch.tensor([2]), torch.tensor([TINY.num_classes])

    def guided(routing: Routing) -> torch.Tensor:  # upstream DiT: CFG on 3 of the 4 eps channels
        cond, uncond = net(x, t, labels, routing)[:, :4], net(x, t, null, routing)[:, :4]
        return torch.cat([(uncond + 1.5 * (cond - uncond))[:, :3], cond[:, 3:]], dim=1)

    torch.testing.assert_close(prepared.strong(x, 500.0), guided(Routing("top")), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(prepared.weak(x, 500.0), guided(Routing("bottom")), atol=1e-5, rtol=1e-4)
    assert (prepared.strong(x, 500.0) - prepared.weak(x, 500.0)).abs().max() > 1e-4
    assert prepared.grid == [999.0, 666.0, 333.0, 0.0, -1.0]  # upstream's respaced grid (linspace)


def test_defaults_reproduce_upstream_dit_and_the_old_ones_stay_options(models: Path) -> None:
    card = parse_card(card_data(models))
    pair = _pair(card)
    grid = pair.engine.prepare(Condition(class_label=1), Settings.resolve(card, steps=50)).grid
    assert grid[:3] == [999.0, 979.0, 958.0]
    leading = parse_card(card_data(models, options={"architecture": "tiny", "timestep_spacing": "leading",
                                                    "guided_channels": None}))
    prepared = _pair(leading).engine.prepare(Condition(class_label=1), Settings.resolve(leading, steps=50))
    assert prepared.grid[:2] == [980.0, 960.0] and getattr(prepared.final, "guided_channels", 0) is None


def test_the_xl_preset_is_refused_with_the_reason(models: Path) -> None:
    with pytest.raises(CardError, match="q/k normalisation"):
        MoEExpertsKind().check(parse_card(card_data(models, options={"architecture": "DiT-MoE-XL/2-8E2A"})))


def test_class_comes_from_the_class_option_or_the_prompt(models: Path) -> None:
    pair = _pair(parse_card(card_data(models)))
    [sample] = pair.generate(class_label=7, steps=1)
    assert sample.recipe["sides"]["final"]["class_label"] == 7
    with pytest.raises(InputError, match="class-conditional"):
        pair.generate()
    with pytest.raises(InputError, match="beyond this model"):
        pair.generate("golden retriever")
    with pytest.raises(InputError, match="64×64"):
        pair.generate("3", width=256)


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
        _pair(card)


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
    assert (out / "tiny-moe-tench-seed1.png").is_file()
    result = CliRunner().invoke(build_app(), ["gen", "--pair", "tiny-moe", "--class", "11", "--out", str(out)])
    assert result.exit_code != 0
    assert "out of range" in result.output


def test_the_built_in_card_offline_names_what_is_missing(tmp_path: Path) -> None:
    from w2sd_cli.errors import W2SDError

    card = load_card(REGISTRY / "dit-moe-s.yaml")
    with pytest.raises(W2SDError, match="w2sd pull dit-moe-s"):
        _pair(card, offline=True)
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
    prepared = _pair(card).engine.prepare(Condition(class_label=5), Settings.resolve(card, steps=2))
    x, t = prepared.noise(1), torch.tensor([999.0])
    expected = net(x, t, torch.tensor([5]), Routing("random", k=3, seed=4, renormalize=True))[:, :4]
    torch.testing.assert_close(prepared.weak(x, 999.0), expected)
    assert prepared.sides["weak"]["routing"] == "random-3 of 4 renormalized"
    assert getattr(prepared.weak, "cost", None) == 1.0
