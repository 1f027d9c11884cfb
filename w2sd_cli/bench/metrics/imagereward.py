"""ImageReward v1.0 (Xu et al. 2023) scored by w2sd itself, on transformers' BLIP classes.

The reward model is BLIP's ViT (the official checkpoint: ViT-L/16 at 224 px) feeding a BERT that
cross-attends to the image tokens; the BERT's first token goes through a five-layer linear head
(1024-128-64-16-1, dropouts only between, no activations), and the reward is normalised by the mean and
std THUDM published. The official ``ImageReward.pt`` (a plain state dict saved with ``torch.save``) is
read with ``torch.load(weights_only=True)`` once ``--allow-pickle`` is given, and renamed here for
``BlipVisionModel`` and ``BlipTextModel``; its BERT sizes come from ``med_config.json``, the ViT's from the
tensors themselves. Preprocessing follows the reference: shortest side to 224 (bicubic), centre crop,
RGB, BLIP's mean/std; prompts padded and truncated to 35 tokens of bert-base-uncased plus BLIP's two
added tokens.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from w2sd_cli.errors import InputError, ModelError

from .base import MetricLoad

MEAN = 0.16717362830052426
STD = 1.0333394966054072
IMAGE_SIZE = 224
PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)
PROMPT_TOKENS = 35
BLIP_TOKENS = ("[DEC]", "[ENC]")  # BLIP's bos and encoder tokens: ids 30522 and 30523 in bert-base-uncased
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")
HEAD_LAYERS = (0, 2, 4, 6, 7)  # the Linear layers' indices in the reference's nn.Sequential
UNUSED = ("blip.vision_proj.", "blip.text_proj.", "blip.text_encoder.pooler.",
          "blip.text_encoder.embeddings.position_ids")
_BLOCK = {"norm1.": "layer_norm1.", "norm2.": "layer_norm2.", "attn.qkv.": "self_attn.qkv.",
          "attn.proj.": "self_attn.projection.", "mlp.fc1.": "mlp.fc1.", "mlp.fc2.": "mlp.fc2."}
_VISION_TOP = {"cls_token": "embeddings.class_embedding", "pos_embed": "embeddings.position_embedding",
               "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
               "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
               "norm.weight": "post_layernorm.weight", "norm.bias": "post_layernorm.bias"}


@dataclass
class Converted:
    """An ImageReward checkpoint split and renamed: the ViT's, the BERT's and the head's tensors."""

    vision: dict[str, Any]
    text: dict[str, Any]
    head: list[tuple[Any, Any]]


def convert(state: dict[str, Any]) -> Converted:
    """Rename an ImageReward state dict (``blip.visual_encoder.*``, ``blip.text_encoder.*``, ``mlp.layers.*``)
    for transformers' ``BlipVisionModel`` and ``BlipTextModel``; BLIP's contrastive projections are dropped.

    Raises:
        ModelError: a tensor this architecture has no place for, or a head layer missing.
    """
    vision: dict[str, Any] = {}
    text: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith(UNUSED):
            continue
        if key.startswith("blip.visual_encoder."):
            renamed = _vision_key(key.removeprefix("blip.visual_encoder."))
            (unknown.append(key) if renamed is None else vision.__setitem__(renamed, value))
        elif key.startswith("blip.text_encoder."):
            text[key.removeprefix("blip.text_encoder.")] = value
        elif not key.startswith("mlp.layers."):
            unknown.append(key)
    missing = [f"mlp.layers.{i}.{p}" for i in HEAD_LAYERS for p in ("weight", "bias")
               if f"mlp.layers.{i}.{p}" not in state]
    if unknown or missing:
        raise ModelError(f"This is not an ImageReward checkpoint laid out like THUDM's ImageReward.pt: "
                         f"unexpected tensors {unknown[:4]}, missing {missing[:4]}. Point the imagereward "
                         "metric card's `weights` at THUDM/ImageReward's ImageReward.pt (or a safetensors copy "
                         "with the same tensor names).")
    head = [(state[f"mlp.layers.{i}.weight"], state[f"mlp.layers.{i}.bias"]) for i in HEAD_LAYERS]
    return Converted(vision, text, head)


def _vision_key(key: str) -> str | None:
    if key in _VISION_TOP:
        return _VISION_TOP[key]
    found = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    if found is None:
        return None
    index, rest = found.groups()
    for old, new in _BLOCK.items():
        if rest.startswith(old):
            return f"encoder.layers.{index}.{new}{rest.removeprefix(old)}"
    return None


