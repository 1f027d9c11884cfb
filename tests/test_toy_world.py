"""Shapes world: scenes are a pure function of their seed, and held-out compositions stay out of training."""

from __future__ import annotations

import numpy as np
import pytest

from w2sd_cli.toy.world import (
    BACKGROUND,
    COLOURS,
    HELD_OUT,
    POSITIONS,
    SHAPES,
    SIZE,
    caption,
    compositions,
    make_scene,
    render,
    sample_scene,
    training_caption,
    unknown_words,
    vocabulary,
)


def test_same_seed_same_scene_and_pixels() -> None:
    for seed in range(20):
        a, b = sample_scene(seed), sample_scene(seed)
        assert a == b
        assert np.array_equal(render(a), render(b))
    assert len({caption(sample_scene(s)) for s in range(50)}) > 10


def test_train_split_never_shows_held_out_compositions() -> None:
    train = {sample_scene(s, "train").composition for s in range(3000)}
    test = {sample_scene(s, "test").composition for s in range(600)}
    assert train.isdisjoint(HELD_OUT)
    assert test == set(HELD_OUT)
    assert len(train) == len(COLOURS) * len(SHAPES) * len(POSITIONS) - len(HELD_OUT)


def test_every_position_is_held_out_for_some_pair_and_every_pair_keeps_four_positions() -> None:
    assert {p for _, _, p in HELD_OUT} == set(POSITIONS)
    assert len(HELD_OUT) == len(COLOURS) * len(SHAPES)
    assert len(compositions("test")) == len(HELD_OUT)
    with pytest.raises(ValueError):
        compositions("validation")


@pytest.mark.parametrize("count", [1, 2, 3])
def test_shapes_fit_in_the_frame_and_do_not_touch(count: int) -> None:
    for seed in range(200):
        scene = make_scene(count, "red", "square", POSITIONS[seed % 5], seed)
        assert len(scene.placements) == count
        boxes = [(p.x, p.y, p.x + p.size, p.y + p.size) for p in scene.placements]
        assert all(min(x0, y0) >= 0 and max(x1, y1) <= SIZE for x0, y0, x1, y1 in boxes)
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                apart = a[2] + 2 <= b[0] or b[2] + 2 <= a[0] or a[3] + 2 <= b[1] or b[3] + 2 <= a[1]
                assert apart, (a, b)
        pixels = render(scene).reshape(-1, 3)
        coloured = (pixels == COLOURS["red"]).all(axis=1).sum()
        assert coloured == sum(p.size**2 for p in scene.placements)
        assert ((pixels == BACKGROUND).all(axis=1) | (pixels == COLOURS["red"]).all(axis=1)).all()


def test_captions_name_every_attribute_and_can_leave_some_out() -> None:
    scene = make_scene(2, "red", "circle", "left", 0)
    assert caption(scene) == "two red circles on the left"
    assert caption(scene, with_position=False) == "two red circles"
    import random

    rng = random.Random(0)
    kinds = {training_caption(scene, rng) for _ in range(300)}
    assert kinds == {"", "two red circles", "two circles on the left", "two red circles on the left"}


def test_a_single_shape_is_captioned_a_as_users_type_it_and_one_in_part_of_training() -> None:
    scene = make_scene(1, "blue", "triangle", "centre", 0)
    assert caption(scene) == "a blue triangle in the centre"
    assert caption(scene, article=False) == "one blue triangle in the centre"
    assert caption(scene, with_colour=False) == "a triangle in the centre"
    import random

    rng = random.Random(1)
    full = [c for c in (training_caption(scene, rng) for _ in range(2000)) if c.endswith("blue triangle in the centre")]
    share_a = sum(c.startswith("a ") for c in full) / len(full)
    assert {c.split()[0] for c in full} == {"a", "one"} and 0.4 < share_a < 0.6


def test_training_batches_say_a_and_one_and_only_words_the_tokenizer_knows() -> None:
    from w2sd_cli.toy.train import batch

    captions = [c for step in range(20) for c in batch(step, 32, 0)[1]]
    first = {c.split()[0] for c in captions if c}
    assert {"a", "one", "two", "three"} <= first
    assert all(unknown_words(c) == [] for c in captions)
    assert {"a", "an", "one"} <= set(vocabulary())


def test_unknown_words_names_what_the_pair_cannot_read() -> None:
    assert unknown_words("a purple hexagon on the left") == ["purple", "hexagon"]
    assert unknown_words("A blue square, at the TOP.") == []
    assert unknown_words("two red circles in the center") == []
    assert unknown_words("2 red circles and 2 red circles") == ["2", "and"]


def test_tokenizer_is_built_locally_and_reads_synonyms() -> None:
    from w2sd_cli.toy.components import MAX_TOKENS, build_tokenizer

    tok = build_tokenizer()
    ids = tok("Two red circles in the CENTER", padding="max_length", max_length=MAX_TOKENS).input_ids
    assert len(ids) == MAX_TOKENS
    assert tok.convert_ids_to_tokens(ids[:8]) == ["<bos>", "two", "red", "circles", "in", "the", "centre", "<eos>"]
    assert tok.convert_ids_to_tokens(tok("a purple blob").input_ids) == ["<bos>", "a", "<unk>", "<unk>", "<eos>"]
    assert tok.convert_ids_to_tokens(tok("A blue square, at the top.").input_ids) == [
        "<bos>", "a", "blue", "square", "at", "the", "top", "<eos>"]
