"""Reward-metric parity with the reference scoring code, on tiny random-weight models built here (issue 15
item 11): HPSv2's pad-not-crop preprocessing and text cleaning, a float32 logit scale under bfloat16, the
aesthetic head's ReLU variant, and ImageReward's card (its scoring: tests/test_imagereward.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_bench_images import tiny_clip, to_open_clip, write_metric_card
from w2sd_cli.bench.metrics.base import MetricLoad, get_metric


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("parity")
    model = tiny_clip(root / "clip", seed=4)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100))
    model.save_pretrained(root / "clip")
    state = to_open_clip({k: v for k, v in model.state_dict().items() if "position_ids" not in k})
    save_file({k: v.contiguous() for k, v in state.items()}, root / "hps.safetensors")
    return {"clip": root / "clip", "hps": root / "hps.safetensors"}


def _reference_hps(folder: Path, image: Image.Image, prompt: str) -> float:
    """HPSv2's scoring written out: longest side to 32 (bicubic), centred black padding, CLIP mean/std."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPImageProcessor.from_pretrained(folder)
    w, h = image.size
    new_w, new_h = round(w * 32 / max(w, h)), round(h * 32 / max(w, h))
    small = np.asarray(image.convert("RGB").resize((new_w, new_h), Image.Resampling.BICUBIC), dtype=np.float32)
    canvas = np.zeros((32, 32, 3), dtype=np.float32)
    top, left = (32 - new_h) // 2, (32 - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = small
    x = (canvas / 255 - np.array(processor.image_mean)) / np.array(processor.image_std)
    pixels = torch.tensor(x, dtype=torch.float32).permute(2, 0, 1)[None]
    tokens = AutoTokenizer.from_pretrained(folder)([prompt], padding="max_length", max_length=16,
                                                  truncation=True, return_tensors="pt")
    with torch.no_grad():
        image_out = model.get_image_features(pixel_values=pixels)
        text_out = model.get_text_features(**tokens)
    a = torch.nn.functional.normalize(getattr(image_out, "pooler_output", image_out), dim=-1)
    b = torch.nn.functional.normalize(getattr(text_out, "pooler_output", text_out), dim=-1)
    return float(100 * (a * b).sum())


def test_hpsv2_pads_a_non_square_image_and_cleans_its_prompt(clip_files: dict[str, Path],
                                                             isolated_home: Path) -> None:
    from w2sd_cli.bench.metrics.reward import clean_text

    write_metric_card(isolated_home, "hpsv2", {"weights": {"path": str(clip_files["hps"])},
                                               "processor": {"path": str(clip_files["clip"])}})
    hps = get_metric("hpsv2")
    hps.load(MetricLoad(device="cpu"))
    rng = np.random.default_rng(0)
    wide = Image.fromarray(rng.integers(0, 256, (40, 96, 3), dtype=np.uint8))
    (row,) = hps.score([wide], ["a fox"])
    assert row["score"] == pytest.approx(_reference_hps(clip_files["clip"], wide, "a fox"), abs=1e-3)
    assert clean_text("  Salt &amp;amp; PEPPER\n\tshaker ") == "salt & pepper shaker"
    messy, clean = hps.score([wide, wide], ["A  Fox &amp; a Hen", "a fox & a hen"])
    assert messy["score"] == pytest.approx(clean["score"], abs=1e-5)
    assert clean["score"] == pytest.approx(_reference_hps(clip_files["clip"], wide, "a fox & a hen"), abs=1e-3)


def test_bfloat16_keeps_the_logit_scale_in_float32(clip_files: dict[str, Path], isolated_home: Path) -> None:
    write_metric_card(isolated_home, "pickscore", {"model": {"path": str(clip_files["clip"])},
                                                   "processor": {"path": str(clip_files["clip"])}})
    pick = get_metric("pickscore")
    pick.load(MetricLoad(device="cpu", dtype="bfloat16"))
    model = pick.clip().model
    assert model.logit_scale.dtype == torch.float32 and model.vision_model.dtype == torch.bfloat16
    assert float(model.logit_scale.exp()) == pytest.approx(100, rel=1e-6)
    image = Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8))
    (row,), vectors = pick.score_and_embed([image], ["a fox"])
    text = pick.clip().text_embeds(["a fox"]).cpu().numpy()
    assert row["score"] == pytest.approx(100 * float((vectors * text).sum()), rel=1e-4)


def test_the_aesthetic_relu_variant_has_a_relu_after_every_hidden_layer(clip_files: dict[str, Path],
                                                                        isolated_home: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(5)
    sizes = [16, 12, 10, 8, 6, 1]
    head = {}
    for n, index in enumerate((0, 3, 6, 9, 11)):  # nn.Sequential of the reference: Linear, ReLU, Dropout, ...
        head[f"layers.{index}.weight"] = torch.randn(sizes[n + 1], sizes[n])
        head[f"layers.{index}.bias"] = torch.randn(sizes[n + 1])
    save_file(head, tmp_path / "head.safetensors")
    write_metric_card(isolated_home, "aesthetic", {"model": {"path": str(clip_files["clip"])},
                                                   "processor": {"path": str(clip_files["clip"])},
                                                   "head": {"path": str(tmp_path / "head.safetensors")}},
                      activation="relu")
    metric = get_metric("aesthetic")
    metric.load(MetricLoad(device="cpu"))
    images = [Image.fromarray(np.random.default_rng(s).integers(0, 256, (32, 32, 3), dtype=np.uint8))
              for s in range(6)]
    rows, vectors = metric.score_and_embed(images, [""] * 6)
    reference = torch.nn.Sequential(
        torch.nn.Linear(16, 12), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(12, 10), torch.nn.ReLU(),
        torch.nn.Dropout(0.2), torch.nn.Linear(10, 8), torch.nn.ReLU(), torch.nn.Dropout(0.1),
        torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 1)).eval()
    reference.load_state_dict({k.removeprefix("layers."): v for k, v in head.items()})
    with torch.no_grad():
        expected = reference(torch.tensor(vectors))[:, 0].tolist()
        no_last_relu = torch.tensor(vectors)
        for n, index in enumerate((0, 3, 6, 9, 11)):
            no_last_relu = no_last_relu @ head[f"layers.{index}.weight"].T + head[f"layers.{index}.bias"]
            no_last_relu = torch.relu(no_last_relu) if n < 3 else no_last_relu
    assert [r["score"] for r in rows] == pytest.approx(expected, rel=1e-5)
    assert not np.allclose(expected, no_last_relu[:, 0].tolist()), "the test weights must tell the variants apart"


def test_the_imagereward_card_lists_the_bert_tokenizer_blip_loads() -> None:
    from w2sd_cli.bench.metrics.reward import metric_card

    models = metric_card("imagereward").models
    assert {"weights", "med_config", "tokenizer"} <= set(models)
    assert models["tokenizer"].repo_id == "bert-base-uncased"
