"""The Python API: the README's example, and from_pipelines over a user's own diffusers pipelines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.image_helpers import card_dict, save_lora, save_sd, sd_unet

ROOT = Path(__file__).resolve().parent.parent


def readme_python_example() -> str:
    """The README's Python example, exactly as written."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Python API\n.*?```python\n(.*?)```", text, re.S)
    assert block, "README has no Python API example"
    return block.group(1)


def test_the_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(readme_python_example(), "README.md", "exec"), namespace)  # our own README, exactly as written
    assert (tmp_path / "square.png").is_file() and (tmp_path / "compare.png").is_file()
    sample = namespace["sample"]
    assert sample.nfe == 25 + 2 * 24 and sample.recipe["method"] == "w2sd"  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def sd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api-models")
    return {"sd": save_sd(root / "sd"), "lora": save_lora(root / "lora", sd_unet(0))}


def test_from_pipelines_equals_the_same_pair_as_a_card(sd: dict[str, Path]) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    import w2sd_cli
    from w2sd_cli.api import pair_from_card
    from w2sd_cli.cards import parse_card

    pipe = StableDiffusionPipeline.from_pretrained(str(sd["sd"]), safety_checker=None, requires_safety_checker=False)
    pipe.load_lora_weights(str(sd["lora"]), adapter_name="detail")
    mine = w2sd_cli.from_pipelines(pipe, pipe, strong_side=w2sd_cli.SideKnobs(lora_scales={"detail": 0.8}),
                                   weak_side=w2sd_cli.SideKnobs(lora_scales={"detail": -1.5}), steps=4)
    card = parse_card(card_dict("tiny-lora", {"base": {"path": str(sd["sd"])},
                                              "detail": {"path": str(sd["lora"]), "format": "lora"}},
                                strong={"lora": "detail", "lora_scale": 0.8}, weak={"lora_scale": -1.5},
                                defaults={"steps": 4}))
    theirs = pair_from_card(card)
    for method in ("w2sd", "weak", "strong"):
        a = mine.generate("a fox", seeds=[1], method=method)[0].image
        b = theirs.generate("a fox", seeds=[1], method=method)[0].image
        assert a.tobytes() == b.tobytes(), method
    made = mine.compare("a fox", seeds=[0, 1])
    assert len({s.image.tobytes() for rows in made.samples.values() for s in rows}) == 6
    assert made.samples["w2sd"][0].recipe["sides"]["weak"]["adapter_scales"] == {"detail": -1.5}
    assert torch.is_tensor(mine.engine.prepare(mine.condition("a fox")).noise(0))


def test_from_pipelines_refuses_what_is_not_a_stable_diffusion_pipeline() -> None:
    import w2sd_cli
    from w2sd_cli.errors import InputError

    with pytest.raises(InputError, match="no UNet or transformer and VAE"):
        w2sd_cli.from_pipelines(object(), object())


def test_from_pipelines_takes_flux_pipelines_and_equals_the_card(tmp_path: Path) -> None:
    from diffusers import FluxPipeline

    import w2sd_cli
    from tests.flow_helpers import save_flux
    from w2sd_cli.api import pair_from_card
    from w2sd_cli.cards import parse_card

    folder = save_flux(tmp_path / "flux")
    pipe = FluxPipeline.from_pretrained(str(folder))
    mine = w2sd_cli.from_pipelines(pipe, pipe, strong_side=w2sd_cli.SideKnobs(guidance=3.5),
                                   weak_side=w2sd_cli.SideKnobs(guidance=1.0), steps=3)
    card = parse_card({"schema": 1, "name": "f", "kind": "diffusers", "description": "flux guidance",
                       "models": {"m": {"path": str(folder)}}, "strong": {"guidance": 3.5}, "weak": {"guidance": 1.0},
                       "defaults": {"steps": 3}})
    theirs = pair_from_card(card)
    for method in ("w2sd", "weak"):
        a = mine.generate("a red fox", seeds=[1], method=method, width=16, height=16)[0]
        b = theirs.generate("a red fox", seeds=[1], method=method, width=16, height=16)[0]
        assert a.image.tobytes() == b.image.tobytes(), method
    assert a.recipe["sides"]["weak"]["guidance"] == 1.0


def test_from_pipelines_can_switch_the_text_encoder_lora_off(sd: dict[str, Path], tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    import w2sd_cli
    from tests.image_helpers import text_encoder
    from w2sd_cli.api import pair_from_card
    from w2sd_cli.cards import parse_card

    lora = save_lora(tmp_path / "te-lora", sd_unet(0), text_encoder=text_encoder(0))
    pipe = StableDiffusionPipeline.from_pretrained(str(sd["sd"]), safety_checker=None, requires_safety_checker=False)
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="detail")
    knobs = {"strong_side": w2sd_cli.SideKnobs(lora_scales={"detail": 0.8}),
             "weak_side": w2sd_cli.SideKnobs(lora_scales={"detail": -1.5}), "steps": 3}
    on = w2sd_cli.from_pipelines(pipe, pipe, **knobs).generate("a fox", seeds=[0], method="weak")[0]
    off = w2sd_cli.from_pipelines(pipe, pipe, text_encoder_lora=False, **knobs).generate("a fox", seeds=[0],
                                                                                          method="weak")[0]
    card = parse_card(card_dict("te", {"base": {"path": str(sd["sd"])}, "d": {"path": str(lora), "format": "lora"}},
                                strong={"lora": "d", "lora_scale": 0.8}, weak={"lora_scale": -1.5},
                                options={"text_encoder_lora": False}))
    as_card = pair_from_card(card).generate("a fox", seeds=[0], method="weak")[0]
    assert off.image.tobytes() == as_card.image.tobytes() != on.image.tobytes()
    assert off.recipe["sides"]["weak"]["text_encoder_lora"] is False
