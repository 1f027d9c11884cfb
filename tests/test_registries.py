"""The one clash rule (w2sd_cli.registries), checked on the registry itself, and w2sd_cli.testing's tiny models."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from w2sd_cli.errors import CardError, PairNotFound, PluginError
from w2sd_cli.registries import NamedRegistry

ADDS = [("w2sd", "alpha", "builtin-alpha", True), ("p1", "alpha", "p1-alpha", False),
        ("p1", "beta", "p1-beta", False), ("p2", "beta", "p2-beta", False), ("p2", "gamma", "p2-gamma", False)]


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(ADDS))))[::17])
def test_resolution_does_not_depend_on_registration_order(order: tuple[int, ...]) -> None:
    table = NamedRegistry[str]("thing")
    for i in order:
        plugin, name, obj, builtin = ADDS[i]
        table.add(plugin, name, obj, builtin)
    assert table.get("alpha") == "builtin-alpha" and table.get("w2sd:alpha") == "builtin-alpha"
    assert table.get("p1:alpha") == "p1-alpha"
    assert table.get("gamma") == "p2-gamma"
    with pytest.raises(PluginError, match=r"claimed by several plugins' things \(p1:beta, p2:beta\)"):
        table.get("beta")
    assert {table.get("p1:beta"), table.get("p2:beta")} == {"p1-beta", "p2-beta"}
    assert sorted(table) == ["alpha", "gamma", "p1:alpha", "p1:beta", "p2:beta"]
    assert len(table.problems) == 2


def test_aliases_invalid_entries_home_and_bad_names() -> None:
    table = NamedRegistry[str]("pair", PairNotFound, "Run `w2sd pairs list`.")
    table.add("w2sd", "shapes", "builtin-shapes", True, aliases=["toy"])
    table.add("p", "toy", "plugin-toy")
    table.add("p", "toy", "again")
    table.add("p", "a:b", "colon")
    table.add_invalid("q", "broken", CardError("broken.yaml: invalid pair card: kind: Field required."))
    assert table.get("toy") == "builtin-shapes" and table.get("p:toy") == "plugin-toy"
    assert table.get("toy", home="p") == "plugin-toy"  # a plugin's own name first
    with pytest.raises(CardError, match="kind: Field required"):
        table.get("broken")
    assert "broken" not in table and "shapes" in table and "q:broken" not in table
    with pytest.raises(PairNotFound, match=r"No pair called 'shape'\. Did you mean 'shapes'.*w2sd pairs list"):
        table.get("shape")
    problems = " ".join(table.problems)
    assert "registered pair 'toy' twice" in problems and "'a:b' is not usable" in problems
    assert "broken.yaml" in problems and "pair 'toy' from plugin p clashes with the built-in" in problems
    assert [e.obj for e in table.entries()] == ["builtin-shapes", "plugin-toy"]
    assert table.values() == ["builtin-shapes", "plugin-toy"]


def test_tiny_models_make_a_loadable_pipeline(tmp_path: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    from w2sd_cli.testing import save_tiny_sd, tiny_tokenizer

    tok = tiny_tokenizer()
    ids = tok(["a red cat", "a zebra"], padding="max_length", max_length=8).input_ids
    assert ids[0][:5] == [2, 4, 7, 10, 3] and ids[1][2] == 1  # <bos> a red cat <eos>; unknown word -> <unk>
    folder = save_tiny_sd(tmp_path / "sd", seed=3)
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    image = pipe("a red cat", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                 output_type="np").images[0]
    assert image.shape == (16, 16, 3)
    other = StableDiffusionPipeline.from_pretrained(save_tiny_sd(tmp_path / "sd2", seed=4))
    assert not torch.equal(pipe.unet.conv_in.weight, other.unet.conv_in.weight)
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight,
                       other.text_encoder.get_input_embeddings().weight)
