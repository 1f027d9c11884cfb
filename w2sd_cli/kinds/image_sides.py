"""How a ``diffusers`` card's sides resolve: which model, LoRA + scale, CFG, prompt and control each uses.

Pure data (no torch): the rules are the card format's documentation.

- ``strong.model`` defaults to the card's first model checkpoint; ``weak.model`` to the strong one.
- ``final`` (the closing denoise step) inherits every knob it leaves unset from ``strong``, except
  ``cfg`` (default 5.5, the paper's denoise CFG).
- ``weak`` inherits the model, the negative prompt and, when it sets only ``lora_scale``, the LoRA;
  never the prompt template or the ControlNet (those are what a prompt or pipeline pair differs in).
- Reflection CFG defaults to 1.0 on both sides; a LoRA named without a scale has scale 1.0.
- The "plain weak" baseline is the weak side at the final CFG, unless that would make it the final side itself
  (a guidance pair, whose sides differ only in CFG): then it is the weak side as the card defines it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from w2sd_cli.cards import PairCard, Side
from w2sd_cli.errors import CardError, InputError

CHECKPOINT_FORMATS = ("diffusers", "single-file")
DEFAULT_FINAL_CFG = 5.5
DEFAULT_REFLECT_CFG = 1.0


@dataclass(frozen=True)
class SideSpec:
    """One fully resolved side."""

    model: str
    lora: str | None
    lora_scale: float
    cfg: float
    prompt: str
    negative_prompt: str
    control: str | None
    control_scale: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_sides(card: PairCard, final_cfg: float | None = None) -> dict[str, SideSpec]:
    """``strong``, ``weak``, ``final`` and ``weak_plain`` of a card (``final_cfg`` overrides the card's)."""
    base = card.strong.model or _first_checkpoint(card)
    strong = _spec(card.strong, base, None, card, "strong")
    weak_lora = card.weak.lora or (strong.lora if card.weak.lora_scale is not None else None)
    weak = _spec(card.weak, card.weak.model or strong.model, weak_lora, card, "weak",
                 negative=strong.negative_prompt)
    f = card.final
    final = SideSpec(
        model=f.model or strong.model,
        lora=f.lora or strong.lora,
        lora_scale=f.lora_scale if f.lora_scale is not None else strong.lora_scale,
        cfg=final_cfg if final_cfg is not None else (f.cfg if f.cfg is not None else DEFAULT_FINAL_CFG),
        prompt=f.prompt or strong.prompt,
        negative_prompt=f.negative_prompt if f.negative_prompt is not None else strong.negative_prompt,
        control=f.control or strong.control,
        control_scale=f.control_scale if f.control_scale is not None else strong.control_scale,
    )
    for name, spec in (("strong", strong), ("weak", weak), ("final", final)):
        _check_formats(card, name, spec)
    weak_plain = replace(weak, cfg=final.cfg)
    return {"strong": strong, "weak": weak, "final": final, "weak_plain": weak if weak_plain == final else weak_plain}


def render_prompt(template: str, prompt: str, strong_prompt: str | None, side: str) -> str:
    """A side's prompt: ``{prompt}`` is the user's prompt, or on strong/final sides ``--strong-prompt`` if given."""
    text = strong_prompt if (strong_prompt is not None and side in ("strong", "final")) else prompt
    return template.replace("{prompt}", text)


def _spec(side: Side, model: str, inherited_lora: str | None, card: PairCard, name: str,
          negative: str = "") -> SideSpec:
    lora = side.lora or inherited_lora
    if side.lora_scale is not None and lora is None:
        raise CardError(f"pair {card.name!r}: {name}.lora_scale is set but no LoRA is named (set {name}.lora).")
    return SideSpec(
        model=model, lora=lora,
        lora_scale=side.lora_scale if side.lora_scale is not None else (1.0 if lora else 0.0),
        cfg=side.cfg if side.cfg is not None else DEFAULT_REFLECT_CFG,
        prompt=side.prompt or "{prompt}",
        negative_prompt=side.negative_prompt if side.negative_prompt is not None else negative,
        control=side.control,
        control_scale=side.control_scale if side.control_scale is not None else 1.0,
    )


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
