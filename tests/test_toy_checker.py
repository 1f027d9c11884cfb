"""The shapes-world checker: near-perfect on rendered ground truth, and it catches wrong captions."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from w2sd_cli.toy.checker import ATTRIBUTES, Request, ShapesChecker, detect, parse_caption, verdict
from w2sd_cli.toy.world import BACKGROUND, caption, make_scene, render, sample_scene


def _accuracy(scenes: list, transform=lambda im: im) -> dict[str, float]:  # type: ignore[no-untyped-def]
    rows = [verdict(transform(render(s)), caption(s)) for s in scenes]
    acc = {a: float(np.mean([r["checks"][a] for r in rows])) for a in ATTRIBUTES}
    acc["all"] = float(np.mean([r["all"] for r in rows]))
    return acc


@pytest.mark.parametrize("split", ["train", "test"])
def test_ground_truth_scores_at_least_098(split: str) -> None:
    acc = _accuracy([sample_scene(s, split) for s in range(400)])
    assert min(acc.values()) >= 0.98, acc


def test_ground_truth_survives_blur_and_upscaling() -> None:
    def soften(image: np.ndarray) -> np.ndarray:
        big = Image.fromarray(image).resize((256, 256), Image.NEAREST)
        blurred = np.asarray(big.resize((16, 16), Image.BILINEAR).resize((256, 256), Image.BILINEAR))
        return (0.5 * blurred + 0.5 * np.asarray(big)).astype(np.uint8)

    acc = _accuracy([sample_scene(s, "test") for s in range(150)], soften)
    assert acc["colour"] >= 0.98 and acc["position"] >= 0.98 and acc["count"] >= 0.9, acc


def test_wrong_captions_are_caught() -> None:
    image = render(make_scene(2, "red", "circle", "left", 3))
    assert verdict(image, "two red circles on the left")["all"]
    wrong = {"colour": "two blue circles on the left", "count": "three red circles on the left",
             "shape": "two red squares on the left", "position": "two red circles on the right"}
    for attribute, prompt in wrong.items():
        v = verdict(image, prompt)
        assert not v["all"] and not v["checks"][attribute]
        assert all(ok for a, ok in v["checks"].items() if a != attribute)


def test_empty_image_fails_everything_and_free_attributes_are_not_scored() -> None:
    blank = np.empty((32, 32, 3), dtype=np.uint8)
    blank[:] = BACKGROUND
    v = verdict(blank, "a green square")
    assert detect(blank) == [] and not v["all"]
    assert set(v["checks"]) == {"count", "colour", "shape"}


def test_parse_caption_reads_synonyms_and_leaves_unknowns_free() -> None:
    assert parse_caption("Two red circles on the left") == Request(2, "red", "circle", "left")
    assert parse_caption("a yellow triangle in the center") == Request(1, "yellow", "triangle", "centre")
    assert parse_caption("squares") == Request(None, None, "square", None)
    assert parse_caption("an red circle") == parse_caption("one red circle") == Request(1, "red", "circle", None)


def test_a_prompt_with_words_the_pair_does_not_know_is_unscorable_not_correct() -> None:
    image = render(make_scene(1, "blue", "square", "top", 0))
    assert verdict(image, "a blue square at the top")["all"]
    v = verdict(image, "a purple hexagon")
    assert v["scorable"] is False and v["unknown"] == ["purple", "hexagon"]
    assert v["checks"] == {} and v["all"] is None and v["seen"]["count"] == 1
    assert verdict(image, "2 blue squares")["unknown"] == ["2"]
    ok = verdict(image, "A blue square, at the top.")
    assert ok["scorable"] is True and ok["unknown"] == [] and ok["all"]


def test_unscorable_items_are_counted_but_left_out_of_accuracy() -> None:
    from w2sd_cli.toy.evaluate import MethodResult, accuracy

    image = render(make_scene(1, "blue", "square", "top", 0))
    prompts = ["a blue square at the top", "a red square at the top", "a purple hexagon", "a blue octagon"]
    result = MethodResult(verdicts=[verdict(image, p) for p in prompts])
    assert accuracy(result, "all") == 0.5 and accuracy(result, "colour") == 0.5 and accuracy(result, "shape") == 1.0
    rows = ShapesChecker().score([image] * 4, prompts)
    assert rows[2] == rows[3] == {"scorable": 0.0}
    assert [r.get("all") for r in rows] == [1.0, 0.0, None, None]
    assert [r["scorable"] for r in rows] == [1.0, 1.0, 0.0, 0.0]


def test_metric_scores_each_image_and_is_registered() -> None:
    scenes = [make_scene(1, "blue", "square", "top", 0), make_scene(3, "green", "triangle", "bottom", 1)]
    images = [Image.fromarray(render(s)).resize((256, 256), Image.NEAREST) for s in scenes]
    rows = ShapesChecker().score(images, [caption(scenes[0]), "two green triangles"])
    assert rows[0] == {"colour": 1.0, "count": 1.0, "shape": 1.0, "position": 1.0, "all": 1.0, "scorable": 1.0}
    assert rows[1] == {"colour": 1.0, "count": 0.0, "shape": 1.0, "all": 0.0, "scorable": 1.0}
    with pytest.raises(ValueError):
        ShapesChecker().score(images, ["one"])
    from w2sd_cli.plugins import build_host

    names = [m.name for _, m in build_host(load_entry_points=False).collect("register_metrics")]
    assert "shapes-checker" in names
