"""The one engine: batching, recipes, --from-image, --out, methods from plugins, bad conditions."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import w2sd_cli
from w2sd_cli.errors import InputError
from w2sd_cli.images import read_recipe


def cli(*args: Any) -> Any:
    from w2sd_cli.cli import build_app

    return CliRunner().invoke(build_app(), [str(a) for a in args])


@pytest.fixture(scope="module")
def shapes() -> w2sd_cli.Pair:
    return w2sd_cli.load_pair("shapes")


def test_a_batch_of_seeds_equals_each_seed_alone(shapes: w2sd_cli.Pair) -> None:
    batched = shapes.generate("a red circle on the left", seeds=[3, 4, 5, 6], batch_size=4, steps=8)
    for sample in batched:
        [alone] = shapes.generate("a red circle on the left", seeds=[sample.seed], steps=8)
        a, b = (np.asarray(s.image, dtype=np.int16) for s in (sample, alone))
        assert np.abs(a - b).max() <= 1, sample.seed  # float tolerance: at most one grey level
    assert len({s.image.tobytes() for s in batched}) == 4


def test_analytic_batches_are_exact(tmp_path: Path) -> None:
    pair = w2sd_cli.load_pair("gmm-2d")
    batched = pair.generate(seeds=[0, 1, 2], samples=500, steps=10, batch_size=3)
    alone = pair.generate(seeds=[1], samples=500, steps=10)[0]
    np.testing.assert_allclose(batched[1].samples, alone.samples, rtol=0, atol=1e-12)
    assert batched[1].verdicts["mixture-stats"]["kl_to_ideal"] == pytest.approx(
        alone.verdicts["mixture-stats"]["kl_to_ideal"])


def test_every_png_carries_a_recipe_that_makes_it_again(tmp_path: Path) -> None:
    made = cli("gen", "a blue square at the top", "--compare", "--steps", "6", "--seed", "2", "--out", tmp_path / "a")
    assert made.exit_code == 0, made.output
    pngs = sorted((tmp_path / "a").glob("*.png"))
    assert len(pngs) == 4  # weak, strong, W2SD and the panel
    for png in pngs:
        recipe = read_recipe(png)
        assert recipe["pair"] == "shapes" and recipe["seed"] == 2 and recipe["settings"]["steps"] == 6
        assert recipe["method"] in ("weak", "strong", "w2sd")
    strong = next(p for p in pngs if p.name.endswith("-strong.png"))
    again = cli("gen", "--from-image", strong, "--out", tmp_path / "b" / "again.png")
    assert again.exit_code == 0, again.output
    remade = tmp_path / "b" / "again.png"
    assert read_recipe(remade)["method"] == "strong"
    with Image.open(strong) as x, Image.open(remade) as y:
        assert x.tobytes() == y.tobytes()
    panel = next(p for p in pngs if p.name.endswith("-compare.png"))
    assert cli("gen", "--from-image", panel, "--out", tmp_path / "c").exit_code == 0
    assert len(list((tmp_path / "c").glob("*.png"))) == 4  # a panel's recipe remakes every method in it


def test_out_ending_in_png_writes_exactly_that_file(tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    assert cli("gen", "a red circle", "--steps", "4", "--out", out).exit_code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]
    assert cli("gen", "a red circle", "--steps", "4", "-n", "2", "--compare", "--out", out).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        "x.png", "x-weak.png", "x-strong.png", "x-compare.png",
        "x-seed1.png", "x-seed1-weak.png", "x-seed1-strong.png", "x-seed1-compare.png"])


def test_outputs_follow_the_umask(tmp_path: Path) -> None:
    assert cli("gen", "a red circle", "--steps", "2", "--out", tmp_path).exit_code == 0
    (png,) = tmp_path.glob("*.png")
    mode = stat.S_IMODE(png.stat().st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask


def test_an_empty_prompt_for_a_text_pair_is_an_error(shapes: w2sd_cli.Pair) -> None:
    with pytest.raises(InputError, match="give a prompt"):
        shapes.generate("   ")
    result = cli("gen", "")
    assert result.exit_code == 1 and "give a prompt" in result.output


def test_words_the_pair_does_not_know_are_warned_about(tmp_path: Path) -> None:
    result = cli("gen", "a purple hexagon", "--steps", "2", "--out", tmp_path, "--json")
    summary = json.loads(result.stdout)
    assert any("purple" in w for w in summary["warnings"])


def test_the_method_table_takes_plugin_methods(tmp_path: Path) -> None:
    from w2sd_cli.plugin import Method, hookimpl
    from w2sd_cli.testing import installed_plugin

    def strong_twice(prepared: Any, x: Any, settings: Any, callback: Any) -> Any:
        from w2sd_cli.sampling import sample_w2sd

        return sample_w2sd(prepared.strong, prepared.weak, prepared.final, x, prepared.schedule, prepared.grid,
                           lam=settings.lam, rounds=2, callback=callback)

    class Plugin:
        @hookimpl
        def register_methods(self, register: Any) -> None:
            register(Method("w2sd-2r", "W2SD with two reflections per step", strong_twice))
            register(Method("strong", "a plugin trying to replace a built-in", strong_twice))

    with installed_plugin(Plugin(), "two-rounds"):
        result = cli("gen", "--pair", "gmm-1d", "--samples", "500", "--steps", "10", "--methods", "strong,w2sd-2r",
                     "--out", tmp_path, "--json")
        assert result.exit_code == 0, result.output
        methods = json.loads(result.stdout)["methods"]
        assert methods["w2sd-2r"]["nfe"] == 10 + 2 * 2 * 9 and methods["strong"]["nfe"] == 10  # built-in kept
        bench = cli("bench", "gmm-1d", "--methods", "w2sd-2r,two-rounds:strong", "--samples", "200", "--steps", "5",
                    "--out", tmp_path / "run", "--json")
        assert bench.exit_code == 0, bench.output


def test_coinciding_methods_are_detected(shapes: w2sd_cli.Pair) -> None:
    # the shapes card's reflection sides equal its final ones: first-order IS the extrapolation control
    made = shapes.compare("two red circles", seeds=[0], methods=["extrapolate", "first-order"], steps=5)
    first, extra = made.samples["first-order"][0], made.samples["extrapolate"][0]
    assert first.same_as == "extrapolate" and first.nfe == extra.nfe == 10
    assert first.image.tobytes() == extra.image.tobytes()


def test_the_engine_refuses_unknown_methods(shapes: w2sd_cli.Pair) -> None:
    with pytest.raises(InputError, match=r"Unknown method 'w2sdd'. Did you mean 'w2sd'"):
        shapes.generate("a red circle", method="w2sdd")


def test_zero_noise_shape_is_the_kinds(shapes: w2sd_cli.Pair) -> None:
    prepared = shapes.engine.prepare(shapes.condition("a red circle"))
    assert prepared.noise(7).shape == (1, 3, 32, 32)
    torch.testing.assert_close(prepared.noise(7), torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7)))


def test_a_bench_report_says_when_methods_coincide(tmp_path: Path) -> None:
    from tests.bench_helpers import invoke_json

    invoke_json("bench", "shapes", "--prompts", "shapes", "--limit", "1", "--seeds", "0", "--steps", "3",
                "--methods", "strong,extrapolate,first-order", "--out", tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    by_method = {ln["method"]: ln for ln in lines}
    assert by_method["first-order"]["same_as"] == "extrapolate"
    with Image.open(tmp_path / by_method["first-order"]["file"]) as a, \
            Image.open(tmp_path / by_method["extrapolate"]["file"]) as b:
        assert a.tobytes() == b.tobytes()
    assert by_method["first-order"]["nfe"] == by_method["extrapolate"]["nfe"] == 6
    invoke_json("eval", tmp_path)
    report = invoke_json("report", tmp_path, "--no-plots", "--no-html")
    assert any("first-order equals extrapolate" in w for w in report["warnings"])
