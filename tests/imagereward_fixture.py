"""Random ImageReward checkpoints laid out like the official ``ImageReward.pt``, from a seed (torch only).

Shared by tests/test_imagereward.py and benchmarks/imagereward_parity.py (which loads the same checkpoint
into the reference ``image-reward`` package in a throw-away environment), so the two score the same weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MEAN, STD = 0.16717362830052426, 1.0333394966054072
WORDS = ["a", "photo", "of", "the", "cat", "dog", "red", "blue", "green", "yellow", "circle", "square", "sky",
         "over", "under", "two", "one", "three", "big", "small", "on", "in", "at", "left", "right", "top",
         "painting", "car", "house", "tree", "man", "woman", "with", "and", ",", ".", "!", "'", "-", "highly",
         "detailed"]


@dataclass(frozen=True)
class Sizes:
    """The architecture: ViT width/depth/heads (the reference's ViT-L is 1024/24/16) and BERT's."""

    vision_width: int = 1024
    vision_depth: int = 24
    vision_heads: int = 16
    text_width: int = 768
    text_depth: int = 12
    text_heads: int = 12
    text_ffn: int = 3072
    vocab: int = 30524
    positions: int = 512
    head: tuple[int, ...] = (1024, 128, 64, 16, 1)


# vocab: the 5 specials, WORDS, 2 suffixes and BLIP's 2 added tokens
TINY = Sizes(vision_width=64, vision_depth=2, vision_heads=1, text_width=32, text_depth=2, text_heads=2,
             text_ffn=48, vocab=len(WORDS) + 9, positions=40, head=(24, 12, 8, 4, 1))


def med_config(sizes: Sizes) -> dict[str, Any]:
    """A ``med_config.json`` like THUDM's (BERT-base with cross-attention), at ``sizes``."""
    return {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "hidden_size": sizes.text_width, "initializer_range": 0.02,
            "intermediate_size": sizes.text_ffn, "layer_norm_eps": 1e-12,
            "max_position_embeddings": sizes.positions, "model_type": "bert",
            "num_attention_heads": sizes.text_heads, "num_hidden_layers": sizes.text_depth, "pad_token_id": 0,
            "type_vocab_size": 2, "vocab_size": sizes.vocab, "encoder_width": 768, "add_cross_attention": True}


def shapes(sizes: Sizes) -> dict[str, tuple[int, ...]]:
    """Every tensor of the official checkpoint's state dict and its shape."""
    d, h, v = sizes.vision_width, sizes.text_width, sizes.vision_width
    out: dict[str, tuple[int, ...]] = {
        "blip.visual_encoder.cls_token": (1, 1, d), "blip.visual_encoder.pos_embed": (1, 197, d),
        "blip.visual_encoder.patch_embed.proj.weight": (d, 3, 16, 16),
        "blip.visual_encoder.patch_embed.proj.bias": (d,),
        "blip.visual_encoder.norm.weight": (d,), "blip.visual_encoder.norm.bias": (d,)}
    for i in range(sizes.vision_depth):
        b = f"blip.visual_encoder.blocks.{i}."
        out |= {b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "attn.qkv.weight": (3 * d, d),
                b + "attn.qkv.bias": (3 * d,), b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                b + "norm2.weight": (d,), b + "norm2.bias": (d,), b + "mlp.fc1.weight": (4 * d, d),
                b + "mlp.fc1.bias": (4 * d,), b + "mlp.fc2.weight": (d, 4 * d), b + "mlp.fc2.bias": (d,)}
    t = "blip.text_encoder."
    out |= {t + "embeddings.word_embeddings.weight": (sizes.vocab, h),
            t + "embeddings.position_embeddings.weight": (sizes.positions, h),
            t + "embeddings.LayerNorm.weight": (h,), t + "embeddings.LayerNorm.bias": (h,)}
    for i in range(sizes.text_depth):
        b = f"{t}encoder.layer.{i}."
        for part, width in (("attention", h), ("crossattention", v)):
            out |= {f"{b}{part}.self.query.weight": (h, h), f"{b}{part}.self.query.bias": (h,),
                    f"{b}{part}.self.key.weight": (h, width), f"{b}{part}.self.key.bias": (h,),
                    f"{b}{part}.self.value.weight": (h, width), f"{b}{part}.self.value.bias": (h,),
                    f"{b}{part}.output.dense.weight": (h, h), f"{b}{part}.output.dense.bias": (h,),
                    f"{b}{part}.output.LayerNorm.weight": (h,), f"{b}{part}.output.LayerNorm.bias": (h,)}
        out |= {b + "intermediate.dense.weight": (sizes.text_ffn, h), b + "intermediate.dense.bias": (sizes.text_ffn,),
                b + "output.dense.weight": (h, sizes.text_ffn), b + "output.dense.bias": (h,),
                b + "output.LayerNorm.weight": (h,), b + "output.LayerNorm.bias": (h,)}
    out |= {"blip.vision_proj.weight": (256, d), "blip.vision_proj.bias": (256,),
            "blip.text_proj.weight": (256, h), "blip.text_proj.bias": (256,)}
    widths = (h, *sizes.head)
    for n, index in enumerate((0, 2, 4, 6, 7)):
        out |= {f"mlp.layers.{index}.weight": (widths[n + 1], widths[n]), f"mlp.layers.{index}.bias": (widths[n + 1],)}
    return out


def random_checkpoint(sizes: Sizes, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 weights in the official layout: norms near 1, others N(0, 1/fan_in) so scores spread."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in shapes(sizes).items():
        noise = torch.randn(shape, generator=generator)
        if "norm" in key.lower() and key.endswith("weight"):
            state[key] = 1 + 0.1 * noise
        elif key.endswith("bias") or len(shape) == 1:
            state[key] = 0.1 * noise
        elif key.startswith("mlp."):
            state[key] = noise / shape[1] ** 0.5
        else:
            state[key] = noise * (0.02 if "embed" in key or "cls_token" in key else 1 / shape[-1] ** 0.5)
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(sizes.positions).expand((1, -1))
    return state


def write_tokenizer(folder: Path) -> Path:
    """A small uncased BERT WordPiece tokenizer (vocab.txt) standing in for bert-base-uncased."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", "##ed"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    return folder


def write_checkpoint(folder: Path, sizes: Sizes = TINY, seed: int = 0) -> dict[str, Path]:
    """``ImageReward.pt`` (torch.save of a plain state dict), a folder with ``med_config.json`` (the store
    checks single files as weights, so the card names the config's folder) and a tokenizer folder."""
    (folder / "med").mkdir(parents=True, exist_ok=True)
    torch.save(random_checkpoint(sizes, seed), folder / "ImageReward.pt")
    (folder / "med" / "med_config.json").write_text(json.dumps(med_config(sizes), indent=2))
    return {"weights": folder / "ImageReward.pt", "med_config": folder / "med",
            "tokenizer": write_tokenizer(folder / "tokenizer")}


def images(count: int = 3) -> list[Any]:
    """Deterministic test images of different sizes and modes (the reference crops and converts them)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    sizes = [(300, 200), (224, 224), (181, 257), (512, 384)]
    out = []
    for n in range(count):
        w, h = sizes[n % len(sizes)]
        base = np.linspace(0, 255, w * h * 3).reshape(h, w, 3)
        noise = rng.integers(0, 64, (h, w, 3))
        out.append(Image.fromarray(((base + noise) % 256).astype("uint8")))
    return out


PROMPTS = ["a photo of two red circles on the left", "a painting of a big house under the blue sky",
           "highly detailed yellow car, with a tree!"]
