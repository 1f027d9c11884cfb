"""The ``diffusers`` kind: text-to-image pairs on SD 1.x/2.x and SDXL, one card per difference.

Each side (strong, weak, final) picks its own model, LoRA + scale, CFG, prompt and ControlNet (see
``image_sides`` for the inheritance rules), so checkpoint, LoRA, guidance, prompt and pipeline pairs,
and any mix of them, are all cards of this one kind. Sampling goes through the shared sampler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from w2sd_cli.cards import PairCard, Strict
from w2sd_cli.errors import CardError, ModelError
from w2sd_cli.kinds.base import LoadSettings, PairKind
from w2sd_cli.kinds.image_sides import render_prompt, resolve_sides

if TYPE_CHECKING:
    from w2sd_cli.kinds.image_session import DiffusersPair


class DiffusersOptions(Strict):
    """Options of a ``diffusers`` card."""

    needs_strong_prompt: bool = Field(False, description="prompt pairs: --strong-prompt is required")
    clip_skip: int = Field(0, ge=0, le=10, description="text-encoder layers to skip from the end")
    text_encoder_lora: bool = Field(True, description="apply each side's LoRA scale to the text encoders that carry "
                                    "the LoRA too (false: encode prompts with the LoRA switched off, as the paper's "
                                    "reference code does)")
    config_from: dict[str, str] = Field({}, description="single-file model key -> diffusers model key with its configs")
    control_preprocess: Literal["auto", "canny", "none"] = "auto"
    canny_low: float = Field(100.0, ge=0)
    canny_high: float = Field(200.0, ge=0)


class DiffusersKind(PairKind):
    """Text-to-image pairs on diffusers SD/SDXL models: LoRA scale, checkpoint, CFG, prompt and ControlNet."""

    name = "diffusers"
    takes = frozenset({"strong_prompt", "negative_prompt", "control_image", "cfg", "width", "height", "device",
                       "dtype", "offload"})
    summary = "SD 1.x/2.x and SDXL pairs: per-side model, LoRA scale, CFG, prompt and ControlNet"
    options_model = DiffusersOptions

    def check(self, card: PairCard) -> None:
        options: DiffusersOptions = self.options(card)
        resolve_sides(card)
        for key, base in options.config_from.items():
            for name in (key, base):
                if name not in card.models:
                    raise CardError(f"pair {card.name!r}: options.config_from names {name!r}, not in models.")
            if card.models[base].format != "diffusers":
                raise CardError(f"pair {card.name!r}: options.config_from[{key!r}] must name a diffusers folder.")
        for key, ref in card.models.items():
            if ref.format == "single-file" and key not in options.config_from:
                raise CardError(f"pair {card.name!r}: single-file model {key!r} needs options.config_from[{key!r}] "
                                "naming the diffusers base model whose configs it uses (never fetched at load time).")

    def model_keys(self, card: PairCard) -> list[str]:
        sides = resolve_sides(card)
        keys: list[str] = []
        for spec in sides.values():
            for key in (spec.model, spec.lora, spec.control):
                if key is not None and key not in keys:
                    keys.append(key)
        for key in list(keys):
            base = self.options(card).config_from.get(key)
            if base is not None and base not in keys:
                keys.append(base)
        return keys

    def load(self, card: PairCard, settings: LoadSettings) -> DiffusersPair:
        """Every model, LoRA and ControlNet the card's sides use, on the device once."""
        from w2sd_cli.kinds.image_session import DiffusersPair

        self.check(card)
        return DiffusersPair.open(card, self.options(card), settings)


def side_prompts(sides: dict[str, Any], prompt: str, strong_prompt: str | None) -> dict[str, str]:
    """The rendered prompt of each side."""
    return {name: render_prompt(spec.prompt, prompt, strong_prompt, name) for name, spec in sides.items()}


def model_error_for_missing(key: str, card: PairCard) -> ModelError:
    """The error for a model that is neither local nor in the store."""
    return ModelError(f"Pair {card.name}: model {key!r} is not available locally. Run `w2sd pull {card.name}`.")
