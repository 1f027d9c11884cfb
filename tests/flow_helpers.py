"""Tiny SD3 and FLUX pipelines (and a transformer LoRA) built from configs in the test session, saved to folders.

Sizes follow diffusers' own dummy components, shrunk; the CLIP tokenizers are image_helpers' character
tokenizer and the T5 tokenizer is a small unigram vocabulary written here. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from tests.image_helpers import text_encoder as clip_encoder
from tests.image_helpers import tokenizer as clip_tokenizer

WORDS = ("a", "an", "the", "photo", "of", "cat", "dog", "fox", "red", "blue", "tree", "house", "in", "on")
T5_LENGTH = 24
"""The T5 length the tiny cards and the diffusers reference calls use (``max_sequence_length``)."""
SD3_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}
FLUX_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
                  "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}


def t5_tokenizer() -> Any:
    """A T5 (unigram) tokenizer over a few words and single letters."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -1.0) for w in WORDS] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def t5_encoder(vocab_size: int, seed: int = 0, width: int = 32) -> Any:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab_size, d_model=width, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(config).eval()


def flow_vae(seed: int = 0, shift: float = 0.0609, scale: float = 1.5035) -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=2, use_quant_conv=False, use_post_quant_conv=False, shift_factor=shift,
                         scaling_factor=scale).eval()


def sd3_transformer(seed: int = 0, layers: int = 1) -> Any:
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(sample_size=8, patch_size=1, in_channels=4, num_layers=layers, attention_head_dim=8,
                                 num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
                                 pooled_projection_dim=64, out_channels=4, pos_embed_max_size=16).eval()


def flux_transformer(seed: int = 0, guidance: bool = True) -> Any:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                  attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                  pooled_projection_dim=32, guidance_embeds=guidance, axes_dims_rope=(4, 4, 8)).eval()


def save_sd3(folder: Path, seed: int = 0, text_seed: int = 0, layers: int = 1) -> Path:
    """A tiny SD3-style folder: MMDiT, 16-px images (8×8 latent), CLIP-L/G-like encoders and a T5."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    t5_tok = t5_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=sd3_transformer(seed, layers), scheduler=FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER),
        vae=flow_vae(text_seed), text_encoder=clip_encoder(text_seed, projection=True, hidden=16),
        tokenizer=clip_tokenizer(folder / "tok"),
        text_encoder_2=clip_encoder(text_seed + 1, projection=True, hidden=16),
        tokenizer_2=clip_tokenizer(folder / "tok2"), text_encoder_3=t5_encoder(len(t5_tok), text_seed + 2),
        tokenizer_3=t5_tok)
    pipe.save_pretrained(folder)
    return folder


def save_flux(folder: Path, seed: int = 0, text_seed: int = 0, guidance: bool = True) -> Path:
    """A tiny FLUX-style folder: double + single stream blocks, guidance embedding, packed 4-channel latents."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    t5_tok = t5_tokenizer()
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), vae=flow_vae(text_seed, 0.1159, 0.3611),
        text_encoder=clip_encoder(text_seed), tokenizer=clip_tokenizer(folder / "tok"),
        text_encoder_2=t5_encoder(len(t5_tok), text_seed + 2), tokenizer_2=t5_tok,
        transformer=flux_transformer(seed, guidance))
    pipe.save_pretrained(folder)
    return folder


def save_transformer_lora(folder: Path, transformer: Any, family: str, seed: int = 1, rank: int = 4,
                          alpha: float = 8.0) -> Path:
    """A random (non-zero) peft LoRA on the transformer's attention projections, in diffusers format."""
    from diffusers import FluxPipeline, StableDiffusion3Pipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
                        target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    transformer.add_adapter(config, adapter_name="tmp")
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    layers = get_peft_model_state_dict(transformer, adapter_name="tmp")
    cls: Any = FluxPipeline if family == "flux" else StableDiffusion3Pipeline
    cls.save_lora_weights(folder, transformer_lora_layers=layers, safe_serialization=True)
    transformer.delete_adapters("tmp")
    return folder / "pytorch_lora_weights.safetensors"


def flow_card(name: str, models: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A ``flow`` card dict over local folders (16-px images, 3 steps, tiny T5 length)."""
    options = {"max_sequence_length": T5_LENGTH, **fields.pop("options", {})}
    return {"schema": 1, "name": name, "kind": "flow", "description": f"test pair {name}", "models": models,
            "defaults": {"steps": 3, "width": 16, "height": 16}, "options": options, **fields}


def write_flow_card(home: Path, name: str, models: dict[str, Any], **fields: Any) -> Path:
    """A user flow card in ``$W2SD_HOME/pairs``."""
    folder = home / "pairs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(flow_card(name, models, **fields)))
    return path
