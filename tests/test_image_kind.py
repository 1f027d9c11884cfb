"""The ``diffusers`` kind end to end on tiny SD and SDXL pipelines saved to folders, and through the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.image_helpers import (
    card_dict,
    save_controlnet,
    save_lora,
    save_sd,
    save_sdxl,
    sd_unet,
    sdxl_unet,
    write_card,
)
from w2sd_cli.api import pair_from_card
from w2sd_cli.cards import parse_card
from w2sd_cli.errors import CardError, InputError, ModelError
from w2sd_cli.images import read_recipe
from w2sd_cli.kinds.diffusers import DiffusersKind
from w2sd_cli.methods import plain_weak


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("image-models")
    photo = np.zeros((16, 16, 3), dtype=np.uint8)
    photo[4:12, 4:12] = (220, 180, 40)
    Image.fromarray(photo).save(root / "photo.png")
    nan_unet = sd_unet(3)
    with torch.no_grad():
        nan_unet.conv_out.weight.fill_(float("nan"))
    return {"sd": save_sd(root / "sd"), "sd_tuned": save_sd(root / "sd_tuned", seed=4),
            "sd_nan": save_sd(root / "sd_nan", unet=nan_unet),
            "xl": save_sdxl(root / "xl"), "xl_tuned": save_sdxl(root / "xl_tuned", seed=5),
            "lora": save_lora(root / "lora", sd_unet(0)), "xl_lora": save_lora(root / "xl_lora", sdxl_unet(0)),
            "canny": save_controlnet(root / "canny"), "photo": root / "photo.png"}


def lora_card(models: dict[str, Path], name: str = "tiny-lora", **extra: Any) -> dict[str, Any]:
    return card_dict(name, {"base": {"path": str(models["sd"])},
                            "detail": {"path": str(models["lora"]), "format": "lora"}},
                     strong={"lora": "detail", "lora_scale": 0.8}, weak={"lora_scale": -1.5}, **extra)


@dataclass
class Result:
    files: list[Path]
    summary: dict[str, Any]


def run(card_data: dict[str, Any], out: Path, *, prompt: str = "a photo", seed: int = 0, num_images: int = 1,
        compare: bool = False, **knobs: Any) -> Result:
    """What `w2sd gen` does, through the library: load the pair, sample, write the files."""
    pair = pair_from_card(parse_card(card_data))
    methods = ("weak", "strong", "w2sd") if compare else ("w2sd",)
    made = pair.compare(prompt, seeds=range(seed, seed + num_images), methods=methods, **knobs)
    files = made.save(out)
    return Result(files, {**made.summary(files), **made.samples[methods[-1]][0].recipe["provenance"],
                          "embeddings_computed": pair.engine.loaded.embeddings_computed})


def resolve_sides(card: Any, final_cfg: float | None = None) -> dict[str, Any]:
    """The card's sides as the kind resolves them, with the method table's plain weak side."""
    from dataclasses import replace

    sides = DiffusersKind().resolve(card)
    if final_cfg is not None:
        sides["final"] = replace(sides["final"], cfg=final_cfg)
    return {**sides, "weak_plain": plain_weak(sides, ("cfg", "guidance"))}


def pixels(path: Path) -> bytes:
    with Image.open(path) as im:
        return im.tobytes()


def test_sides_resolve_by_the_documented_rules(models: dict[str, Path]) -> None:
    sides = resolve_sides(parse_card(lora_card(models)))
    assert (sides["strong"].lora, sides["strong"].lora_scale, sides["strong"].cfg) == ("detail", 0.8, 1.0)
    assert (sides["weak"].lora, sides["weak"].lora_scale, sides["weak"].cfg) == ("detail", -1.5, 1.0)
    assert (sides["final"].lora, sides["final"].lora_scale, sides["final"].cfg) == ("detail", 0.8, 5.5)
    assert sides["weak_plain"].cfg == 5.5 and sides["weak_plain"].lora_scale == -1.5
    assert resolve_sides(parse_card(lora_card(models)), final_cfg=3.0)["final"].cfg == 3.0


def test_lora_pair_compare_writes_three_images_and_a_panel(models: dict[str, Path], tmp_path: Path) -> None:
    result = run(lora_card(models), tmp_path, prompt="a fox", compare=True)
    names = [p.name for p in result.files]
    assert names == ["tiny-lora-a-fox-seed0-weak.png", "tiny-lora-a-fox-seed0-strong.png",
                     "tiny-lora-a-fox-seed0.png", "tiny-lora-a-fox-seed0-compare.png"]
    weak, strong, w2sd = (pixels(p) for p in result.files[:3])
    assert len({weak, strong, w2sd}) == 3
    with Image.open(result.files[3]) as grid:  # 16-pixel images are enlarged ×8 in the panel
        assert grid.width == 3 * 128 + 2 * 4
    by_method = {i["method"]: i for i in result.summary["images"]}
    assert by_method["w2sd"]["nfe"] == 3 + 2 * 2 and by_method["w2sd"]["cost"] == 3 * 2 + 2 * 2
    assert by_method["strong"]["cost"] == 6
    assert result.summary["embeddings_computed"] == 2  # one prompt + the empty negative: the LoRA has no text part


def test_same_seed_same_pixels_and_an_image_depends_only_on_its_seed(models: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    first = run(lora_card(models), tmp_path / "a", prompt="a fox", seed=5, num_images=2)
    again = run(lora_card(models), tmp_path / "b", prompt="a fox", seed=6)
    assert [p.name for p in first.files] == ["tiny-lora-a-fox-seed5.png", "tiny-lora-a-fox-seed6.png"]
    assert pixels(first.files[1]) == pixels(again.files[0])
    assert pixels(first.files[0]) != pixels(first.files[1])
    one, two = read_recipe(first.files[1]), read_recipe(again.files[0])
    for recipe in (one, two):
        recipe.pop("seconds")
    assert one == two


def test_metadata_round_trips_and_reproduces_the_image(models: dict[str, Path], tmp_path: Path) -> None:
    card = parse_card(lora_card(models))
    made = run(lora_card(models), tmp_path / "a", prompt="a fox", seed=3, steps=4, lam=2, negative_prompt="blur")
    recipe = read_recipe(made.files[0])
    assert recipe["card_digest"] == card.digest() and recipe["pair"] == "tiny-lora" and recipe["method"] == "w2sd"
    condition = recipe["condition"]
    assert (recipe["prompt"], condition["negative_prompt"], recipe["seed"], recipe["nfe"]) == ("a fox", "blur", 3, 8)
    assert recipe["sides"]["weak"]["negative_prompt"] == "blur"  # --negative-prompt reaches every side
    assert recipe["sides"]["weak"]["lora_scale"] == -1.5
    assert recipe["provenance"]["models"]["detail"]["format"] == "lora"
    assert {"w2sd", "diffusers", "torch"} <= set(recipe["versions"]) and recipe["seconds"] >= 0
    assert (recipe["settings"]["steps"], recipe["settings"]["lam"]) == (4, 2)
    again = run(lora_card(models), tmp_path / "b", prompt="a fox", seed=3, steps=4, lam=2)
    assert pixels(again.files[0]) != pixels(made.files[0])  # the negative prompt matters at CFG 5.5


def test_a_self_pair_stays_close_to_plain_sampling(models: dict[str, Path], tmp_path: Path) -> None:
    """Strong = weak: W2SD differs from plain sampling only by the inversion error, which is small."""
    same = card_dict("self", {"base": {"path": str(models["sd"])}}, final={"cfg": 1.0}, defaults={"steps": 20})
    other = card_dict("tuned", {"base": {"path": str(models["sd"])}, "tuned": {"path": str(models["sd_tuned"])}},
                      strong={"model": "base"}, weak={"model": "tuned"}, final={"cfg": 1.0}, defaults={"steps": 20})
    res = run(same, tmp_path / "self", compare=True)
    w2sd, plain = (np.asarray(Image.open(p), dtype=float) for p in (res.files[2], res.files[1]))
    res2 = run(other, tmp_path / "other", compare=True)
    w2sd_other = np.asarray(Image.open(res2.files[2]), dtype=float)
    self_gap, pair_gap = np.abs(w2sd - plain).mean(), np.abs(w2sd_other - plain).mean()
    assert self_gap < 2.0 and self_gap < 0.2 * pair_gap  # out of 255; measured 1.4 vs 15.5


def test_sdxl_checkpoint_and_guidance_pair_shares_components(models: dict[str, Path], tmp_path: Path) -> None:
    data = card_dict("tiny-jugg-cfg", {"tuned": {"path": str(models["xl_tuned"])}, "base": {"path": str(models["xl"])}},
                     strong={"model": "tuned", "cfg": 5.5}, weak={"model": "base", "cfg": 0.0})
    result = run(data, tmp_path, prompt="a fox", compare=True)
    assert result.summary["shared_components"] == 5  # vae, 2 text encoders, 2 tokenizers
    by_method = {i["method"]: i for i in result.summary["images"]}
    assert by_method["w2sd"]["cost"] == 3 * 2 + 2 * (2 + 1)  # final CFG batch 2; reflection 2 + 1
    assert len({pixels(p) for p in result.files[:3]}) == 3


def test_a_guidance_pairs_weak_panel_is_its_weak_side_not_the_strong_one(models: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    data = card_dict("tiny-zsampling", {"base": {"path": str(models["sd"])}}, strong={"cfg": 5.5}, weak={"cfg": 0.0})
    sides = resolve_sides(parse_card(data))
    assert sides["weak_plain"].cfg == 0.0  # at the final CFG it would be the strong model itself
    result = run(data, tmp_path, prompt="a fox", compare=True)
    weak, strong = (pixels(p) for p in result.files[:2])
    assert weak != strong
    assert read_recipe(result.files[0])["sides"]["weak_plain"]["cfg"] == 0.0


def test_prompt_pair_needs_and_uses_the_strong_prompt(models: dict[str, Path], tmp_path: Path) -> None:
    data = card_dict("tiny-prompt", {"base": {"path": str(models["sd"])}}, options={"needs_strong_prompt": True})
    with pytest.raises(InputError, match="--strong-prompt"):
        run(data, tmp_path, prompt="a fox")
    result = run(data, tmp_path, prompt="a fox", strong_prompt="a red fox, detailed")
    sides = read_recipe(result.files[0])["sides"]
    assert sides["strong"]["rendered_prompt"] == sides["final"]["rendered_prompt"] == "a red fox, detailed"
    assert sides["weak"]["rendered_prompt"] == "a fox"


def test_controlnet_pair_needs_a_control_image_and_uses_it(models: dict[str, Path], tmp_path: Path) -> None:
    data = card_dict("tiny-canny", {"base": {"path": str(models["sd"])},
                                    "canny": {"path": str(models["canny"]), "format": "controlnet"}},
                     strong={"control": "canny", "cfg": 0.5}, weak={"cfg": 0.5})
    with pytest.raises(InputError, match="--control-image"):
        run(data, tmp_path, prompt="a fox")
    result = run(data, tmp_path, prompt="a fox", control_image=models["photo"], compare=True)
    recipe = read_recipe(result.files[2])
    assert recipe["sides"]["strong"]["control"] == "canny" and recipe["sides"]["weak"]["control"] is None
    assert recipe["condition"]["control_image"] == str(models["photo"].resolve())
    import hashlib

    assert recipe["condition"]["control_image_sha256"] == hashlib.sha256(models["photo"].read_bytes()).hexdigest()
    assert pixels(result.files[0]) != pixels(result.files[1])  # plain weak vs ControlNet strong


def test_wrong_size_for_the_model(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--width 15 does not fit this model: use a multiple of 2"):
        run(lora_card(models), tmp_path, width=15)
    with pytest.raises(InputError, match="--height 2 does not fit"):
        run(lora_card(models), tmp_path, height=2)


def test_lora_that_does_not_fit_the_unet(models: dict[str, Path], tmp_path: Path) -> None:
    data = card_dict("bad-lora", {"base": {"path": str(models["sd"])},
                                  "xl": {"path": str(models["xl_lora"]), "format": "lora"}},
                     strong={"lora": "xl"}, weak={"lora_scale": -1.0})
    with pytest.raises(ModelError, match=r"LoRA pytorch_lora_weights\.safetensors: .*fit"):
        run(data, tmp_path)


def test_nans_are_one_clear_error(models: dict[str, Path], tmp_path: Path) -> None:
    data = card_dict("nan", {"base": {"path": str(models["sd_nan"])}})
    with pytest.raises(ModelError, match="became NaN/inf"):
        run(data, tmp_path)
    assert not list(tmp_path.glob("*.png"))


def test_card_errors(models: dict[str, Path]) -> None:
    kind = DiffusersKind()
    with pytest.raises(CardError, match=r"weak\.lora_scale is set but no LoRA"):
        kind.check(parse_card(card_dict("x", {"base": {"path": "."}}, weak={"lora_scale": -1.0})))
    with pytest.raises(CardError, match=r"strong\.control 'base' has format 'diffusers'; expected controlnet"):
        kind.check(parse_card(card_dict("x", {"base": {"path": "."}}, strong={"control": "base"})))
    with pytest.raises(CardError, match=r"needs options\.config_from"):
        kind.check(parse_card(card_dict("x", {"ckpt": {"path": "a.safetensors", "format": "single-file"}})))
    card = parse_card(card_dict("x", {"ckpt": {"path": "a.safetensors", "format": "single-file"},
                                      "base": {"path": "."}}, options={"config_from": {"ckpt": "base"}}))
    kind.check(card)
    assert kind.model_keys(card) == ["ckpt", "base"]


def _cli(args: list[str]) -> Any:
    from typer.testing import CliRunner

    from w2sd_cli.cli import build_app

    return CliRunner().invoke(build_app(), args)


def test_cli_gen_with_user_cards(models: dict[str, Path], isolated_home: Path, tmp_path: Path) -> None:
    data = lora_card(models)
    write_card(isolated_home, "tiny-lora", data["models"], strong=data["strong"], weak=data["weak"])
    write_card(isolated_home, "tiny-canny", {"base": {"path": str(models["sd"])},
                                             "canny": {"path": str(models["canny"]), "format": "controlnet"}},
               strong={"control": "canny", "cfg": 0.5}, weak={"cfg": 0.5})
    out = tmp_path / "out"
    result = _cli(["gen", "a fox", "--pair", "tiny-lora", "--steps", "2", "--out", str(out), "--seed", "1",
                   "--compare"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {f"tiny-lora-a-fox-seed1{m}.png" for m in ("-weak", "-strong", "",
                                                                                        "-compare")}
    result = _cli(["gen", "a fox", "--pair", "tiny-canny", "--out", str(out)])
    assert result.exit_code != 0 and "--control-image" in result.output
    result = _cli(["gen", "a fox", "--pair", "tiny-canny", "--out", str(out), "--control-image",
                   str(models["photo"]), "--width", "24", "--height", "16"])
    assert result.exit_code == 0, result.output
    with Image.open(out / "tiny-canny-a-fox-seed0.png") as im:
        assert im.size == (24, 16)


def test_cli_from_image_reproduces_the_pixels(models: dict[str, Path], isolated_home: Path, tmp_path: Path) -> None:
    data = lora_card(models)
    write_card(isolated_home, "tiny-lora", data["models"], strong=data["strong"], weak=data["weak"])
    first, again = tmp_path / "first", tmp_path / "again"
    result = _cli(["gen", "a fox", "--pair", "tiny-lora", "--steps", "3", "--lambda", "1", "--seed", "4",
                   "--out", str(first)])
    assert result.exit_code == 0, result.output
    original = first / "tiny-lora-a-fox-seed4.png"
    result = _cli(["gen", "--from-image", str(original), "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert "has changed" not in result.output
    assert pixels(again / original.name) == pixels(original)
    result = _cli(["gen", "--from-image", str(models["photo"]), "--out", str(again)])
    assert result.exit_code == 1 and "carries no w2sd recipe" in result.output


IMAGE_CARDS = ("hd-lora", "hd-lora-demo", "dreamshaper-sd15", "juggernaut-sdxl", "zsampling-sd15", "zsampling-sdxl",
               "juggernaut-cfg", "prompt-sd15", "controlnet-canny-sd15", "dpo-lora-sd15")


@pytest.mark.parametrize("name", IMAGE_CARDS)
def test_built_in_image_cards_are_valid_and_name_their_source(name: str) -> None:
    from w2sd_cli.cards import load_card
    from w2sd_cli.paths import registry_dir

    card = load_card(registry_dir() / "pairs" / f"{name}.yaml")
    kind = DiffusersKind()
    kind.check(card)
    assert card.kind == "diffusers" and card.source.paper and card.source.notes and card.source.licence
    sides = resolve_sides(card)
    assert sides["final"].cfg == 5.5 and sides["final"].model == sides["strong"].model
    for key in kind.model_keys(card):
        ref = card.models[key]
        assert ref.notes, f"{name}: model {key} says nothing about its choice"
        if ref.repo_id in ("stabilityai/stable-diffusion-xl-base-1.0", "stable-diffusion-v1-5/stable-diffusion-v1-5"):
            assert ref.revision is not None and len(ref.revision) == 40


def test_paper_settings_of_the_lora_cards() -> None:
    from w2sd_cli.cards import load_card
    from w2sd_cli.paths import registry_dir

    def knobs(name: str) -> list[tuple[float, float]]:
        sides = resolve_sides(load_card(registry_dir() / "pairs" / f"{name}.yaml"))
        return [(sides[s].lora_scale, sides[s].cfg) for s in ("strong", "weak", "final")]

    assert knobs("hd-lora") == [(0.8, 1.0), (-1.5, 1.0), (0.8, 5.5)]
    assert knobs("hd-lora-demo") == [(1.5, 5.5), (-1.5, 1.0), (0.8, 5.5)]


def test_single_file_checkpoint_uses_the_local_base_config(models: dict[str, Path], tmp_path: Path) -> None:
    """A file that is no SD checkpoint fails with one clear error, read offline with the base folder's configs."""
    from safetensors.torch import save_file

    junk = tmp_path / "junk.safetensors"
    save_file({"not.a.unet": torch.zeros(2)}, str(junk))
    data = card_dict("single", {"ckpt": {"path": str(junk), "format": "single-file"},
                                "base": {"path": str(models["sd"])}},
                     strong={"model": "ckpt"}, weak={"model": "base"}, options={"config_from": {"ckpt": "base"}})
    with pytest.raises(ModelError, match=r"junk\.safetensors: cannot load it as a SD checkpoint with the configs of"):
        run(data, tmp_path / "out")


