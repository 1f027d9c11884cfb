"""The sides of a ``diffusers`` card (pure data, no torch): its options, side knobs and how they resolve.

The kind (``w2sd_cli.kinds.diffusers``) and the loaded pair (``w2sd_cli.kinds.diffusers_pair``) both read this
module; neither imports the other at module level, and this module imports neither.

The ``diffusers`` kind: text-to-image pairs on SD 1.x/2.x, SDXL, SD3.x and FLUX.1, one card per difference.

Each side (strong, weak, final) picks its own model, LoRA + scale, CFG, distilled guidance, prompt and
ControlNet, so checkpoint, LoRA, guidance, prompt and pipeline pairs, and any mix of them, are all cards of
this one kind; what differs between model families lives in ``w2sd_cli.adapters.families``. ``kind: flow``
(the SD3/FLUX kind before they merged) is an alias. Side rules (pure data, no torch):

- ``strong.model`` defaults to the card's first model checkpoint; ``weak.model`` to the strong one.
- ``final`` (the closing denoise step) inherits every knob it leaves unset from ``strong``, except ``cfg`` on
  SD 1.x/2.x and SDXL (default 5.5, the paper's denoise CFG).
- ``weak`` inherits the model, the negative prompt, the guidance and, when it sets only ``lora_scale``, the
  LoRA; never the prompt template or the ControlNet (those are what a prompt or pipeline pair differs in).
- Reflection CFG defaults to 1.0 on both sides; a LoRA named without a scale has scale 1.0. ``guidance``
  applies to guidance-distilled models only (FLUX.1-dev) and defaults to 3.5 there.
- ``--cfg`` sets the final side's distilled guidance on a guidance-distilled model, its CFG otherwise.
- The plain weak baseline is the method table's rule (``w2sd_cli.methods.plain_weak``) over ``cfg`` and
  ``guidance``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from pydantic import Field

from w2sd_cli.cards import PairCard, Strict
from w2sd_cli.errors import CardError, InputError

CHECKPOINT_FORMATS = ("diffusers", "single-file")
DEFAULT_FINAL_CFG = 5.5
DEFAULT_REFLECT_CFG = 1.0
GUIDANCE_KNOBS = ("cfg", "guidance")


class DiffusersOptions(Strict):
    """Options of a ``diffusers`` card."""

    needs_strong_prompt: bool = Field(False, description="prompt pairs: --strong-prompt is required")
    clip_skip: int = Field(0, ge=0, le=10, description="text-encoder layers to skip from the end (SD, SDXL)")
    text_encoder_lora: bool = Field(True, description="apply each side's LoRA scale to the text encoders that carry "
                                    "the LoRA too (false: encode prompts with the LoRA switched off, as the paper's "
                                    "reference code does)")
    config_from: dict[str, str] = Field({}, description="single-file model key -> diffusers model key with its configs")
    components_from: dict[str, str] = Field({}, description="model key -> model key whose VAE, text encoders and "
                                            "tokenizers it uses (SD3/FLUX: only its transformer and scheduler load)")
    max_sequence_length: int | None = Field(None, ge=1, le=512, description="T5 tokens (default: SD3 256, "
                                            "FLUX 512)")
    control_preprocess: Literal["auto", "canny", "none"] = "auto"
    canny_low: float = Field(100.0, ge=0)
    canny_high: float = Field(200.0, ge=0)


class DiffusersSide(Strict):
    """The knobs of one side of a ``diffusers`` card."""

    model: str | None = Field(None, description="key into the card's models")
    lora: str | None = Field(None, description="key into the card's models (a LoRA)")
    lora_scale: float | None = None
    cfg: float | None = Field(None, ge=0, description="0 = unconditional only, 1 = conditional only")
    guidance: float | None = Field(None, ge=0, description="distilled guidance of a guidance-embedding model "
                                   "(FLUX.1-dev), an input of its one network call")
    prompt: str | None = Field(None, description="prompt template; {prompt} is the user's prompt")
    negative_prompt: str | None = None
    control: str | None = Field(None, description="key into the card's models (a ControlNet; SD, SDXL)")
    control_scale: float | None = None


@dataclass(frozen=True)
class SideSpec:
    """One fully resolved side (``prompt`` is the template; ``rendered_prompt`` the text for one condition)."""

    model: str
    lora: str | None
    lora_scale: float
    cfg: float
    guidance: float | None
    prompt: str
    negative_prompt: str | None
    """``None``: none given (SDXL then uses zeros, as diffusers does); ``""`` is encoded."""
    control: str | None
    control_scale: float
    rendered_prompt: str = ""
    adapter_scales: tuple[tuple[str, float], ...] | None = None
    """``from_pipelines``: adapter name -> scale instead of the card's one LoRA."""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        scales = out.pop("adapter_scales")
        return out if scales is None else {**out, "adapter_scales": dict(scales)}


