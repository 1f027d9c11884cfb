"""PNG outputs: recipes round-trip, saves are atomic, panels are laid out left to right."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from w2sd_cli.errors import InputError
from w2sd_cli.images import image_name, panel, read_recipe, save_png, to_image, versions


def test_recipe_round_trips(tmp_path: Path) -> None:
    recipe = {"prompt": "a fox — ünïcode", "seed": 7, "knobs": {"steps": 4, "lam": 3}, "nfe": 10}
    path = save_png(Image.new("RGB", (8, 6), "red"), tmp_path / "sub" / "a.png", recipe)
    got = read_recipe(path)
    assert got["prompt"] == recipe["prompt"] and got["knobs"] == {"steps": 4, "lam": 3}
    assert got["recipe_version"] == 1
    with Image.open(path) as im:
        assert im.size == (8, 6) and im.text["Description"] == recipe["prompt"]


def test_save_leaves_no_partial_file_when_interrupted(tmp_path: Path) -> None:
    class Boom(Image.Image):
        def save(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
            raise KeyboardInterrupt

    target = tmp_path / "x.png"
    with pytest.raises(KeyboardInterrupt):
        save_png(Boom(), target, {"seed": 1})
    assert list(tmp_path.iterdir()) == []


def test_read_recipe_errors_are_clear(tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    with pytest.raises(InputError, match="no w2sd recipe"):
        read_recipe(plain)
    with pytest.raises(InputError, match="no such image"):
        read_recipe(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(InputError, match="not a readable image"):
        read_recipe(tmp_path / "text.png")


def test_to_image_maps_range_and_panel_layout() -> None:
    pixels = torch.stack([torch.full((4, 5), -1.0), torch.zeros(4, 5), torch.ones(4, 5)])
    im = to_image(pixels)
    assert im.size == (5, 4) and im.getpixel((0, 0)) == (0, 128, 255)
    grid = panel([("weak", im), ("strong", im), ("W2SD", im)], gap=2)
    assert grid.width == 3 * 5 + 2 * 2 and grid.height > 4
    assert grid.getpixel((6, grid.height - 1)) == (255, 255, 255)  # the gap stays white
    assert grid.getpixel((7, grid.height - 1)) == (0, 128, 255)


def test_names_and_versions() -> None:
    assert image_name("hd-lora", 3, "w2sd") == "hd-lora-s3-w2sd.png"
    assert image_name("p", 0, "compare", 2) == "p-s0-compare-2.png"
    assert {"w2sd", "diffusers", "torch"} <= set(versions())


