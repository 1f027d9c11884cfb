"""Every knob is checked before anything loads, in `w2sd gen`, `w2sd bench` and the Python API alike."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import w2sd_cli
from w2sd_cli.errors import InputError

MAX_PROMPT_CHARS = 10_000  # w2sd_cli.validate.MAX_PROMPT_CHARS (a literal, so the file also runs on older w2sd)


def cli(*args: Any) -> Any:
    from w2sd_cli.cli import build_app

    return CliRunner().invoke(build_app(), [str(a) for a in args])


def broken_shapes_card(home: Path) -> None:
    """A user card of the shapes kind whose models are missing: loading it fails with a ModelError, so any other
    error proves the check ran before loading."""
    (home / "pairs").mkdir(parents=True, exist_ok=True)
    (home / "pairs" / "broken.yaml").write_text(
        "schema: 1\nname: broken\nkind: toy-unet\ndescription: models missing\n"
        "models:\n  s: {path: /nonexistent/strong}\n  w: {path: /nonexistent/weak}\n"
        "strong: {model: s}\nweak: {model: w}\n", encoding="utf-8")


@pytest.fixture(scope="module")
def shapes() -> w2sd_cli.Pair:
    return w2sd_cli.load_pair("shapes")


@pytest.fixture(scope="module")
def gmm() -> w2sd_cli.Pair:
    return w2sd_cli.load_pair("gmm-1d")


def test_the_broken_card_fails_at_load(isolated_home: Path, tmp_path: Path) -> None:
    broken_shapes_card(isolated_home)
    result = cli("gen", "a red circle", "--pair", "broken", "--steps", "2", "--out", tmp_path)
    assert result.exit_code == 1 and "no model at" in result.output


@pytest.mark.parametrize(("args", "text"), [
    (["--cfg", "inf"], "--cfg inf: give a finite number"),
    (["--cfg", "nan"], "--cfg nan: give a finite number"),
    (["--k", "nan"], "--k nan: give a finite number"),
    (["--k", "1e300"], "--k 1e+300: give a finite number from -100 to 100"),
    (["--steps", "4", "--lambda", "9"], "--lambda 9 exceeds --steps 4"),
    (["--width", "64"], "does not use --width"),
    (["--class", "3"], "does not use --class"),
    (["--negative-prompt", "blur"], "does not use --negative-prompt"),
    (["--strong-prompt", "more"], "does not use --strong-prompt"),
    (["--device", "cuda"], "does not use --device"),
    (["--dtype", "float8"], "--dtype 'float8': use float32, float16, bfloat16"),
    (["--methods", "strong,nope"], "Unknown method 'nope'"),
])
def test_gen_refuses_bad_knobs_before_loading(args: list[str], text: str, isolated_home: Path,
                                              tmp_path: Path) -> None:
    broken_shapes_card(isolated_home)
    result = cli("gen", "a red circle", "--pair", "broken", "--out", tmp_path, *args)
    assert result.exit_code == 1, result.output
    assert text in " ".join(result.output.split()) and "no model at" not in result.output
    assert not list(tmp_path.iterdir())


def test_an_empty_or_over_long_prompt_is_refused_before_loading(isolated_home: Path, tmp_path: Path) -> None:
    broken_shapes_card(isolated_home)
    empty = cli("gen", "", "--pair", "broken", "--out", tmp_path)
    assert empty.exit_code == 1 and "give a prompt" in empty.output
    long = cli("gen", "a" * (MAX_PROMPT_CHARS + 1), "--pair", "broken", "--out", tmp_path)
    assert long.exit_code == 1 and "at most 10,000" in " ".join(long.output.split())


def test_unused_options_are_refused_naming_what_the_pair_takes(tmp_path: Path) -> None:
    result = cli("gen", "--pair", "gmm-1d", "--cfg", "3", "--out", tmp_path)
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "does not use --cfg" in text and "--samples" in text
    assert "does not use --device" in " ".join(cli("gen", "--pair", "gmm-1d", "--device", "cuda").output.split())
    prompt = cli("gen", "a cat", "--pair", "gmm-1d", "--out", tmp_path)
    assert prompt.exit_code == 1 and "takes no prompt" in prompt.output
    assert not list(tmp_path.iterdir())
    with pytest.raises(InputError, match="does not use --device"):
        w2sd_cli.load_pair("gmm-1d", device="cuda")
    with pytest.raises(InputError, match="float8"):
        w2sd_cli.load_pair("gmm-1d", dtype="float8")


def test_bench_refuses_unused_and_non_finite_knobs_before_planning(tmp_path: Path) -> None:
    for args, text in ((["--width", "64"], "does not use --width"), (["--k", "nan"], "--k nan"),
                       (["--cfg", "inf"], "--cfg inf"), (["--dtype", "float8"], "float8")):
        result = cli("bench", "shapes", "--prompts", "shapes", "--out", tmp_path / "run", *args)
        assert result.exit_code == 1 and text in " ".join(result.output.split()), (args, result.output)
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("knobs", "text"), [
    ({"seeds": [-1]}, "seed -1"),
    ({"seeds": [0.5]}, "seed 0.5"),
    ({"seeds": []}, "seeds is empty"),
    ({"batch_size": 0}, "--batch-size 0"),
    ({"steps": "10"}, "--steps '10'"),
    ({"steps": True}, "--steps True"),
    ({"k": math.nan}, "--k nan"),
    ({"cfg": math.inf}, "--cfg inf"),
    ({"cfg": -1.0}, "--cfg -1"),
    ({"lam": 30, "steps": 4}, "--lambda 30 exceeds --steps 4"),
    ({"rounds": 0}, "--rounds 0"),
    ({"width": 64}, "does not use --width"),
    ({"class_label": 2}, "does not use --class"),
    ({"method": "nope"}, "Unknown method 'nope'"),
])
def test_the_api_raises_input_errors_not_torch_ones(shapes: w2sd_cli.Pair, knobs: dict[str, Any],
                                                    text: str) -> None:
    with pytest.raises(InputError) as caught:
        shapes.generate("a red circle", **{"steps": 2, **knobs})
    assert text in str(caught.value)


def test_the_api_bounds_prompts(shapes: w2sd_cli.Pair) -> None:
    with pytest.raises(InputError, match="10,000"):
        shapes.generate("a" * (MAX_PROMPT_CHARS + 1), steps=2)
    with pytest.raises(InputError, match="give a prompt"):
        shapes.generate("  ", steps=2)
    with pytest.raises(InputError, match="give text"):
        shapes.generate(42, steps=2)  # type: ignore[arg-type]


def test_a_long_prompt_is_stored_once_and_the_cut_is_warned(shapes: w2sd_cli.Pair, tmp_path: Path) -> None:
    from w2sd_cli.images import RECIPE_KEY

    prompt = "two red circles on the left " * 300  # 8,400 characters: accepted, far beyond 10 tokens
    [sample] = shapes.generate(prompt, seeds=[0], steps=2)
    assert any("reads only 10" in w and "cut" in w for w in sample.warnings)
    path = sample.save(tmp_path / "long.png")
    from PIL import Image

    with Image.open(path) as image:
        blob = image.text[RECIPE_KEY]
    assert blob.count(prompt.strip()) == 1 and json.loads(blob)["prompt"] == prompt
    assert path.stat().st_size < 4 * len(prompt) + 20_000


def test_the_shapes_tokenizer_warns_only_when_it_cuts(shapes: w2sd_cli.Pair) -> None:
    [short] = shapes.generate("two red circles on the left", seeds=[0], steps=2)
    assert not any("tokens" in w for w in short.warnings)


def test_sample_save_picks_the_format_by_suffix(shapes: w2sd_cli.Pair, gmm: w2sd_cli.Pair, tmp_path: Path) -> None:
    [image] = shapes.generate("a red circle", seeds=[0], steps=2)
    assert image.save(tmp_path / "x.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert json.loads((tmp_path / "x.jpg.json").read_text())["method"] == "w2sd"
    assert image.save(tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match=r"saved as \.png, \.jpg"):
        image.save(tmp_path / "x.npy")
    [samples] = gmm.generate(seeds=[0], samples=50, steps=3)
    with pytest.raises(InputError, match=r"sample set is saved as \.npy, \.npz"):
        samples.save(tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()
    from w2sd_cli.outputs import load_output

    np.testing.assert_array_equal(load_output(samples.save(tmp_path / "s.npz")), samples.samples)
    np.testing.assert_array_equal(load_output(samples.save(tmp_path / "s.npy")), samples.samples)
