"""Tiny SD and SDXL pipelines, LoRAs and ControlNets built from configs in the test session, saved to folders.

Sizes follow diffusers' own get_dummy_components; the CLIP tokenizer is written from a tiny vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

CHARS = "abcdefghijklmnopqrstuvwxyz.,!-"
MAX_TOKENS = 16


def tokenizer(folder: Path) -> Any:
    """A CLIP BPE tokenizer over single characters (no merges)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in CHARS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_TOKENS)


def text_encoder(seed: int, projection: bool = False, hidden: int = 32) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden, intermediate_size=37,
                            layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=3,
                            vocab_size=2 + 2 * len(CHARS), max_position_embeddings=MAX_TOKENS, projection_dim=32)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def sd_unet(seed: int = 0, cross: int = 32) -> Any:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross, norm_num_groups=2).eval()


def sdxl_unet(seed: int = 0) -> Any:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=2).eval()


def vae(seed: int = 0) -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=2).eval()


SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False, "prediction_type": "epsilon",
             "timestep_spacing": "leading"}


def save_sd(folder: Path, seed: int = 0, unet: Any = None, share_text_from: int = 0) -> Path:
    """A tiny SD 1.x-style pipeline folder; text encoder and VAE seeded by ``share_text_from``."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae(share_text_from), text_encoder=text_encoder(share_text_from), tokenizer=tokenizer(folder / "tok"),
        unet=unet if unet is not None else sd_unet(seed), scheduler=DDIMScheduler(**SCHEDULER),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def save_sdxl(folder: Path, seed: int = 0, share_text_from: int = 0) -> Path:
    """A tiny SDXL-style pipeline folder (two text encoders, pooled embeddings, time ids)."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(
        vae=vae(share_text_from), text_encoder=text_encoder(share_text_from),
        text_encoder_2=text_encoder(share_text_from + 100, projection=True),
        tokenizer=tokenizer(folder / "tok"), tokenizer_2=tokenizer(folder / "tok2"), unet=sdxl_unet(seed),
        scheduler=DDIMScheduler(**SCHEDULER))
    pipe.save_pretrained(folder)
    return folder


def save_lora(folder: Path, unet: Any, seed: int = 1, rank: int = 4, alpha: float = 8.0,
              text_encoder: Any = None) -> Path:
    """A random (non-zero) peft LoRA for ``unet``'s attention projections (and optionally a text encoder's),
    saved in diffusers format."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    parts = {"unet_lora_layers": (unet, ["to_q", "to_k", "to_v", "to_out.0"])}
    if text_encoder is not None:
        parts["text_encoder_lora_layers"] = (text_encoder, ["q_proj", "k_proj", "v_proj", "out_proj"])
    layers = {}
    for key, (model, targets) in parts.items():
        config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=targets)
        if key == "unet_lora_layers":
            model.add_adapter(config, adapter_name="tmp")
        else:  # transformers' add_adapter wants a newer peft; inject directly
            inject_adapter_in_model(config, model, adapter_name="tmp")
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        layers[key] = get_peft_model_state_dict(model, adapter_name="tmp")
    StableDiffusionPipeline.save_lora_weights(folder, safe_serialization=True, **layers)
    parts["unet_lora_layers"][0].delete_adapters("tmp")
    return folder / "pytorch_lora_weights.safetensors"


def save_controlnet(folder: Path, seed: int = 2) -> Path:
    """A tiny ControlNet for ``sd_unet`` with random (not zero-initialised) output convolutions."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel(block_out_channels=(4, 8), layers_per_block=1, in_channels=4,
                          down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), cross_attention_dim=32,
                          conditioning_embedding_out_channels=(4, 8), norm_num_groups=2)
    with torch.no_grad():
        for p in net.parameters():
            if not p.abs().sum():
                p.normal_(0, 0.3)
    net.save_pretrained(folder)
    return folder


def write_card(home: Path, name: str, models: dict[str, Any], **fields: Any) -> Path:
    """A user card in ``$W2SD_HOME/pairs``."""
    data = {"schema": 1, "name": name, "kind": "diffusers", "description": f"test pair {name}",
            "models": models, "defaults": {"steps": 3}, **fields}
    folder = home / "pairs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def card_dict(name: str, models: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"schema": 1, "name": name, "kind": "diffusers", "description": f"test pair {name}", "models": models,
            "defaults": {"steps": 3}, **fields}
