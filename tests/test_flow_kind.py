"""The ``flow`` kind end to end on tiny SD3 and FLUX folders: parity with diffusers' own pipelines, every card
shape through the CLI, the Python API, `w2sd bench`, shared components and LoRA scale switching."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.flow_helpers import (
    T5_LENGTH,
    flow_card,
    flux_transformer,
    save_flux,
    save_sd3,
    save_transformer_lora,
    write_flow_card,
)
from w2sd_cli.api import load_pair, pair_from_card
from w2sd_cli.cards import parse_card
from w2sd_cli.errors import CardError, InputError, ModelError
from w2sd_cli.images import read_recipe
from w2sd_cli.kinds.base import Condition, LoadSettings, Settings
from w2sd_cli.kinds.diffusers import FlowKind
from w2sd_cli.sampling import sample_plain

PROMPT = "a photo of a red fox"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flow-models")
    large = save_sd3(root / "sd3-large", seed=7, layers=2)
    for part in ("vae", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2",
                 "tokenizer_3"):
        shutil.rmtree(large / part)  # what the sd35-large-medium card fetches: transformer and scheduler only
    return {"sd3": save_sd3(root / "sd3"), "sd3_tuned": save_sd3(root / "sd3-tuned", seed=4), "sd3_large": large,
            "flux": save_flux(root / "flux"),
            "flux_lora": save_transformer_lora(root / "flux-lora", flux_transformer(0), "flux")}


def cards(models: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Tiny counterparts of the four built-in flow cards."""
    sd3, flux = {"path": str(models["sd3"])}, {"path": str(models["flux"])}
    return {
        "tiny-sd35-cfg": flow_card("tiny-sd35-cfg", {"m": sd3}, strong={"cfg": 4.5}, weak={"cfg": 0.0},
                                   final={"cfg": 4.5}),
        "tiny-large-medium": flow_card(
            "tiny-large-medium", {"large": {"path": str(models["sd3_large"])}, "medium": sd3},
            strong={"model": "large"}, weak={"model": "medium"}, final={"cfg": 3.5},
            options={"components_from": {"large": "medium"}}),
        "tiny-flux-guidance": flow_card("tiny-flux-guidance", {"flux": flux}, strong={"guidance": 3.5},
                                        weak={"guidance": 1.0}),
        "tiny-flux-lora": flow_card(
            "tiny-flux-lora", {"flux": flux, "detail": {"path": str(models["flux_lora"]), "format": "lora"}},
            strong={"lora": "detail", "lora_scale": 1.0}, weak={"lora_scale": -1.0}),
    }


def load(data: dict[str, Any], **settings: Any) -> Any:
    return FlowKind().load(parse_card(data), LoadSettings(device="cpu", **settings))