def test_text_encoder_lora_scales_change_the_embeddings_once_per_scale(models: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    from tests.image_helpers import text_encoder

    lora = save_lora(tmp_path / "te-lora", sd_unet(0), text_encoder=text_encoder(0))
    data = card_dict("te-lora", {"base": {"path": str(models["sd"])}, "detail": {"path": str(lora), "format": "lora"}},
                     strong={"lora": "detail", "lora_scale": 0.8}, weak={"lora_scale": -1.5})
    result = run(data, tmp_path / "out", prompt="a fox", compare=True)
    # ("a fox", 0.8), ("", 0.8), ("a fox", -1.5), ("", -1.5): each computed once for all sides and methods
    assert result.summary["embeddings_computed"] == 4
    # the paper's reference code encodes with the LoRA switched off: one embedding per prompt for every side
    off = run({**data, "options": {"text_encoder_lora": False}}, tmp_path / "off", prompt="a fox", compare=True)
    assert off.summary["embeddings_computed"] == 2
    assert read_recipe(off.files[2])["sides"]["weak"]["text_encoder_lora"] is False
    assert pixels(off.files[2]) != pixels(result.files[2])

    from w2sd_cli.adapters.lora import LoraScales
    from w2sd_cli.adapters.models import load_folder
    from w2sd_cli.adapters.text import PromptEncoder
    from w2sd_cli.kinds.diffusers_pair import _load_loras

    card = parse_card(data)
    model = load_folder(models["sd"], torch.float32)
    plain = PromptEncoder("sd", model.tokenizers, model.text_encoders, torch.device("cpu"), torch.float32)
    base = plain.encode("a fox").hidden_states
    _load_loras(resolve_sides(card), {"base": model}, {"detail": lora})
    scales = LoraScales.scan(model.text_encoders)
    assert scales.adapters == {"w2sd_detail"}
    enc = PromptEncoder("sd", model.tokenizers, model.text_encoders, torch.device("cpu"), torch.float32, lora=scales)
    assert torch.equal(enc.encode("a fox", {"w2sd_detail": 0.0}).hidden_states, base)
    assert not torch.allclose(enc.encode("a fox", {"w2sd_detail": 0.8}).hidden_states, base)


def test_store_blobs_get_a_suffixed_link(isolated_home: Path, tmp_path: Path) -> None:
    from w2sd_cli.kinds.diffusers_pair import _with_suffix

    blob = tmp_path / ("ab" * 32)
    blob.write_bytes(b"x")
    link = _with_suffix(blob)
    assert link.name.endswith(".safetensors") and link.resolve() == blob.resolve()
    assert _with_suffix(blob) == link and link.parent == isolated_home / "links"
    named = tmp_path / "lora.safetensors"
    named.write_bytes(b"x")
    assert _with_suffix(named) == named