def vision_config(vision: dict[str, Any], heads: int | None = None) -> Any:
    """BLIP's ViT as a ``BlipVisionConfig``, its sizes read from the converted tensors (64-wide heads unless
    ``heads`` says otherwise; BLIP's LayerNorms use eps 1e-6, exact GELU)."""
    from transformers import BlipVisionConfig

    width = int(vision["embeddings.class_embedding"].shape[-1])
    patch = int(vision["embeddings.patch_embedding.weight"].shape[-1])
    grid = math.isqrt(int(vision["embeddings.position_embedding"].shape[1]) - 1)
    depth = len({k.split(".")[2] for k in vision if k.startswith("encoder.layers.")})
    ffn = int(vision["encoder.layers.0.mlp.fc1.weight"].shape[0])
    return BlipVisionConfig(hidden_size=width, intermediate_size=ffn, num_hidden_layers=depth,
                            num_attention_heads=heads or width // 64, image_size=grid * patch, patch_size=patch,
                            hidden_act="gelu", layer_norm_eps=1e-6, attention_dropout=0.0)


def text_config(med: dict[str, Any], vision_width: int) -> Any:
    """``med_config.json`` (a BertConfig) as a ``BlipTextConfig`` whose cross-attention reads ``vision_width``
    image features (BLIP sets ``encoder_width`` to the ViT's width, whatever the file says)."""
    from transformers import BlipTextConfig

    try:
        return BlipTextConfig(vocab_size=int(med["vocab_size"]), hidden_size=int(med["hidden_size"]),
                              encoder_hidden_size=vision_width, intermediate_size=int(med["intermediate_size"]),
                              num_hidden_layers=int(med["num_hidden_layers"]),
                              num_attention_heads=int(med["num_attention_heads"]),
                              max_position_embeddings=int(med["max_position_embeddings"]),
                              hidden_act=str(med.get("hidden_act", "gelu")),
                              layer_norm_eps=float(med.get("layer_norm_eps", 1e-12)),
                              pad_token_id=int(med.get("pad_token_id", 0)), bos_token_id=None,
                              eos_token_id=None, sep_token_id=None, hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0, is_decoder=True)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"med_config.json lacks or mistypes a BERT setting ({err}); use THUDM/ImageReward's "
                         "med_config.json.") from None


def preprocess(image: Any, size: int = IMAGE_SIZE) -> Any:
    """The reference transform: shortest side to ``size`` (bicubic; the long side truncated like
    torchvision), centre crop (offsets rounded half to even), RGB, [0, 1], BLIP's mean/std; (3, size, size)."""
    import numpy as np
    import torch
    from PIL import Image

    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short != size:
        other = int(size * long / short)
        new = (size, other) if width <= height else (other, size)
        image = image.resize(new, Image.Resampling.BICUBIC)
        width, height = new
    left, top = round((width - size) / 2.0), round((height - size) / 2.0)
    if width < size or height < size:
        raise InputError(f"an image of {image.size} cannot be cropped to {size}×{size}.")
    image = image.crop((left, top, left + size, top + size)).convert("RGB")
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
    mean, std = torch.tensor(PIXEL_MEAN), torch.tensor(PIXEL_STD)
    return (pixels - mean[:, None, None]) / std[:, None, None]


class RewardModel:
    """The loaded ImageReward model: ``score(images, prompts)`` gives the normalised rewards."""

    def __init__(self, vision: Any, text: Any, head: list[tuple[Any, Any]], tokenizer: Any, device: Any,
                 dtype: Any = None) -> None:
        self.vision, self.text, self.tokenizer, self.device = vision, text, tokenizer, device
        self.head = [(w.float().to(device), b.float().to(device)) for w, b in head]
        self.dtype = dtype

    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> list[float]:
        import torch

        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=PROMPT_TOKENS,
                                return_tensors="pt")
        pixels = torch.stack([preprocess(im) for im in images]).to(self.device, self.dtype or torch.float32)
        with torch.inference_mode():
            image_embeds = self.vision(pixel_values=pixels).last_hidden_state
            image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
            out = self.text(input_ids=tokens["input_ids"].to(self.device),
                            attention_mask=tokens["attention_mask"].to(self.device),
                            encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask)
            x = out.last_hidden_state[:, 0, :].float()
            for weight, bias in self.head:
                x = x @ weight.T + bias
        return ((x[:, 0] - MEAN) / STD).cpu().tolist()


