"""open_clip state dicts (HPSv2's checkpoints) renamed to transformers' ``CLIPModel`` layout."""

from __future__ import annotations

from typing import Any

_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
          "attn.out_proj": "self_attn.out_proj"}
_TOP = {"token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight", "ln_final.bias": "text_model.final_layer_norm.bias",
        "logit_scale": "logit_scale",
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
        "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias"}
_TRANSPOSED = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}
_SKIP = ("attn_mask",)


def open_clip_to_transformers(state: dict[str, Any]) -> dict[str, Any]:
    """Rename an open_clip ViT CLIP state dict for ``transformers.CLIPModel``.

    Fused ``in_proj`` attention weights are split into q/k/v; the two projections are transposed.
    Keys it does not know are kept as they are (``load_state_dict`` then names them).
    """
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key in _SKIP:
            continue
        if key in _TOP:
            out[_TOP[key]] = value
        elif key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.T.contiguous()
        elif ".resblocks." in key:
            out.update(_block(key, value))
        else:
            out[key] = value
    return out


def _block(key: str, value: Any) -> dict[str, Any]:
    tower, _, rest = key.partition("transformer.resblocks.")
    prefix = "vision_model" if tower.startswith("visual") else "text_model"
    index, _, name = rest.partition(".")
    base = f"{prefix}.encoder.layers.{index}."
    if name.startswith("attn.in_proj_"):
        kind = name.removeprefix("attn.in_proj_")
        q, k, v = value.chunk(3, dim=0)
        return {f"{base}self_attn.{p}_proj.{kind}": t.contiguous() for p, t in zip("qkv", (q, k, v), strict=True)}
    for old, new in _BLOCK.items():
        if name.startswith(old + "."):
            return {base + new + name[len(old):]: value}
    return {key: value}
