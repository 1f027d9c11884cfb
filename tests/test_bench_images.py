"""Bench → eval → report on a tiny SD pair, reward metrics on tiny stand-in CLIP models, and the HTML page
rendered by headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.bench_helpers import invoke, invoke_json, prompt_file
from tests.conftest import fresh_plugins
from tests.image_helpers import save_lora, save_sd, sd_unet, tokenizer, write_card
from w2sd_cli.bench.metrics.base import MetricLoad, get_metric
from w2sd_cli.bench.metrics.reward import _load_clip
from w2sd_cli.errors import ModelError

PROMPTS = ["a red fox", "a blue car", "a green tree"]


def tiny_clip(folder: Path, seed: int = 0) -> Any:
    """A tiny CLIPModel with its tokenizer and image processor saved in ``folder``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    text = {"vocab_size": 62, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 1, "hidden_act": "gelu"}
    vision = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
              "num_attention_heads": 4, "hidden_act": "gelu"}
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    model.save_pretrained(folder)
    tokenizer(folder / "tok").save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return model


def to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse renaming (transformers → open_clip), written independently for the round trip."""
    out: dict[str, torch.Tensor] = {}
    tops = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
            "text_model.embeddings.position_embedding.weight": "positional_embedding",
            "text_model.final_layer_norm.weight": "ln_final.weight",
            "text_model.final_layer_norm.bias": "ln_final.bias",
            "logit_scale": "logit_scale", "vision_model.embeddings.class_embedding": "visual.class_embedding",
            "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
            "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
            "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
            "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
            "vision_model.post_layernorm.weight": "visual.ln_post.weight",
            "vision_model.post_layernorm.bias": "visual.ln_post.bias"}
    for key, value in state.items():
        if key in tops:
            out[tops[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.T.contiguous()
        elif ".encoder.layers." in key and ".self_attn.q_proj." in key:
            tower = "visual.transformer" if key.startswith("vision") else "transformer"
            layer = key.split(".encoder.layers.")[1].split(".")[0]
            kind = key.rsplit(".", 1)[1]
            qkv = [state[key.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            out[f"{tower}.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(qkv)
        elif (".encoder.layers." in key and "_proj." not in key) or ".out_proj." in key:
            tower = "visual.transformer" if key.startswith("vision") else "transformer"
            layer, rest = key.split(".encoder.layers.")[1].split(".", 1)
            for new, old in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"),
                             ("mlp.c_proj", "mlp.fc2"), ("attn.out_proj", "self_attn.out_proj")):
                rest = rest.replace(old, new)
            out[f"{tower}.resblocks.{layer}.{rest}"] = value
    out["attn_mask"] = torch.zeros(16, 16)
    return out


def write_metric_card(home: Path, name: str, models: dict[str, Any], **options: Any) -> None:
    folder = home / "metrics"
    folder.mkdir(parents=True, exist_ok=True)
    card = {"schema": 1, "name": name, "description": f"tiny stand-in {name}", "models": models, "options": options}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(card))


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny CLIP folders and heads: the metrics' real loading code runs on them."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("metric-models")
    clip = tiny_clip(root / "clip")
    state = to_open_clip({k: v for k, v in clip.state_dict().items() if "position_ids" not in k})
    torch.save({"state_dict": state}, root / "hps.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, root / "hps.safetensors")
    torch.manual_seed(3)
    head = {"layers.0.weight": torch.randn(8, 16), "layers.0.bias": torch.randn(8),
            "layers.2.weight": torch.randn(4, 8), "layers.2.bias": torch.randn(4),
            "layers.4.weight": torch.randn(1, 4), "layers.4.bias": torch.randn(1)}
    torch.save(head, root / "head.pth")
    save_file(head, root / "head.safetensors")
    return {"clip": root / "clip", "hps_pt": root / "hps.pt", "hps_st": root / "hps.safetensors",
            "head_pth": root / "head.pth", "head_st": root / "head.safetensors"}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A finished bench of a tiny SD LoRA pair: 3 prompts × 2 seeds × weak, strong, w2sd."""
    root = tmp_path_factory.mktemp("image-run")
    models = {"sd": save_sd(root / "sd"), "lora": save_lora(root / "lora", sd_unet(0))}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("W2SD_HOME", str(root / "home"))
        fresh_plugins()
        write_card(root / "home", "tiny-lora", {"base": {"path": str(models["sd"])},
                                                "detail": {"path": str(models["lora"]), "format": "lora"}},
                   strong={"lora": "detail", "lora_scale": 0.8}, weak={"lora_scale": -1.5})
        rows = ['"Prompts","Category"', '"a red fox","Animals"', '"a blue car","Colors"', '"a green tree","Colors"']
        prompts = prompt_file(root, rows, "bench.csv")
        invoke("bench", "tiny-lora", "--prompts", str(prompts), "--seeds", "0-1", "--methods", "weak,strong,w2sd",
               "--steps", "3", "--out", str(root / "run"))
        fresh_plugins()
    yield root / "run"


