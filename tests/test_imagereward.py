"""ImageReward scored by w2sd on transformers' BLIP classes: a random checkpoint in THUDM's layout, pinned to
the reference `image-reward` 1.5 package's scores for the same files (benchmarks/imagereward_parity.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.imagereward_fixture import PROMPTS, TINY, images, random_checkpoint, write_checkpoint
from w2sd_cli.bench.metrics.base import MetricLoad, get_metric
from w2sd_cli.errors import ModelError

# image-reward 1.5 (transformers 4.30.2, timm 0.6.13, torch 2.13 CPU, float32) on TINY, seed 0:
# `benchmarks/imagereward_parity.py reference --size tiny`. w2sd's own scores differed by at most 4.8e-7.
REFERENCE = [-2.1290106773376465, -2.4664485454559326, -2.3442764282226562]


def write_card(home: Path, files: dict[str, Path], **options: Any) -> None:
    folder = home / "metrics"
    folder.mkdir(exist_ok=True)
    card = {"schema": 1, "name": "imagereward", "description": "test", "options": options,
            "models": {key: {"path": str(path)} for key, path in files.items()}}
    (folder / "imagereward.yaml").write_text(json.dumps(card))


@pytest.fixture
def checkpoint(tmp_path: Path, isolated_home: Path) -> dict[str, Path]:
    files = write_checkpoint(tmp_path / "ir", TINY, seed=0)
    write_card(isolated_home, files)
    return files


def test_imagereward_scores_match_the_reference_package(checkpoint: dict[str, Path]) -> None:
    metric = get_metric("imagereward")
    metric.load(MetricLoad(device="cpu", allow_pickle=True))
    rows = metric.score(images(3), PROMPTS)
    assert [r["score"] for r in rows] == pytest.approx(REFERENCE, abs=1e-5)
    one_by_one = [metric.score([im], [p])[0]["score"] for im, p in zip(images(3), PROMPTS, strict=True)]
    assert one_by_one == pytest.approx(REFERENCE, abs=1e-5)
    swapped = metric.score(images(3), PROMPTS[::-1])
    assert abs(swapped[0]["score"] - REFERENCE[0]) > 1e-3, "the prompt must reach the score (cross-attention)"


def test_the_pickle_needs_allow_pickle_and_a_safetensors_copy_does_not(checkpoint: dict[str, Path],
                                                                    isolated_home: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    with pytest.raises(ModelError, match="--allow-pickle"):
        get_metric("imagereward").load(MetricLoad(device="cpu"))
    state = random_checkpoint(TINY, seed=0)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "ImageReward.safetensors")
    write_card(isolated_home, checkpoint | {"weights": tmp_path / "ImageReward.safetensors"})
    metric = get_metric("imagereward")
    metric.load(MetricLoad(device="cpu"))
    assert metric.score(images(1), PROMPTS[:1])[0]["score"] == pytest.approx(REFERENCE[0], abs=1e-5)


class Payload:
    """Not a tensor: torch.load(weights_only=True) must refuse to rebuild it."""


def test_a_checkpoint_with_objects_in_it_is_refused_even_with_allow_pickle(checkpoint: dict[str, Path]) -> None:
    state: dict[str, Any] = dict(random_checkpoint(TINY, seed=0))
    state["extra"] = Payload()
    torch.save(state, checkpoint["weights"])
    with pytest.raises(ModelError, match="plain weights"):
        get_metric("imagereward").load(MetricLoad(device="cpu", allow_pickle=True))


def test_a_foreign_checkpoint_is_named_as_such(checkpoint: dict[str, Path]) -> None:
    from w2sd_cli.bench.metrics.imagereward import convert

    state = random_checkpoint(TINY, seed=0)
    with pytest.raises(ModelError, match=r"unexpected tensors \['visual.proj'\].*missing \['mlp.layers.7.weight'"):
        convert({k: v for k, v in state.items() if not k.startswith("mlp.layers.7")}
                | {"visual.proj": state["mlp.layers.0.bias"]})
    state["blip.text_encoder.encoder.layer.0.attention.self.query.weight"] = torch.zeros(3, 3)
    torch.save(state, checkpoint["weights"])
    with pytest.raises(ModelError, match="BERT tensors do not fit"):
        get_metric("imagereward").load(MetricLoad(device="cpu", allow_pickle=True))


def test_preprocessing_resizes_the_short_side_then_crops_the_centre() -> None:
    import numpy as np
    from PIL import Image

    from w2sd_cli.bench.metrics.imagereward import PIXEL_MEAN, PIXEL_STD, preprocess

    wide = np.zeros((224, 448, 3), dtype=np.uint8)
    wide[:, 112:336] = 255  # only the centre half is white: the crop keeps exactly that
    pixels = preprocess(Image.fromarray(wide))
    assert pixels.shape == (3, 224, 224)
    white = (1 - torch.tensor(PIXEL_MEAN)) / torch.tensor(PIXEL_STD)
    assert torch.allclose(pixels, white[:, None, None].expand(3, 224, 224), atol=1e-6)
    assert preprocess(Image.fromarray(wide).convert("RGBA")).shape == (3, 224, 224)
