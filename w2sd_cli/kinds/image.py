"""The ``diffusers`` kind: text-to-image pairs on SD 1.x/2.x and SDXL, one card per difference.

Each side (strong, weak, final) picks its own model, LoRA + scale, CFG, prompt and ControlNet (see
``image_sides`` for the inheritance rules), so checkpoint, LoRA, guidance, prompt and pipeline pairs,
and any mix of them, are all cards of this one kind. Sampling goes through the shared sampler.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from w2sd_cli.cards import PairCard, Strict
from w2sd_cli.errors import CardError, InputError, ModelError
from w2sd_cli.kinds.base import GenRequest, GenResult, PairKind
from w2sd_cli.kinds.image_sides import render_prompt, resolve_sides

if TYPE_CHECKING:
    from w2sd_cli.kinds.image_session import ImageSession
    from w2sd_cli.sampling import Callback

COMPARE = (("weak", "weak"), ("strong", "strong"), ("w2sd", "W2SD"))


class DiffusersOptions(Strict):
    """Options of a ``diffusers`` card."""

    prompt: str = Field("A Lego-style man is in the car.", description="prompt used when none is given")
    needs_strong_prompt: bool = Field(False, description="prompt pairs: --strong-prompt is required")
    clip_skip: int = Field(0, ge=0, le=10, description="text-encoder layers to skip from the end")
    config_from: dict[str, str] = Field({}, description="single-file model key -> diffusers model key with its configs")
    control_preprocess: Literal["auto", "canny", "none"] = "auto"
    canny_low: float = Field(100.0, ge=0)
    canny_high: float = Field(200.0, ge=0)


class DiffusersKind(PairKind):
    """Text-to-image pairs on diffusers SD/SDXL models: LoRA scale, checkpoint, CFG, prompt and ControlNet."""

    name = "diffusers"
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

    def generate(self, card: PairCard, request: GenRequest, observer: Callback | None = None) -> GenResult:
        import torch

        from w2sd_cli.kinds.image_session import ImageSession

        self.check(card)
        options: DiffusersOptions = self.options(card)
        prompt = request.prompt or options.prompt
        if options.needs_strong_prompt and not request.strong_prompt:
            raise InputError(f"Pair {card.name} compares a refined prompt with the raw one: give --strong-prompt "
                             "(the refined prompt) as well as the prompt.")
        sides = resolve_sides(card, request.cfg)
        if any(spec.control for spec in sides.values()) and request.control_image is None:
            raise InputError(f"Pair {card.name} conditions a ControlNet on an image: give --control-image PATH "
                             "(an edge map, or a photo to turn into one).")
        session = ImageSession.open(card, request, sides, options, observer)
        files: list[Path] = []
        images: list[dict[str, Any]] = []
        with torch.no_grad():
            for index in range(request.num_images):
                seed = (request.seed or 0) + index
                files += self._one_seed(card, request, session, prompt, seed, images, observer)
        summary = {"pair": card.name, "kind": self.name, "card_digest": card.digest(), "prompt": prompt,
                   "device": str(session.device), "dtype": str(session.dtype).removeprefix("torch."),
                   "size": f"{session.width}x{session.height}", "steps": len(session.pair.grid) - 1,
                   "lam": request.lam, "images": images, "embeddings": session.embeddings_computed,
                   "shared_components": session.shared}
        return GenResult(files=files, summary=summary)

    def _one_seed(self, card: PairCard, request: GenRequest, session: ImageSession, prompt: str, seed: int,
                  images: list[dict[str, Any]], observer: Callback | None) -> list[Path]:
        from w2sd_cli.images import image_name, panel, save_png

        methods = COMPARE if request.compare else (("w2sd", "W2SD"),)
        written, shown = [], []
        for method, label in methods:
            started = time.perf_counter()
            result, image = session.sample(method, seed, request, observer)
            seconds = round(time.perf_counter() - started, 3)
            recipe = session.recipe(card, request, prompt, seed, method, result, seconds)
            written.append(save_png(image, request.out / image_name(card.name, seed, method), recipe))
            shown.append((label, image))
            images.append({"seed": seed, "method": method, "nfe": result.nfe, "cost": result.cost,
                           "seconds": seconds, "file": str(written[-1])})
        if request.compare:
            recipe = session.recipe(card, request, prompt, seed, "w2sd", None, None)
            written.append(save_png(panel(shown), request.out / image_name(card.name, seed, "compare"), recipe))
        return written


def side_prompts(sides: dict[str, Any], prompt: str, strong_prompt: str | None) -> dict[str, str]:
    """The rendered prompt of each side."""
    return {name: render_prompt(spec.prompt, prompt, strong_prompt, name) for name, spec in sides.items()}


def model_error_for_missing(key: str, card: PairCard) -> ModelError:
    """The error for a model that is neither local nor in the store."""
    return ModelError(f"Pair {card.name}: model {key!r} is not available locally. Run `w2sd pull {card.name}`.")