def resolve_sides(card: PairCard, sides: dict[str, DiffusersSide], final_cfg: float | None = DEFAULT_FINAL_CFG
                  ) -> dict[str, SideSpec]:
    """``strong``, ``weak`` and ``final`` of a card.

    Args:
        sides: the card's sides as the kind validated them.
        final_cfg: the final side's CFG when it sets none (``None``: the strong side's).
    """
    s, w, f = sides["strong"], sides["weak"], sides["final"]
    strong = _spec(s, s.model or _first_checkpoint(card), None, None, None, card, "strong")
    weak_lora = w.lora or (strong.lora if w.lora_scale is not None else None)
    weak = _spec(w, w.model or strong.model, weak_lora, strong.guidance, strong.negative_prompt, card, "weak")
    final = SideSpec(
        model=f.model or strong.model, lora=f.lora or strong.lora,
        lora_scale=f.lora_scale if f.lora_scale is not None else strong.lora_scale,
        cfg=f.cfg if f.cfg is not None else (final_cfg if final_cfg is not None else strong.cfg),
        guidance=f.guidance if f.guidance is not None else strong.guidance,
        prompt=f.prompt or strong.prompt,
        negative_prompt=f.negative_prompt if f.negative_prompt is not None else strong.negative_prompt,
        control=f.control or strong.control,
        control_scale=f.control_scale if f.control_scale is not None else strong.control_scale)
    out = {"strong": strong, "weak": weak, "final": final}
    for name, spec in out.items():
        _check_formats(card, name, spec)
    return out


def render_prompt(template: str, prompt: str, strong_prompt: str | None, side: str) -> str:
    """A side's prompt: ``{prompt}`` is the user's prompt, or on strong/final sides ``--strong-prompt`` if given."""
    text = strong_prompt if (strong_prompt is not None and side in ("strong", "final")) else prompt
    return template.replace("{prompt}", text)


def with_cfg_flag(spec: SideSpec, cfg: float | None, distilled: bool) -> SideSpec:
    """``--cfg`` on the final side: its distilled guidance on a guidance-distilled model, its CFG otherwise."""
    if cfg is None:
        return spec
    return replace(spec, guidance=cfg) if distilled else replace(spec, cfg=cfg)


def _spec(side: DiffusersSide, model: str, inherited_lora: str | None, guidance: float | None, negative: str | None,
          card: PairCard, name: str) -> SideSpec:
    lora = side.lora or inherited_lora
    if side.lora_scale is not None and lora is None:
        raise CardError(f"pair {card.name!r}: {name}.lora_scale is set but no LoRA is named (set {name}.lora).")
    return SideSpec(
        model=model, lora=lora, lora_scale=side.lora_scale if side.lora_scale is not None else (1.0 if lora else 0.0),
        cfg=side.cfg if side.cfg is not None else DEFAULT_REFLECT_CFG,
        guidance=side.guidance if side.guidance is not None else guidance,
        prompt=side.prompt or "{prompt}",
        negative_prompt=side.negative_prompt if side.negative_prompt is not None else negative,
        control=side.control, control_scale=side.control_scale if side.control_scale is not None else 1.0)


def _first_checkpoint(card: PairCard) -> str:
    for key, ref in card.models.items():
        if ref.format in CHECKPOINT_FORMATS:
            return key
    raise CardError(f"pair {card.name!r}: no model of format diffusers or single-file to sample with.")


def _check_formats(card: PairCard, side: str, spec: SideSpec) -> None:
    wanted = (("model", spec.model, CHECKPOINT_FORMATS), ("lora", spec.lora, ("lora",)),
              ("control", spec.control, ("controlnet",)))
    for knob, key, formats in wanted:
        if key is None:
            continue
        if key not in card.models:
            raise CardError(f"pair {card.name!r}: {side}.{knob} names {key!r}, which is not in models.")
        fmt = card.models[key].format
        if fmt not in formats:
            raise CardError(f"pair {card.name!r}: {side}.{knob} {key!r} has format {fmt!r}; "
                            f"expected {' or '.join(formats)}.")


def check_size(width: int, height: int, multiple: int, smallest: int) -> None:
    """Raise ``InputError`` unless the size fits the model (a multiple of its latent grid, not too small)."""
    for name, value in (("width", width), ("height", height)):
        if value % multiple or value < smallest:
            raise InputError(f"--{name} {value} does not fit this model: use a multiple of {multiple} "
                             f"of at least {smallest} (e.g. {max(smallest, value // multiple * multiple)}).")


def needed_keys(sides: dict[str, SideSpec], options: DiffusersOptions) -> list[str]:
    """Every model key the sides use, then the bases they take configs or components from."""
    keys = list(dict.fromkeys(k for s in sides.values() for k in (s.model, s.lora, s.control) if k is not None))
    bases = [table[k] for k in keys for table in (options.config_from, options.components_from) if k in table]
    return list(dict.fromkeys([*keys, *bases]))
