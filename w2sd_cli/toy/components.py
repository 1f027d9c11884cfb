"""The shapes pair's components, built locally from configs: tokenizer, text encoder, UNet, scheduler.

Nothing here downloads anything; heavy libraries are imported inside the functions.
"""

from __future__ import annotations

from typing import Any

from w2sd_cli.toy.world import vocabulary

MAX_TOKENS = 10
SPECIAL = ("<pad>", "<unk>", "<bos>", "<eos>")
TEXT_WIDTH = 64

SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "prediction_type": "v_prediction",
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "timestep_spacing": "trailing",
}
"""Cosine betas suit 32×32 pixels. v-prediction, because the cosine schedule's last level has ā ≈ 2e-9: an
eps-predicting model's first DDIM step from there divides its error by sqrt(ā) (measured: speckled images);
a v-prediction gives x0 directly. ``clip_sample`` keeps under-trained pixel-space sampling in range."""

UNET_CONFIG: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (16, 32, 64),
    "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "layers_per_block": 1,
    "cross_attention_dim": TEXT_WIDTH,
    "attention_head_dim": 16,
    "norm_num_groups": 8,
}
"""Cross-attention at 8×8 (down, middle, up): coarse enough that zero padding tells a query where it
sits, so "on the left" can steer layout at the high-noise steps that decide it; ~1 M parameters keeps
a one-thread training step near 0.25 s."""


def build_tokenizer() -> Any:
    """A word-level ``PreTrainedTokenizerFast`` over the caption vocabulary (``center`` reads as ``centre``).

    Punctuation reads as a space, so "a blue square, at the top." has no unknown tokens.
    """
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIAL, *vocabulary()])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Lowercase(), normalizers.Replace(Regex(r"[^\w\s]"), " "),
         normalizers.Replace("center", "centre"), normalizers.Replace("middle", "centre")])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=MAX_TOKENS)


def text_config(vocab_size: int) -> Any:
    """A two-layer CLIP text encoder, 64 wide."""
    from transformers.models.clip.configuration_clip import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=2 * TEXT_WIDTH,
                          num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=MAX_TOKENS,
                          projection_dim=TEXT_WIDTH, pad_token_id=0, bos_token_id=2, eos_token_id=3)


def build_text_encoder(vocab_size: int) -> Any:
    """A freshly initialised ``CLIPTextModel``."""
    from transformers.models.clip.modeling_clip import CLIPTextModel

    return CLIPTextModel(text_config(vocab_size))


def build_unet() -> Any:
    """A freshly initialised pixel-space ``UNet2DConditionModel``."""
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def cut_warning(tokenizer: Any, prompt: str) -> list[str]:
    """A warning when ``prompt`` has more tokens than the text encoder reads (``MAX_TOKENS``, ends included)."""
    count = len(tokenizer(prompt, truncation=True, max_length=1 << 20).input_ids)  # no "too long" log line
    if count <= MAX_TOKENS:
        return []
    kept = tokenizer.decode(tokenizer(prompt, max_length=MAX_TOKENS, truncation=True).input_ids,
                            skip_special_tokens=True)
    return [f"the prompt is {count} tokens long, but the shapes pair reads only {MAX_TOKENS} (ends included): it "
            f"sampled from {kept!r}; the rest was cut."]


def encode(tokenizer: Any, text_encoder: Any, prompts: list[str]) -> Any:
    """Last hidden states of the prompts, padded to ``MAX_TOKENS``."""
    ids = tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids, return_dict=False)[0]
