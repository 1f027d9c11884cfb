"""Diffusers adapters on tiny models: LoRA scale switching, prompt embeddings, Canny, shared components."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.image_helpers import save_sd, save_sdxl, sd_unet
from w2sd_cli.adapters.control import canny, load_control_image, looks_like_edge_map
from w2sd_cli.adapters.lora import LoraScales, adapter_name, check_adapter_name
from w2sd_cli.adapters.models import load_folder, pick_device, pick_dtype, share_identical
from w2sd_cli.adapters.text import PromptEncoder
from w2sd_cli.errors import InputError, ModelError


def _add_lora(unet: torch.nn.Module, name: str, rslora: bool = False, seed: int = 0) -> None:
    from peft import LoraConfig

    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=6, use_rslora=rslora, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]), adapter_name=name)
    with torch.no_grad():
        for key, p in unet.named_parameters():
            if "lora_B" in key and f".{name}." in key:
                p.normal_(0, 0.5)


def _run(unet: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    x, states = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 5, 32, generator=g)
    with torch.no_grad():
        return unet(x, 500, encoder_hidden_states=states, return_dict=False)[0]


def test_fast_scale_switch_matches_set_adapters_bit_for_bit() -> None:
    unet = sd_unet()
    _add_lora(unet, "w2sd_a")
    _add_lora(unet, "w2sd_b", rslora=True, seed=1)
    unet.set_adapters(["w2sd_a", "w2sd_b"], [1.0, 1.0])
    fast = LoraScales.scan([unet, unet])
    assert fast.adapters == {"w2sd_a", "w2sd_b"} and fast.layers("w2sd_a") == fast.layers("w2sd_b") > 0
    outputs = set()
    for a, b in [(0.8, 0.0), (-1.5, 0.3), (0.0, 0.0), (1.5, -1.5), (0.8, 0.0)]:
        fast.apply({"w2sd_a": a, "w2sd_b": b})
        ours = _run(unet)
        scalings = [dict(s.layer.scaling) for s in fast.slots]
        unet.set_adapters(["w2sd_a", "w2sd_b"], [a, b])
        assert torch.equal(ours, _run(unet))
        assert scalings == [dict(s.layer.scaling) for s in fast.slots]
        outputs.add(ours.sum().item())
        fast.current = {}  # set_adapters changed the layers behind our back
    assert len(outputs) == 4  # the scales really changed the output
    with pytest.raises(ModelError, match="no LoRA adapter"):
        fast.apply({"missing": 1.0})


def test_scale_zero_is_the_base_model_and_apply_skips_repeats() -> None:
    unet = sd_unet()
    base = _run(unet)
    _add_lora(unet, "w2sd_a")
    fast = LoraScales.scan([unet])
    fast.apply({})
    assert torch.equal(_run(unet), base)
    fast.apply({"w2sd_a": 1.0})
    fast.slots[0].layer.scaling["w2sd_a"] = 123.0
    fast.apply({"w2sd_a": 1.0})  # unchanged request: nothing is rewritten
    assert fast.slots[0].layer.scaling["w2sd_a"] == 123.0


def test_adapter_names_are_validated() -> None:
    for bad in ("train", "eval", "to", "a.b", "has-dash", "", "lora_x", "__base__"):
        with pytest.raises(ModelError):
            check_adapter_name(bad)
    assert adapter_name("hd-lora") == "w2sd_hd_lora"
    assert adapter_name("train") == "w2sd_train"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"sd": save_sd(root / "sd", seed=0), "sd_other_unet": save_sd(root / "sd1", seed=7),
            "sd_other_text": save_sd(root / "sd2", seed=0, share_text_from=9), "sdxl": save_sdxl(root / "xl")}


def test_prompt_embeddings_with_clip_skip_and_cache(folders: dict[str, Path]) -> None:
    model = load_folder(folders["sd"], torch.float32)
    assert model.family == "sd" and model.vae_scale_factor == 2 and model.native_size == 16
    encoder, tokenizer = model.text_encoders[0], model.tokenizers[0]
    ids = tokenizer("a fox", padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        out = encoder(ids, output_hidden_states=True)
        skip1 = getattr(encoder, "text_model", encoder).final_layer_norm(out.hidden_states[-2])
    plain = PromptEncoder("sd", model.tokenizers, model.text_encoders, torch.device("cpu"), torch.float32)
    skipping = PromptEncoder("sd", model.tokenizers, model.text_encoders, torch.device("cpu"), torch.float32, 1)
    torch.testing.assert_close(plain.encode("a fox").hidden_states, out.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(skipping.encode("a fox").hidden_states, skip1, rtol=0, atol=0)
    assert not torch.equal(skip1, out.last_hidden_state)
    plain.encode("a fox")
    plain.encode("a fox", {"w2sd_unet_only": 0.5})  # no text-encoder LoRA: same embedding, not recomputed
    plain.encode("a cat")
    assert plain.cached == 2


def test_sdxl_embeddings_pooled_time_ids_and_zero_negative(folders: dict[str, Path]) -> None:
    model = load_folder(folders["sdxl"], torch.float32)
    assert model.family == "sdxl" and model.force_zeros_for_empty_prompt
    enc = PromptEncoder("sdxl", model.tokenizers, model.text_encoders, torch.device("cpu"), torch.float32,
                        force_zeros_for_empty_prompt=True)
    cond = enc.encode("a fox", size=(24, 16))
    assert cond.hidden_states.shape == (1, 16, 64) and cond.added["text_embeds"].shape == (1, 32)
    assert cond.added["time_ids"].tolist() == [[24, 16, 0, 0, 24, 16]]
    neg = enc.encode(None, negative=True, size=(24, 16))  # no negative prompt at all: SDXL's zeros
    assert not neg.hidden_states.any() and not neg.added["text_embeds"].any()
    assert enc.encode("", size=(24, 16)).hidden_states.any()  # an empty *positive* prompt is encoded


def test_an_explicit_empty_sdxl_negative_prompt_is_encoded_as_diffusers_does(folders: dict[str, Path]) -> None:
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(folders["sdxl"]))
    assert pipe.config.force_zeros_for_empty_prompt
    model = load_folder(folders["sdxl"], torch.float32)
    enc = PromptEncoder("sdxl", model.tokenizers, model.text_encoders, torch.device("cpu"), torch.float32,
                        force_zeros_for_empty_prompt=True)
    for negative in ("", None):
        _, theirs, _, theirs_pooled = pipe.encode_prompt("a fox", device="cpu", do_classifier_free_guidance=True,
                                                         negative_prompt=negative)
        ours = enc.encode(negative, negative=True, size=(24, 16))
        torch.testing.assert_close(ours.hidden_states, theirs, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.added["text_embeds"], theirs_pooled, rtol=0, atol=1e-6)
        assert bool(ours.hidden_states.any()) is (negative == "")


def test_identical_components_are_loaded_once(folders: dict[str, Path]) -> None:
    a, b = load_folder(folders["sd"], torch.float32), load_folder(folders["sd_other_unet"], torch.float32)
    c = load_folder(folders["sd_other_text"], torch.float32)
    assert share_identical([a, b, c]) == 3 + 1  # b: vae, text encoder, tokenizer; c: tokenizer only
    assert b.vae is a.vae and b.text_encoders[0] is a.text_encoders[0] and b.unet is not a.unet
    assert c.text_encoders[0] is not a.text_encoders[0] and c.tokenizers[0] is a.tokenizers[0]


def test_device_and_dtype_choice() -> None:
    assert pick_device("cpu").type == "cpu"
    assert pick_dtype(torch.device("cpu")) is torch.float32
    assert pick_dtype(torch.device("cuda")) is torch.float16
    with pytest.raises(InputError, match="float16 does not run on the CPU"):
        pick_dtype(torch.device("cpu"), "float16")
    with pytest.raises(InputError, match="--dtype"):
        pick_dtype(torch.device("cpu"), "int8")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            pick_device("cuda")


def test_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a Stable Diffusion model folder"):
        load_folder(tmp_path, torch.float32)


def test_canny_finds_the_outline_of_a_square(tmp_path: Path) -> None:
    gray = torch.zeros(32, 32)
    gray[8:24, 8:24] = 255
    edges = canny(gray)
    assert edges[16, 16] == 0 and edges[2, 2] == 0  # not inside, not far outside
    assert edges[7:9, 16].any() and edges[16, 23:25].any()  # on the border
    rgb = edges.expand(3, -1, -1) * 255
    assert looks_like_edge_map(rgb.to(torch.uint8))
    photo = np.zeros((32, 32, 3), dtype=np.uint8)
    photo[..., 0] = np.linspace(0, 255, 32, dtype=np.uint8)[None, :]
    photo[8:24, 8:24] = (30, 200, 90)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    assert not looks_like_edge_map(torch.from_numpy(photo).permute(2, 0, 1))
    control = load_control_image(tmp_path / "photo.png", 32, 32)
    assert control.shape == (1, 3, 32, 32) and set(control.unique().tolist()) == {0.0, 1.0}
    as_is = load_control_image(tmp_path / "photo.png", 16, 16, preprocess="none")
    assert as_is.shape == (1, 3, 16, 16) and 0 < float(as_is.mean()) < 1
    with pytest.raises(InputError, match="no such file"):
        load_control_image(tmp_path / "missing.png", 16, 16)


def _test_images() -> list[np.ndarray]:
    """Synthetic and photo-like RGB images: a 70-grey-level step, shapes, a noisy gradient, smooth blobs."""
    rng = np.random.default_rng(0)
    step = np.full((64, 64, 3), 90, dtype=np.uint8)
    step[:, 32:] = 160
    shapes = np.zeros((64, 64, 3), dtype=np.uint8)
    shapes[10:30, 10:40] = (200, 40, 40)
    shapes[35:60, 20:50] = (30, 180, 220)
    yy, xx = np.mgrid[0:64, 0:64]
    gradient = np.stack([xx * 4, yy * 3, (xx + yy) * 2], axis=-1) % 256
    noisy = np.clip(gradient + rng.normal(0, 12, gradient.shape), 0, 255).astype(np.uint8)
    blobs = (127 + 100 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None] * np.ones(3)).astype(np.uint8)
    return [step, shapes, noisy, blobs]


def test_canny_edges_are_opencvs_as_controlnets_canny_models_were_trained_on(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    for i, image in enumerate(_test_images()):
        want = cv2.Canny(image, 100, 200) > 0
        got = canny(torch.from_numpy(image).permute(2, 0, 1), 100, 200).numpy() > 0
        union = (want | got).sum()
        assert union == 0 or (want & got).sum() / union >= 0.99, i
        path = tmp_path / f"{i}.png"
        Image.fromarray(image).save(path)
        control = load_control_image(path, 64, 64, preprocess="canny").numpy()[0, 0] > 0
        assert (control == want).all(), i
    step = _test_images()[0]
    assert canny(torch.from_numpy(step).permute(2, 0, 1)).sum() > 0  # the hand-written detector found none


def test_canny_without_opencv_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed
    with pytest.raises(InputError, match=r"w2sd\[controlnet\]"):
        canny(torch.zeros(3, 8, 8, dtype=torch.uint8))