def build(state: dict[str, Any], med: dict[str, Any], tokenizer_dir: Path, device: Any = "cpu",
          dtype: str | None = None, vision_heads: int | None = None) -> RewardModel:
    """An ImageReward model from a checkpoint's state dict, its ``med_config`` and a BERT tokenizer folder."""
    import torch
    from transformers import BlipTextModel, BlipVisionModel

    parts = convert(state)
    vision_cfg = vision_config(parts.vision, vision_heads)
    text_cfg = text_config(med, vision_cfg.hidden_size)
    with torch.device("meta"):
        vision, text = BlipVisionModel(vision_cfg), BlipTextModel(text_cfg, add_pooling_layer=False)
    _load(vision, parts.vision, "ViT")
    _load(text, parts.text, "BERT")
    positions = text_cfg.max_position_embeddings
    text.embeddings.register_buffer("position_ids", torch.arange(positions).expand((1, -1)), persistent=False)
    torch_dtype = _dtype(dtype)
    modules: list[Any] = [vision, text]
    for module in modules:
        module.to(device=device, dtype=torch_dtype).eval()
    return RewardModel(vision, text, parts.head, tokenizer(tokenizer_dir), device, torch_dtype)


def _load(module: Any, state: dict[str, Any], what: str) -> None:
    own = module.state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if wrong or missing or unexpected:
        raise ModelError(f"ImageReward's {what} tensors do not fit the architecture built from the checkpoint and "
                         f"med_config.json (missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes "
                         f"{wrong[:3]}). Use THUDM/ImageReward's ImageReward.pt with its own med_config.json.")
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)


def _dtype(name: str | None) -> Any:
    import torch

    if name in (None, "float32"):
        return torch.float32
    if name in ("float16", "bfloat16"):
        return getattr(torch, name)
    raise InputError(f"--dtype {name!r}: use float32, float16 or bfloat16.")


def tokenizer(folder: Path) -> Any:
    """bert-base-uncased's WordPiece tokenizer with BLIP's two added special tokens."""
    from transformers import BertTokenizer

    try:
        found = BertTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load the BERT tokenizer in {folder} ({err}).") from None
    found.add_tokens(list(BLIP_TOKENS), special_tokens=True)
    return found


@functools.cache
def _load_reward(card_json: str, device: str, allow_pickle: bool, offline: bool, dtype: str | None) -> RewardModel:
    """Locate, read, convert and build once per process."""
    from .reward import MetricCard, _device, _quiet, load_weights, locate_model

    _quiet()
    card = MetricCard.model_validate_json(card_json)
    options = MetricLoad(device=device, offline=offline, allow_pickle=allow_pickle)
    weights = locate_model(card, "weights", options)
    config = locate_model(card, "med_config", options)
    folder = locate_model(card, "tokenizer", options)
    state = load_weights(weights, allow_pickle)
    try:
        med = json.loads((config / "med_config.json" if config.is_dir() else config).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{config}: cannot read med_config.json ({err}).") from None
    heads = card.options.get("vision_heads")
    return build(state, med, folder, _device(device), dtype, int(heads) if heads else None)


class ImageReward:
    """ImageReward v1.0: BLIP ViT-L + cross-attending BERT + linear head, normalised (about −2 to 2)."""

    name = "imagereward"
    summary = ("ImageReward v1.0 (THUDM/ImageReward, BLIP ViT-L + BERT; pickle read as plain tensors: "
               "--allow-pickle): (reward − 0.167) / 1.033, about −2 to 2")
    directions: ClassVar[dict[str, int]] = {"score": 1}

    def __init__(self) -> None:
        self.options = MetricLoad()

    def load(self, options: MetricLoad) -> None:
        from .reward import metric_card

        self.options = options
        ref = metric_card(self.name).models["weights"]
        if not options.allow_pickle and str(ref.filename or ref.path or ref.url).endswith(PICKLE_SUFFIXES):
            raise ModelError("ImageReward's checkpoint (ImageReward.pt) is a pickle file, which can run code when "
                             "loaded. If you trust THUDM/ImageReward, pass --allow-pickle: w2sd then reads it with "
                             "torch.load(weights_only=True), which accepts plain tensors only. Or point the "
                             "imagereward metric card's `weights` at a safetensors copy.")
        self.model()

    def model(self) -> RewardModel:
        from .reward import metric_card

        card = metric_card(self.name)
        return _load_reward(card.model_dump_json(by_alias=True, context={"secrets": True}), self.options.device,
                            self.options.allow_pickle, self.options.offline, self.options.dtype)

    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> list[dict[str, float]]:
        return [{"score": float(v)} for v in self.model().score(images, prompts)]