def test_image_bench_writes_pngs_with_recipes_and_a_complete_manifest(image_run: Path) -> None:
    lines = [json.loads(x) for x in (image_run / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 18 and {ln["method"] for ln in lines} == {"weak", "strong", "w2sd"}
    first = lines[0]
    with Image.open(image_run / first["file"]) as image:
        recipe = json.loads(image.text["w2sd"])
        assert image.size == (16, 16)
    assert recipe["id"] == first["id"] and recipe["prompt"] == PROMPTS[0] and recipe["settings"]["steps"] == 3
    same_noise = [ln for ln in lines if ln["prompt_index"] == 0 and ln["seed"] == 0]
    pixels = set()
    for line in same_noise:
        with Image.open(image_run / line["file"]) as image:
            pixels.add(image.tobytes())
    assert len(same_noise) == 3 and len(pixels) == 3, "weak, strong and W2SD differ from the same noise"


def test_image_stats_and_diversity_without_models(image_run: Path) -> None:
    facts = invoke_json("eval", image_run)
    assert facts["scored"] == {"image-stats": 18} and facts["diversity_groups"] == {"image-stats": 9}
    rows = [json.loads(x) for x in (image_run / "scores" / "image-stats.jsonl").read_text().splitlines()]
    assert all(0 <= r["values"]["clipped"] <= 1 and 0 <= r["values"]["saturation"] <= 1 for r in rows)
    stats = get_metric("image-stats")
    grey, vivid = Image.new("RGB", (8, 8), (128, 128, 128)), Image.new("RGB", (8, 8), (255, 0, 0))
    low, high = stats.score([grey, vivid], ["", ""])
    assert low["clipped"] == 0 and high["clipped"] == 1 and high["saturation"] == 1 and low["saturation"] == 0


def test_pickscore_equals_the_clip_forward_pass_and_loads_once(stand_ins: dict[str, Path],
                                                                isolated_home: Path) -> None:
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    write_metric_card(isolated_home, "pickscore", {"model": {"path": str(stand_ins["clip"])},
                                                   "processor": {"path": str(stand_ins["clip"])}})
    metric = get_metric("pickscore")
    metric.load(MetricLoad(device="cpu"))
    images = [Image.fromarray(np.full((40, 48, 3), c, dtype=np.uint8)) for c in (20, 120, 240)]
    prompts = ["a red fox", "a car", "tree"]
    rows, vectors = metric.score_and_embed(images, prompts)
    model = CLIPModel.from_pretrained(stand_ins["clip"]).eval()
    pixels = CLIPImageProcessor.from_pretrained(stand_ins["clip"])(images=images, return_tensors="pt")
    tokens = AutoTokenizer.from_pretrained(stand_ins["clip"])(prompts, padding="max_length", max_length=16,
                                                             return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                       pixel_values=pixels["pixel_values"]).logits_per_image
    assert [r["score"] for r in rows] == pytest.approx(torch.diagonal(logits).tolist(), rel=1e-4)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    before = _load_clip.cache_info().hits
    metric.score(images[:1], prompts[:1])
    assert _load_clip.cache_info().hits > before


def test_hpsv2_from_open_clip_weights_matches_and_pickle_needs_opt_in(stand_ins: dict[str, Path],
                                                                       isolated_home: Path) -> None:
    images = [Image.fromarray(np.full((32, 32, 3), c, dtype=np.uint8)) for c in (30, 200)]
    write_metric_card(isolated_home, "pickscore", {"model": {"path": str(stand_ins["clip"])},
                                                   "processor": {"path": str(stand_ins["clip"])}})
    pick = get_metric("pickscore")
    pick.load(MetricLoad(device="cpu"))
    scale = float(pick.clip().model.logit_scale.detach().exp())
    expected = [100 * r["score"] / scale for r in pick.score(images, ["a fox", "a car"])]
    hps = get_metric("hpsv2")
    write_metric_card(isolated_home, "hpsv2", {"weights": {"path": str(stand_ins["hps_pt"])},
                                               "processor": {"path": str(stand_ins["clip"])}})
    with pytest.raises(ModelError, match="pickle"):
        hps.load(MetricLoad(device="cpu"))
    hps.load(MetricLoad(device="cpu", allow_pickle=True))
    assert [r["score"] for r in hps.score(images, ["a fox", "a car"])] == pytest.approx(expected, rel=1e-4)
    write_metric_card(isolated_home, "hpsv2", {"weights": {"path": str(stand_ins["hps_st"])},
                                               "processor": {"path": str(stand_ins["clip"])}})
    hps.load(MetricLoad(device="cpu"))
    assert [r["score"] for r in hps.score(images, ["a fox", "a car"])] == pytest.approx(expected, rel=1e-4)


def test_aesthetic_head_is_a_linear_chain_on_unit_clip_embeddings(stand_ins: dict[str, Path],
                                                                  isolated_home: Path) -> None:
    from safetensors.torch import load_file

    write_metric_card(isolated_home, "aesthetic", {"model": {"path": str(stand_ins["clip"])},
                                                   "processor": {"path": str(stand_ins["clip"])},
                                                   "head": {"path": str(stand_ins["head_st"])}})
    metric = get_metric("aesthetic")
    metric.load(MetricLoad(device="cpu"))
    image = Image.fromarray(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3))
    (row,), vectors = metric.score_and_embed([image], [""])
    head = load_file(str(stand_ins["head_st"]))
    x = torch.tensor(vectors)
    for i in (0, 2, 4):
        x = x @ head[f"layers.{i}.weight"].T + head[f"layers.{i}.bias"]
    assert row["score"] == pytest.approx(float(x[0, 0]), rel=1e-4)


def test_imagereward_explains_what_it_needs() -> None:
    with pytest.raises(ModelError, match=r"pip install image-reward|--allow-pickle"):
        get_metric("imagereward").load(MetricLoad())


def test_eval_with_a_reward_metric_then_report_renders_in_chromium(image_run: Path, stand_ins: dict[str, Path],
                                                                  isolated_home: Path, tmp_path: Path) -> None:
    write_metric_card(isolated_home, "pickscore", {"model": {"path": str(stand_ins["clip"])},
                                                   "processor": {"path": str(stand_ins["clip"])}})
    facts = invoke_json("eval", image_run, "--metric", "pickscore", "--device", "cpu")
    assert facts["scored"]["pickscore"] in (0, 18) and facts["diversity_groups"] == {"pickscore": 9}
    report = invoke_json("report", image_run, "--out", tmp_path / "report")
    assert report["unit"] == "prompt" and "pickscore.diversity" in report["metrics"]
    win = next(r for r in report["rows"] if r["metric"] == "pickscore" and r["method"] == "w2sd")["vs_strong"]
    assert win["units"] == 3 and 0 <= win["win_rate"] <= 1
    colors = [r for r in report["categories"] if r["category"] == "Colors" and r["metric"] == "pickscore"]
    assert {r["method"]: r["n"] for r in colors} == {"weak": 2, "strong": 2, "w2sd": 2}
    page = Path(report["files"]["html"])
    assert page.read_text().count("data:image/png;base64,") >= 2 + 9
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium)")
    shot = tmp_path / "shot.png"
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1800",
                           f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert pixels.std() > 20
    colourful = np.abs(pixels[..., 0] - pixels[..., 2]) > 40
    assert colourful.mean() > 0.002, "plots and images should put colour on the page"


