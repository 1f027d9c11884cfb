"""``from_pipelines``: W2SD over your own diffusers SD 1.x/2.x or SDXL pipelines, with no card.

    >>> from diffusers import StableDiffusionPipeline
    >>> base = StableDiffusionPipeline.from_pretrained(...)        # your weak model
    >>> tuned = StableDiffusionPipeline.from_pretrained(...)       # your strong model
    >>> pair = w2sd_cli.from_pipelines(tuned, base, final_side=SideKnobs(cfg=5.5))
    >>> pair.compare("a lighthouse at dusk", seeds=[0, 1]).panel().save("compare.png")

Pipelines that share one UNet with LoRA adapters make a LoRA pair: give each side its adapter scales.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from w2sd_cli.api import Pair
from w2sd_cli.cards import parse_card
from w2sd_cli.engine import Engine
from w2sd_cli.kinds.base import LoadSettings, Settings


@dataclass(frozen=True)
class SideKnobs:
    """What one side sets (``None``: w2sd's defaults: CFG 1.0 on the reflection sides, 5.5 on the final side).

    Attributes:
        cfg: the CFG scale (0 = unconditional only, 1 = conditional only).
        lora_scales: adapter name -> scale on the pipeline's UNet (and text encoders that carry the adapter).
        prompt: a template; ``{prompt}`` is the caller's prompt.
        negative_prompt: the negative prompt of this side.
    """

    cfg: float | None = None
    lora_scales: dict[str, float] | None = None
    prompt: str | None = None
    negative_prompt: str | None = None


def from_pipelines(strong: Any, weak: Any, final: Any = None, *, strong_side: SideKnobs | None = None,
                   weak_side: SideKnobs | None = None, final_side: SideKnobs | None = None, steps: int = 50,
                   name: str = "pipelines") -> Pair:
    """A ``Pair`` over already-loaded diffusers pipelines (SD 1.x/2.x or SDXL, all of one family).

    Args:
        strong, weak: the strong and weak pipelines (they may be the same object with different LoRA scales).
        final: the pipeline of the closing denoise step (default: ``strong``).
        strong_side, weak_side, final_side: each side's CFG, LoRA scales, prompt template and negative prompt;
            the final side inherits what it leaves unset from the strong side, except its CFG (default 5.5).
        steps: default sampling steps.
        name: the pair's name in recipes.

    Returns:
        A ``Pair``; ``generate``/``compare`` work as for a named pair.
    """
    from w2sd_cli.adapters.lora import LoraScales
    from w2sd_cli.kinds.image import DiffusersKind, DiffusersOptions
    from w2sd_cli.kinds.image_session import DiffusersPair, prompt_encoders, unique

    pipes = {"strong": strong, "weak": weak, "final": final if final is not None else strong}
    knobs = {"strong": strong_side or SideKnobs(), "weak": weak_side or SideKnobs(), "final": final_side or SideKnobs()}
    models = {role: components_of(pipe) for role, pipe in pipes.items()}
    if len({m.family for m in models.values()}) > 1:
        from w2sd_cli.errors import InputError

        raise InputError("from_pipelines: the pipelines mix SD and SDXL; both sides must share a latent space.")
    card = parse_card({
        "schema": 1, "name": name, "kind": "diffusers",
        "description": "W2SD over caller-supplied diffusers pipelines (w2sd_cli.from_pipelines).",
        "models": {role: {"path": f"<{type(pipe).__name__} given to from_pipelines>"} for role, pipe in pipes.items()},
        "strong": _side("strong", knobs["strong"]), "weak": _side("weak", knobs["weak"]),
        "final": _side("final", knobs["final"]), "defaults": {"steps": steps},
    }, "from_pipelines")
    unet = models["strong"].unet
    device, dtype = unet.device, unet.dtype
    lora = LoraScales.scan(unique([c.unet for c in models.values()]))
    options = DiffusersOptions()
    encoders = prompt_encoders(models, device, dtype, options.clip_skip)
    scales = {role: dict(k.lora_scales or {}) for role, k in knobs.items()}
    scales["final"] = dict(knobs["final"].lora_scales if knobs["final"].lora_scales is not None else scales["strong"])
    scales["weak_plain"] = scales["weak"]
    loaded = DiffusersPair(card, options, device, dtype, models, encoders, lora,
                           {role: {"pipeline": type(p).__name__} for role, p in pipes.items()}, adapter_scales=scales)
    load = LoadSettings(device=str(device), dtype=str(dtype).removeprefix("torch."))
    kind = DiffusersKind()
    return Pair(card, kind, Engine(card, kind, loaded, Settings.resolve(card), load))


def components_of(pipe: Any) -> Any:
    """The parts of a diffusers SD or SDXL pipeline, as w2sd's ``Components``."""
    from w2sd_cli.adapters.models import Components
    from w2sd_cli.errors import InputError

    if getattr(pipe, "unet", None) is None or getattr(pipe, "vae", None) is None:
        raise InputError(f"from_pipelines: {type(pipe).__name__} has no UNet and VAE; give Stable Diffusion "
                         "(1.x/2.x) or SDXL pipelines.")
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    encoders = [pipe.text_encoder, pipe.text_encoder_2] if sdxl else [pipe.text_encoder]
    tokenizers = [pipe.tokenizer, pipe.tokenizer_2] if sdxl else [pipe.tokenizer]
    force_zeros = bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False)) if sdxl else False
    return Components("sdxl" if sdxl else "sd", pipe.unet, pipe.vae, encoders, tokenizers, dict(pipe.scheduler.config),
                      force_zeros, {"source": type(pipe).__name__}, _container=pipe)


def _side(role: str, knobs: SideKnobs) -> dict[str, Any]:
    side: dict[str, Any] = {"model": role}
    for key in ("cfg", "prompt", "negative_prompt"):
        value = getattr(knobs, key)
        if value is not None:
            side[key] = value
    return side
