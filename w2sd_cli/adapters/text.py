"""Prompt embeddings for SD 1.x/2.x and SDXL, with clip-skip, SDXL pooled embeddings and time ids.

Embeddings are computed once per distinct (prompt, text-encoder LoRA scales) and reused across steps
and sides. Clip-skip is done here (diffusers' SD1 ``clip_skip`` breaks on transformers 5): with
``clip_skip = n`` SD takes the hidden states ``n`` layers before the last and applies the final layer
norm; SDXL always takes the penultimate layer and skips ``n`` more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from w2sd_cli.adapters.lora import LoraScales
from w2sd_cli.adapters.unet import Conditioning


@dataclass
class PromptEncoder:
    """Turns prompts into ``Conditioning`` for one model family.

    Args:
        family: ``sd`` (one CLIP text encoder) or ``sdxl`` (two, the second with a projection).
        tokenizers, encoders: matching lists.
        device, dtype: where embeddings go and the UNet's dtype.
        clip_skip: layers to skip from the end (0 = diffusers' default).
        force_zeros_for_empty_prompt: SDXL's rule when no negative prompt is given (zeros, not encoded "").
        lora: the text encoders' LoRA layers, switched per call (``None``: they carry none); scales of
            adapters only the UNet carries do not change the embedding and are not part of the cache key.
    """

    family: str
    tokenizers: Sequence[Any]
    encoders: Sequence[Any]
    device: torch.device
    dtype: torch.dtype
    clip_skip: int = 0
    force_zeros_for_empty_prompt: bool = False
    lora: LoraScales | None = None
    _cache: dict[tuple[Any, ...], tuple[Tensor, Tensor | None]] = field(default_factory=dict)

    def encode(self, prompt: str | None, lora_scales: Mapping[str, float] | None = None, *, negative: bool = False,
               size: tuple[int, int] | None = None) -> Conditioning:
        """The conditioning of one prompt (SDXL: plus pooled embeddings and time ids for ``size`` = (h, w)).

        A negative prompt of ``None`` (none given at all) is SDXL's zeros where the model asks for them
        (``force_zeros_for_empty_prompt``), as diffusers does; an explicit ``""`` is encoded."""
        adapters = self.lora.adapters if self.lora is not None else set()
        scales = {k: v for k, v in (lora_scales or {}).items() if k in adapters}
        key = (prompt, negative, tuple(sorted(scales.items())))
        if key not in self._cache:
            self._cache[key] = self._embed(prompt, scales, negative)
        states, pooled = self._cache[key]
        if self.family != "sdxl":
            return Conditioning(states)
        if pooled is None or size is None:
            raise ValueError("SDXL conditioning needs pooled embeddings and an image size")
        h, w = size
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=self.dtype, device=self.device)
        return Conditioning(states, {"text_embeds": pooled, "time_ids": time_ids})

    @property
    def cached(self) -> int:
        """How many distinct embeddings were computed so far."""
        return len(self._cache)

    def token_counts(self, prompt: str) -> list[tuple[int, int]]:
        """(tokens used, tokens kept) of the first tokenizer, for truncation warnings."""
        tokenizer = self.tokenizers[0]
        return [(len(tokenizer(prompt, truncation=False).input_ids), int(tokenizer.model_max_length))]

    def _embed(self, prompt: str | None, scales: dict[str, float], negative: bool) -> tuple[Tensor, Tensor | None]:
        if self.lora is not None:
            self.lora.apply(scales)
        if self.family == "sdxl" and negative and prompt is None and self.force_zeros_for_empty_prompt:
            states, pooled = self._sdxl("")
            return torch.zeros_like(states), torch.zeros_like(pooled)
        prompt = prompt or ""
        if self.family == "sdxl":
            return self._sdxl(prompt)
        return self._sd(prompt), None

    @torch.no_grad()
    def _sd(self, prompt: str) -> Tensor:
        encoder = self.encoders[0]
        ids = self._ids(self.tokenizers[0], prompt)
        out = encoder(ids, output_hidden_states=self.clip_skip > 0)
        if self.clip_skip > 0:
            norm = getattr(encoder, "text_model", encoder).final_layer_norm  # transformers 5 dropped .text_model
            states = norm(out.hidden_states[-(self.clip_skip + 1)])
        else:
            states = out[0]
        return states.to(self.device, self.dtype)

    @torch.no_grad()
    def _sdxl(self, prompt: str) -> tuple[Tensor, Tensor]:
        parts, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.encoders, strict=True):
            out = encoder(self._ids(tokenizer, prompt), output_hidden_states=True)
            parts.append(out.hidden_states[-(self.clip_skip + 2)])
            pooled = out[0]  # the last encoder's projected pooled embedding
        assert pooled is not None
        states = torch.cat(parts, dim=-1)
        return states.to(self.device, self.dtype), pooled.to(self.device, self.dtype)

    def _ids(self, tokenizer: Any, prompt: str) -> Tensor:
        encoder_device = next(self.encoders[0].parameters()).device
        tokens = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                           return_tensors="pt")
        return tokens.input_ids.to(encoder_device)