def test_a_class_conditional_moe_pair_benches_with_class_numbers_as_prompts(tmp_path: Path,
                                                                          isolated_home: Path) -> None:
    from diffusers import AutoencoderKL

    from w2sd_cli.moe.checkpoint import save_network
    from w2sd_cli.moe.config import PRESETS
    from w2sd_cli.moe.model import DiTMoE

    torch.manual_seed(0)
    save_network(DiTMoE(PRESETS["tiny"]), tmp_path / "dit.safetensors")
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                  latent_channels=4, norm_num_groups=4, sample_size=64).save_pretrained(tmp_path / "vae")
    card = {"schema": 1, "name": "tiny-moe", "kind": "moe-experts", "description": "tiny random DiT-MoE",
            "models": {"dit": {"path": str(tmp_path / "dit.safetensors"), "format": "dit-moe"},
                       "vae": {"path": str(tmp_path / "vae"), "format": "vae"}},
            "strong": {"model": "dit", "experts": "top", "cfg": 1.5},
            "weak": {"model": "dit", "experts": "bottom", "cfg": 1.5},
            "final": {"model": "dit", "experts": "top", "cfg": 1.5},
            "defaults": {"steps": 3, "width": 64, "height": 64}, "options": {"architecture": "tiny"}}
    (isolated_home / "pairs").mkdir()
    (isolated_home / "pairs" / "tiny-moe.yaml").write_text(yaml.safe_dump(card))
    prompts = prompt_file(tmp_path, ["3", "7"])
    facts = invoke_json("bench", "tiny-moe", "--prompts", prompts, "--seeds", "0", "--methods", "strong,w2sd",
                        "--device", "cpu", "--out", tmp_path / "run")
    assert facts["complete"] and facts["rendered"] == 4
    lines = [json.loads(x) for x in (tmp_path / "run" / "manifest.jsonl").read_text().splitlines()]
    assert [ln["class_label"] for ln in lines] == [3, 3, 7, 7]
    assert {ln["nfe"] for ln in lines if ln["method"] == "w2sd"} == {3 + 2 * 2}