def plain(pair: Any, noise_seed: int = 0, steps: int = 4, **knobs: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
    prepared = pair.prepare(Condition(PROMPT, **knobs), Settings(steps=steps, lam=0, width=16, height=16))
    x = prepared.noise(noise_seed)
    with torch.inference_mode():
        return prepared, x, sample_plain(prepared.final, x, prepared.schedule, prepared.grid).x


def pack(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, c4 = x.shape
    return x.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h, w)


@pytest.mark.parametrize("cfg", [4.5, 1.0])
def test_sd3_plain_sampling_equals_the_diffusers_pipeline(models: dict[str, Path], cfg: float) -> None:
    from diffusers import StableDiffusion3Pipeline

    pair = load(flow_card("p", {"m": {"path": str(models["sd3"])}}, strong={"cfg": cfg}))
    prepared, x, ours = plain(pair)
    pipe = StableDiffusion3Pipeline.from_pretrained(models["sd3"])
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(PROMPT, num_inference_steps=4, guidance_scale=cfg, latents=x.clone(), height=16, width=16,
                  max_sequence_length=T5_LENGTH, output_type="latent").images
    assert prepared.grid == pipe.scheduler.sigmas.tolist()
    error = (ours - theirs).abs().max().item()
    assert error < 1e-5, error  # measured: 0.0 (float32, CPU)
    ours_image = np.asarray(pair.decode(ours, 1)[0], dtype=np.int16)
    their_image = np.asarray(pipe.vae.decode(theirs / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor,
                                             return_dict=False)[0].clamp(-1, 1).add(1).mul(127.5).round()[0]
                             .permute(1, 2, 0).to(torch.uint8).numpy(), dtype=np.int16)
    assert np.abs(ours_image - their_image).max() <= 1


@pytest.mark.parametrize("true_cfg", [1.0, 2.0])
def test_flux_plain_sampling_equals_the_diffusers_pipeline(models: dict[str, Path], true_cfg: float) -> None:
    from diffusers import FluxPipeline

    negative = "blue tree"
    pair = load(flow_card("p", {"m": {"path": str(models["flux"])}}, strong={"guidance": 3.5, "cfg": true_cfg,
                                                                            "negative_prompt": negative}))
    prepared, x, ours = plain(pair)
    pipe = FluxPipeline.from_pretrained(models["flux"])
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(PROMPT, num_inference_steps=4, guidance_scale=3.5, true_cfg_scale=true_cfg,
                  negative_prompt=negative if true_cfg != 1.0 else None, latents=pack(x), height=16, width=16,
                  max_sequence_length=T5_LENGTH, output_type="latent").images
    assert prepared.grid == pipe.scheduler.sigmas.tolist()  # dynamic shifting: mu from 16 image tokens
    error = (ours - unpack(theirs, 8, 8)).abs().max().item()
    assert error < 1e-5, error  # measured: 0.0 at true CFG 1, 6e-7 at 2 (batched branches)
    assert prepared.sides["final"]["guidance"] == 3.5


def test_distilled_guidance_changes_the_sample_and_cfg_flag_sets_it(models: dict[str, Path]) -> None:
    pair = load(cards(models)["tiny-flux-guidance"])
    prepared = pair.prepare(Condition(PROMPT), Settings(steps=3, lam=2, width=16, height=16, cfg=5.0))
    assert prepared.sides["final"]["guidance"] == 5.0 and prepared.sides["final"]["cfg"] == 1.0
    # at the final side's guidance the weak side would be the final side itself: the plain weak baseline keeps 1.0
    assert prepared.sides["weak"]["guidance"] == 1.0 and prepared.sides["weak_plain"]["guidance"] == 1.0
    x = prepared.noise(0)
    with torch.inference_mode():
        strong, weak = prepared.strong(x, 0.7), prepared.weak(x, 0.7)
    assert (strong - weak).abs().max() > 1e-4
    assert prepared.strong.cost == 1.0  # type: ignore[attr-defined]


def run_cli(args: list[str]) -> Any:
    from typer.testing import CliRunner

    from w2sd_cli.cli import build_app

    return CliRunner().invoke(build_app(), args)


def test_every_card_shape_generates_through_the_cli_with_compare(models: dict[str, Path], isolated_home: Path,
                                                                 tmp_path: Path) -> None:
    for name, data in cards(models).items():
        write_flow_card(isolated_home, name, data["models"], **{k: v for k, v in data.items()
                                                               if k in ("strong", "weak", "final", "options")})
    out = tmp_path / "out"
    for name in cards(models):
        result = run_cli(["gen", "a red fox", "--pair", name, "--steps", "2", "--out", str(out), "--compare",
                          "--device", "cpu"])
        assert result.exit_code == 0, result.output
        files = [out / f"{name}-a-red-fox-seed0{suffix}.png" for suffix in ("-weak", "-strong", "", "-compare")]
        assert all(f.exists() for f in files), sorted(p.name for p in out.iterdir())
        images = [np.asarray(Image.open(f)) for f in files[:3]]
        assert images[0].shape == (16, 16, 3)
        assert not np.array_equal(images[1], images[2])  # W2SD moved the sample away from plain strong sampling
    recipe = read_recipe(out / "tiny-sd35-cfg-a-red-fox-seed0.png")
    assert recipe["kind"] == "flow" and recipe["nfe"] == 2 + 2 * 1
    assert recipe["cost"] == 2 * 2 + 1 * (2 + 1)  # final and strong at CFG 4.5 run batch 2, weak at CFG 0 batch 1
    assert recipe["grid"][0] == 1.0 and recipe["grid"][-1] == 0.0
    lora = read_recipe(out / "tiny-flux-lora-a-red-fox-seed0.png")
    assert lora["sides"]["weak"]["lora_scale"] == -1.0 and lora["sides"]["final"]["guidance"] == 3.5


def test_python_api_and_bench_work_for_flow_pairs(models: dict[str, Path], isolated_home: Path,
                                                  tmp_path: Path) -> None:
    data = cards(models)["tiny-flux-guidance"]
    write_flow_card(isolated_home, "tiny-flux-guidance", data["models"], strong=data["strong"], weak=data["weak"])
    pair = load_pair("tiny-flux-guidance", device="cpu")
    [one] = pair.generate(PROMPT, seeds=[3], steps=2)
    made = pair_from_card(parse_card(data), device="cpu").compare(PROMPT, seeds=[3, 4], steps=2)
    assert one.image.size == (16, 16) and one.nfe == 2 + 2 * 1
    assert np.array_equal(np.asarray(one.image), np.asarray(made.samples["w2sd"][0].image))  # seed-only output
    assert set(made.samples) == {"weak", "strong", "w2sd"}
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\na blue house\n")
    result = run_cli(["bench", "tiny-flux-guidance", "--prompts", str(prompts), "--seeds", "0", "--methods",
                      "weak,strong,w2sd,extrapolate,first-order,equal-nfe", "--steps", "2", "--device", "cpu",
                      "--out", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output[result.output.index("{"):])
    assert facts["complete"] and facts["done"] == facts["total"] == 2 * 6


def test_components_are_loaded_once_and_shared(models: dict[str, Path]) -> None:
    pair = load(cards(models)["tiny-large-medium"])
    large, medium = pair.models["large"], pair.models["medium"]
    assert large.vae is medium.vae and large.text_encoders == medium.text_encoders
    assert large.transformer is not medium.transformer and pair.encoders["large"] is pair.encoders["medium"]
    prepared = pair.prepare(Condition(PROMPT), Settings(steps=2, lam=1, width=16, height=16))
    assert prepared.sides["strong"]["model"] == "large" and prepared.sides["final"]["cfg"] == 3.5
    assert pair.embeddings_computed == 2  # one prompt + the empty negative of the final CFG, for both models
    # two full folders with bit-identical VAE and text encoders: kept once (VAE + 3 encoders)
    checkpoint = load(flow_card("ckpt", {"a": {"path": str(models["sd3"])}, "b": {"path": str(models["sd3_tuned"])}},
                                weak={"model": "b"}))
    assert checkpoint.shared == 4 and checkpoint.models["a"].vae is checkpoint.models["b"].vae
    with pytest.raises(CardError, match="components_from"):
        FlowKind().check(parse_card(flow_card("bad", {"a": {"path": "x"}}, options={"components_from": {"a": "z"}})))


def test_lora_scale_switches_in_place_and_matches_diffusers_set_adapters(models: dict[str, Path]) -> None:
    from diffusers import FluxPipeline

    pair = load(cards(models)["tiny-flux-lora"])
    assert pair.lora.layers("w2sd_detail") > 0
    prepared = pair.prepare(Condition(PROMPT), Settings(steps=2, lam=1, width=16, height=16))
    x = prepared.noise(1)
    with torch.inference_mode():
        strong, weak, strong_again = prepared.strong(x, 0.6), prepared.weak(x, 0.6), prepared.strong(x, 0.6)
    assert torch.equal(strong, strong_again) and (strong - weak).abs().max() > 1e-4
    pipe = FluxPipeline.from_pretrained(models["flux"])
    pipe.load_lora_weights(str(models["flux_lora"].parent), weight_name=models["flux_lora"].name, adapter_name="d")
    for scale, ours in ((1.0, strong), (-1.0, weak)):
        pipe.set_adapters(["d"], [scale])
        reference = load(flow_card("base", {"m": {"path": str(models["flux"])}}))
        reference.models["m"].transformer = pipe.transformer
        denoiser = reference._denoiser(prepared_side(prepared, "strong"), prepared.schedule, (16, 16), None)
        with torch.inference_mode():
            assert torch.allclose(denoiser(x, 0.6), ours, atol=1e-6)


def prepared_side(prepared: Any, role: str) -> Any:
    from w2sd_cli.kinds.diffusers_sides import SideSpec

    side = dict(prepared.sides[role])
    return SideSpec(model="m", lora=None, lora_scale=0.0, cfg=side["cfg"], guidance=side["guidance"],
                    prompt=side["prompt"], negative_prompt=side["negative_prompt"], control=None, control_scale=1.0,
                    rendered_prompt=side["rendered_prompt"])


def test_offload_gives_the_same_sample_and_is_recorded(models: dict[str, Path]) -> None:
    data = cards(models)["tiny-sd35-cfg"]
    _, _, direct = plain(load(data))
    offloaded = load(data, offload=True)
    _, _, again = plain(offloaded)
    assert torch.equal(direct, again) and offloaded.provenance()["offload"] is True
    assert offloaded.provenance()["dtype"] == "float32"


def test_errors_name_the_fix(models: dict[str, Path]) -> None:
    sd3 = {"m": {"path": str(models["sd3"])}}
    with pytest.raises(ModelError, match="no guidance input"):
        load(flow_card("g", sd3, strong={"guidance": 2.0}))
    pair = load(flow_card("ok", sd3))
    with pytest.raises(InputError, match="reference-interval"):
        pair.prepare(Condition(PROMPT), Settings(steps=2, lam=1, reference_interval=True))
    with pytest.raises(InputError, match="--width 15"):
        pair.prepare(Condition(PROMPT), Settings(steps=2, lam=1, width=15, height=16))
    with pytest.raises(CardError, match=r"strong\.experts: unknown field"):
        FlowKind().check(parse_card(flow_card("c", sd3, strong={"experts": "top"})))
    with pytest.raises(ModelError, match=r"mixes flux and sd3 models"):
        load(flow_card("mix", {**sd3, "f": {"path": str(models["flux"])}}, weak={"model": "f"}))


FLOW_CARDS = {"sd35-cfg": "sd3", "sd35-large-medium": "sd3", "flux-guidance": "flux", "flux-lora": "flux"}


@pytest.mark.parametrize("name", FLOW_CARDS)
def test_built_in_flow_cards_are_valid_new_pairs_and_name_source_and_licence(name: str) -> None:
    from w2sd_cli.cards import load_card
    from w2sd_cli.paths import registry_dir

    card = load_card(registry_dir() / "pairs" / f"{name}.yaml")
    kind = FlowKind()
    kind.check(card)
    assert card.kind == "flow" and card.source.notes and card.source.url
    assert card.source.paper and "New pair" in card.source.paper and "says nothing" in card.source.paper
    licence = card.source.licence or ""
    assert "HF_TOKEN" in licence and "https://huggingface.co/" in licence
    sides = kind.resolve(card, final_cfg=None)
    assert sides["strong"] != sides["weak"]
    for key in kind.model_keys(card):
        ref = card.models[key]
        assert ref.repo_id and (ref.filename or ref.allow_patterns)
        assert ref.filename or "transformer/*" in (ref.allow_patterns or [])
    if FLOW_CARDS[name] == "flux":
        assert sides["final"].guidance == 3.5 and sides["final"].cfg == 1.0  # distilled guidance: one call


def test_pairs_list_shows_the_flow_cards(isolated_home: Path) -> None:
    result = run_cli(["pairs", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = {row["name"]: row for row in json.loads(result.output)["pairs"]}
    assert {n: listed[n]["kind"] for n in FLOW_CARDS} == dict.fromkeys(FLOW_CARDS, "flow")


def test_guidance_is_additive_card_digests_of_other_cards_do_not_change() -> None:
    from w2sd_cli.cards import Side

    assert "guidance" not in Side(cfg=2.0).model_dump() and Side(guidance=2.0).model_dump()["guidance"] == 2.0
    data = flow_card("d", {"m": {"path": "/x"}}, strong={"cfg": 2.0})
    with_guidance = flow_card("d", {"m": {"path": "/x"}}, strong={"cfg": 2.0, "guidance": 2.0})
    assert parse_card(data).digest() != parse_card(with_guidance).digest()


def test_the_readme_flow_card_example_is_a_valid_card() -> None:
    import re

    import yaml

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Flow models"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    card = parse_card(yaml.safe_load(block.group(1)))
    FlowKind().check(card)
    assert FlowKind().model_keys(card) == ["flux", "mine"]
