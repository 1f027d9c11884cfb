"""``from_pipelines``: W2SD over your own diffusers SD 1.x/2.x, SDXL, SD3.x or FLUX.1 pipelines, with no card.

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
        guidance: the distilled guidance of a guidance-distilled model (FLUX.1-dev).
        lora_scales: adapter name -> scale on the pipeline's UNet (and text encoders that carry the adapter).
        prompt: a template; ``{prompt}`` is the caller's prompt.
        negative_prompt: the negative prompt of this side.
    """

    cfg: float | None = None
    guidance: float | None = None
    lora_scales: dict[str, float] | None = None
    prompt: str | None = None
    negative_prompt: str | None = None


def from_pipelines(strong: Any, weak: Any, final: Any = None, *, strong_side: SideKnobs | None = None,
                   weak_side: SideKnobs | None = None, final_side: SideKnobs | None = None, steps: int = 50,
                   text_encoder_lora: bool = True, name: str = "pipelines") -> Pair:
    """A ``Pair`` over already-loaded diffusers pipelines (SD 1.x/2.x, SDXL, SD3.x or FLUX.1, all of one family).

    Args:
        strong, weak: the strong and weak pipelines (they may be the same object with different LoRA scales).
        final: the pipeline of the closing denoise step (default: ``strong``).
        strong_side, weak_side, final_side: each side's CFG, distilled guidance, LoRA scales, prompt template and
            negative prompt; the final side inherits what it leaves unset from the strong side, except its CFG on
            SD/SDXL (default 5.5).
        steps: default sampling steps.
        text_encoder_lora: apply each side's LoRA scales to text encoders that carry the adapter too (``False``:
            prompts are encoded with the LoRA switched off, as the paper's reference code does).
        name: the pair's name in recipes.

    Returns:
        A ``Pair``; ``generate``/``compare`` work as for a named pair.
    """
    from dataclasses import replace

    from w2sd_cli.kinds.diffusers import DiffusersKind
    from w2sd_cli.kinds.diffusers_pair import DiffusersPair
    from w2sd_cli.kinds.diffusers_sides import DiffusersOptions

    pipes = {"strong": strong, "weak": weak, "final": final if final is not None else strong}
    knobs = {"strong": strong_side or SideKnobs(), "weak": weak_side or SideKnobs(), "final": final_side or SideKnobs()}
    # one model key per distinct pipeline: sides over the same pipeline are the same model to the method's rules
    keys = {role: next(r for r, p in pipes.items() if p is pipe) for role, pipe in pipes.items()}
    models = {key: components_of(pipes[key]) for key in dict.fromkeys(keys.values())}
    if len({m.family for m in models.values()}) > 1:
        from w2sd_cli.errors import InputError

        raise InputError("from_pipelines: the pipelines are of different families "
                         f"({', '.join(sorted({m.family for m in models.values()}))}); all sides must share a latent "
                         "space.")
    card = parse_card({
        "schema": 1, "name": name, "kind": "diffusers",
        "description": "W2SD over caller-supplied diffusers pipelines (w2sd_cli.from_pipelines).",
        "models": {key: {"path": f"<{type(pipes[key]).__name__} given to from_pipelines>"} for key in models},
        "strong": _side(keys["strong"], knobs["strong"]), "weak": _side(keys["weak"], knobs["weak"]),
        "final": _side(keys["final"], knobs["final"]), "defaults": {"steps": steps},
        "options": {"text_encoder_lora": text_encoder_lora},
    }, "from_pipelines")
    kind = DiffusersKind()
    options: DiffusersOptions = kind.options(card)
    final_knobs = knobs["final"].lora_scales if knobs["final"].lora_scales is not None else knobs["strong"].lora_scales
    scales = {**{role: knobs[role].lora_scales or {} for role in ("strong", "weak")}, "final": final_knobs or {}}
    sides = {role: replace(spec, adapter_scales=tuple(sorted(scales[role].items())))
             for role, spec in kind.resolve(card).items()}
    net = models["strong"].net
    device, dtype = net.device, net.dtype
    loaded = DiffusersPair.assemble(card, options, sides, models, device, dtype,
                                    {key: {"pipeline": type(pipes[key]).__name__} for key in models})
    load = LoadSettings(device=str(device), dtype=str(dtype).removeprefix("torch."))
    return Pair(card, kind, Engine(card, kind, loaded, Settings.resolve(card), load))


def components_of(pipe: Any) -> Any:
    """The parts of a diffusers SD, SDXL, SD3 or FLUX pipeline, as w2sd's components."""
    from w2sd_cli.errors import InputError

    transformer = getattr(pipe, "transformer", None)
    if getattr(pipe, "vae", None) is None or (getattr(pipe, "unet", None) is None and transformer is None):
        raise InputError(f"from_pipelines: {type(pipe).__name__} has no UNet or transformer and VAE; give Stable "
                         "Diffusion (1.x/2.x), SDXL, SD3 or FLUX pipelines.")
    if transformer is not None:
        return _flow_components(pipe)
    from w2sd_cli.adapters.models import Components

    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    encoders = [pipe.text_encoder, pipe.text_encoder_2] if sdxl else [pipe.text_encoder]
    tokenizers = [pipe.tokenizer, pipe.tokenizer_2] if sdxl else [pipe.tokenizer]
    force_zeros = bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False)) if sdxl else False
    return Components("sdxl" if sdxl else "sd", pipe.unet, pipe.vae, encoders, tokenizers, dict(pipe.scheduler.config),
                      force_zeros, {"source": type(pipe).__name__}, _container=pipe)


def _flow_components(pipe: Any) -> Any:
    from w2sd_cli.adapters.flow import FlowComponents

    flux = "Flux" in type(pipe.transformer).__name__
    count = 2 if flux else 3
    names = ["text_encoder"] + [f"text_encoder_{i}" for i in range(2, count + 1)]
    encoders = [getattr(pipe, n, None) for n in names]
    tokenizers = [getattr(pipe, n.replace("text_encoder", "tokenizer"), None) for n in names]
    return FlowComponents("flux" if flux else "sd3", pipe.transformer, pipe.vae, encoders, tokenizers,
                          dict(pipe.scheduler.config), {"source": type(pipe).__name__}, _container=pipe)


def _side(model: str, knobs: SideKnobs) -> dict[str, Any]:
    side: dict[str, Any] = {"model": model}
    for key in ("cfg", "guidance", "prompt", "negative_prompt"):
        value = getattr(knobs, key)
        if value is not None:
            side[key] = value
    return side