def test_bench_images_equal_the_python_api_for_the_same_prompt_and_seed(image_run: Path, tmp_path: Path) -> None:
    from tests.image_helpers import card_dict
    from w2sd_cli.api import pair_from_card
    from w2sd_cli.cards import parse_card

    root = image_run.parent
    card = parse_card(card_dict("tiny-lora", {"base": {"path": str(root / "sd")},
                                              "detail": {"path": str(root / "lora"), "format": "lora"}},
                                strong={"lora": "detail", "lora_scale": 0.8}, weak={"lora_scale": -1.5}))
    lines = [json.loads(x) for x in (image_run / "manifest.jsonl").read_text().splitlines()]
    pair = pair_from_card(card)
    for index in (1, 2):
        made = pair.compare(PROMPTS[index], seeds=[0, 1], steps=3, batch_size=2)
        for method in ("weak", "strong", "w2sd"):
            line = next(ln for ln in lines if (ln["prompt_index"], ln["seed"], ln["method"]) == (index, 1, method))
            with Image.open(image_run / line["file"]) as ours:
                assert ours.tobytes() == made.samples[method][1].image.tobytes(), (index, method)
    strong = [ln for ln in lines if ln["seed"] == 0 and ln["method"] == "strong"]
    pixels = set()
    for line in strong:
        with Image.open(image_run / line["file"]) as image:
            pixels.add(image.tobytes())
    assert len(strong) == 3 and len(pixels) == 3, "each prompt must change the image"


def test_a_pickle_only_clip_folder_needs_the_opt_in(tmp_path: Path, isolated_home: Path) -> None:
    model = tiny_clip(tmp_path / "clip", seed=1)
    torch.save(model.state_dict(), tmp_path / "clip" / "pytorch_model.bin")
    (tmp_path / "clip" / "model.safetensors").unlink()
    write_metric_card(isolated_home, "pickscore", {"model": {"path": str(tmp_path / "clip")},
                                                   "processor": {"path": str(tmp_path / "clip")}})
    metric = get_metric("pickscore")
    with pytest.raises(ModelError, match="pickle"):
        metric.load(MetricLoad(device="cpu"))
    metric.load(MetricLoad(device="cpu", allow_pickle=True))
    assert len(metric.score([Image.new("RGB", (32, 32), "red")], ["a fox"])) == 1


def test_first_order_control_of_a_guidance_pair_is_cfg_at_two_ws_minus_ww(image_run: Path, tmp_path: Path,
                                                                          isolated_home: Path) -> None:
    write_card(isolated_home, "tiny-cfg", {"base": {"path": str(image_run.parent / "sd")}},
               strong={"model": "base", "cfg": 5.5}, weak={"cfg": 0.0}, final={"cfg": 5.5})
    prompts = prompt_file(tmp_path, ["a red fox"])
    control = invoke_json("bench", "tiny-cfg", "--prompts", prompts, "--methods", "first-order,extrapolate",
                          "--steps", "3", "--out", tmp_path / "control")
    cfg11 = invoke_json("bench", "tiny-cfg", "--prompts", prompts, "--methods", "strong", "--cfg", "11",
                        "--steps", "3", "--out", tmp_path / "cfg11")
    assert control["complete"] and cfg11["complete"]

    def pixels(run: str, method: str) -> np.ndarray:
        line = next(json.loads(x) for x in (tmp_path / run / "manifest.jsonl").read_text().splitlines()
                    if json.loads(x)["method"] == method)
        with Image.open(tmp_path / run / line["file"]) as image:
            return np.asarray(image, dtype=np.int16)

    assert np.abs(pixels("control", "first-order") - pixels("cfg11", "strong")).max() <= 1
    # the weak baseline of a guidance pair is its weak side (CFG 0), so extrapolation is CFG 11 too, and
    # first-order coincides with it (rendered once)
    assert np.abs(pixels("control", "extrapolate") - pixels("cfg11", "strong")).max() <= 1
    lines = [json.loads(x) for x in (tmp_path / "control" / "manifest.jsonl").read_text().splitlines()]
    assert {ln["method"]: ln.get("same_as") for ln in lines} == {"extrapolate": None, "first-order": "extrapolate"}


def test_first_order_equals_extrapolation_when_final_is_strong(tmp_path: Path) -> None:
    invoke("bench", "gmm-1d", "--seeds", "0", "--samples", "300", "--steps", "8", "--out", tmp_path)
    lines = {ln["method"]: ln for ln in (json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines())}
    first, extra = (np.load(tmp_path / lines[m]["file"]) for m in ("first-order", "extrapolate"))
    assert np.array_equal(first, extra) and lines["extrapolate"]["nfe"] == 16
