"""What `w2sd gen` writes and prints, initial noise in the API, and pairs reached as plugin:name."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import w2sd_cli
from w2sd_cli.errors import InputError
from w2sd_cli.hookspecs import hookimpl
from w2sd_cli.images import read_recipe


def cli(*args: Any) -> Any:
    from w2sd_cli.cli import build_app

    return CliRunner().invoke(build_app(), [str(a) for a in args])


def test_every_method_names_its_file_and_no_other_methods_file_is_replaced(tmp_path: Path) -> None:
    assert cli("gen", "a red circle", "--steps", "2", "--out", tmp_path).exit_code == 0
    [w2sd] = list(tmp_path.iterdir())
    before = w2sd.read_bytes()
    made = cli("gen", "a red circle", "--steps", "2", "--methods", "strong", "--out", tmp_path)
    assert made.exit_code == 0, made.output
    strong = tmp_path / w2sd.name.replace(".png", "-strong.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([w2sd.name, strong.name])
    assert w2sd.read_bytes() == before and read_recipe(w2sd)["method"] == "w2sd"
    assert read_recipe(strong)["method"] == "strong"
    assert cli("gen", "a red circle", "--steps", "2", "--methods", "weak,strong", "--out", tmp_path).exit_code == 0
    assert w2sd.read_bytes() == before and read_recipe(strong)["method"] == "strong"


def test_a_named_png_of_another_method_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    assert cli("gen", "a red circle", "--steps", "2", "--out", out).exit_code == 0
    before = out.read_bytes()
    refused = cli("gen", "a red circle", "--steps", "2", "--methods", "strong", "--out", out)
    assert refused.exit_code == 1 and "holds the w2sd output" in " ".join(refused.output.split())
    assert out.read_bytes() == before
    assert cli("gen", "a red circle", "--steps", "3", "--out", out).exit_code == 0  # same method: replaced


def test_json_gives_full_precision(tmp_path: Path) -> None:
    result = cli("gen", "--pair", "gmm-1d", "--samples", "300", "--steps", "5", "--out", tmp_path, "--json")
    summary = json.loads(result.stdout)
    full = next(i for i in summary["images"] if i["method"] == "w2sd")["verdicts"]["mixture-stats"]
    shown = summary["methods"]["w2sd"]
    assert {k: shown[k] for k in full} == full
    assert any(round(v, 4) != v for v in full.values())  # something to lose by rounding


@pytest.fixture(scope="module")
def shapes() -> w2sd_cli.Pair:
    return w2sd_cli.load_pair("shapes")


def test_generate_takes_initial_noise(shapes: w2sd_cli.Pair) -> None:
    import torch

    start = shapes.noise(3, "a red circle")
    [own] = shapes.generate("a red circle", seeds=[3], steps=3)
    [given] = shapes.generate("a red circle", seeds=[3], steps=3, noise=[start.clone()])
    assert given.image.tobytes() == own.image.tobytes()
    assert given.recipe["initial_noise"]["shape"] == list(start.shape)
    [other] = shapes.generate("a red circle", seeds=[3], steps=3, noise=[torch.zeros_like(start)])
    assert other.image.tobytes() != own.image.tobytes()
    with pytest.raises(InputError, match="one initial latent per seed"):
        shapes.generate("a red circle", seeds=[0, 1], steps=3, noise=[start])
    with pytest.raises(InputError, match="shape"):
        shapes.generate("a red circle", seeds=[0], steps=3, noise=[start[:, :1]])
    with pytest.raises(InputError, match="NaN"):
        shapes.generate("a red circle", seeds=[0], steps=3, noise=[start * float("nan")])


class ClashPlugin:
    """A card named like the built-in gmm-1d (reachable only as test-plugin:gmm-1d) and a method whose
    ``same_as`` reads the settings."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl
    def register_pairs(self, register: Callable[[Any], None]) -> None:
        register({"schema": 1, "name": "gmm-1d", "kind": "analytic", "description": "A plugin's gmm-1d.",
                  "strong": {"mixture": {"weights": [0.2, 0.8], "means": [[-4.0], [4.0]], "stds": 0.8}},
                  "weak": {"mixture": {"weights": [0.1, 0.9], "means": [[-4.0], [4.0]], "stds": 0.8}},
                  "defaults": {"steps": 4, "samples": 100},
                  "options": {"ideal": {"weights": [0.5, 0.5], "means": [[-4.0], [4.0]], "stds": 0.8}}})

    @hookimpl
    def register_methods(self, register: Callable[[Any], None]) -> None:
        from w2sd_cli.plugin import Method, Plan, plain

        def plan(prepared: Any, settings: Any) -> Plan:
            self.seen.append(settings)
            if settings.k == 0:  # then it is the strong baseline
                return plain(prepared.identity("final"), prepared.grid)
            return Plan("strong-at-k0", (prepared.identity("final"),), tuple(prepared.grid), (settings.k,))

        register(Method("strong-at-k0", "strong, when k is 0", lambda p, x, s, cb: plain_run(p, x, s, cb), plan))


@pytest.fixture
def clash() -> Iterator[ClashPlugin]:
    from w2sd_cli.testing import installed_plugin

    plugin = ClashPlugin()
    with installed_plugin(plugin):
        yield plugin


def test_from_image_remakes_a_pair_reached_as_plugin_name(clash: ClashPlugin, tmp_path: Path) -> None:
    from w2sd_cli.pairs import get_registry

    mine = get_registry().get("test-plugin:gmm-1d").card
    assert get_registry().get("gmm-1d").card.digest() != mine.digest()
    made = cli("gen", "--pair", "test-plugin:gmm-1d", "--methods", "strong", "--out", tmp_path / "a")
    assert made.exit_code == 0, made.output
    [panel] = list((tmp_path / "a").glob("*.png"))
    assert read_recipe(panel)["card_digest"] == mine.digest()
    again = cli("gen", "--from-image", panel, "--out", tmp_path / "b")
    assert again.exit_code == 0 and "has changed" not in again.output, again.output
    [remade] = list((tmp_path / "b").glob("*.png"))
    assert read_recipe(remade)["card_digest"] == mine.digest()


def plain_run(p: Any, x: Any, s: Any, cb: Any) -> Any:
    from w2sd_cli.methods import BUILTIN

    return BUILTIN["strong"].run(p, x, s, cb)


def test_a_methods_plan_gets_the_settings(clash: ClashPlugin) -> None:
    pair = w2sd_cli.load_pair("gmm-2d")
    [strong] = pair.generate(seeds=[0], method="strong", k=0.0, samples=100, steps=4)
    [copied] = pair.generate(seeds=[0], method="strong-at-k0", k=0.0, samples=100, steps=4)
    assert copied.same_as == "strong" and (copied.samples == strong.samples).all()
    [own] = pair.generate(seeds=[0], method="strong-at-k0", k=1.0, samples=100, steps=4)
    assert own.same_as is None
    assert [s.k for s in clash.seen] == [0.0, 1.0]
