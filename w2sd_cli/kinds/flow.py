"""The ``flow`` kind: flow-matching text-to-image pairs on Stable Diffusion 3.x and FLUX.1 diffusers folders.

Each side (strong, weak, final) picks its model, LoRA + scale, true CFG, distilled guidance (FLUX.1-dev) and
prompt, so checkpoint, LoRA, CFG, guidance and prompt pairs are all cards of this one kind. The reflection is
the velocity form of W2SD: ``x' = x + (t' - t) v_s(x, t)``, ``x~ = x' + (t - t') v_w(x', t)``.

Side rules (pure data, no torch):

- ``strong.model`` defaults to the card's first diffusers model; ``weak.model`` to the strong one.
- ``final`` inherits every knob it leaves unset from ``strong`` (model, LoRA, scale, CFG, guidance, prompts).
- ``weak`` inherits the model, the negative prompt, the guidance and, when it sets only ``lora_scale``, the
  LoRA; never the prompt template.
- CFG defaults to 1.0 (the conditional branch alone). ``guidance`` applies to guidance-distilled models only
  and defaults to 3.5 there (FluxPipeline's default).
- The plain weak baseline is the weak side at the final side's CFG and guidance.
- ``--cfg`` sets the final side's distilled guidance on a guidance-distilled model, its CFG otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from pydantic import Field

from w2sd_cli.cards import PairCard, Side, Strict
from w2sd_cli.errors import CardError
from w2sd_cli.kinds.base import LoadSettings, PairKind

if TYPE_CHECKING:
    from w2sd_cli.kinds.flow_session import FlowPair

DEFAULT_CFG = 1.0


class FlowOptions(Strict):
    """Options of a ``flow`` card."""

    needs_strong_prompt: bool = Field(False, description="prompt pairs: --strong-prompt is required")
    components_from: dict[str, str] = Field({}, description="model key -> model key whose VAE, text encoders and "
                                            "tokenizers it uses (only its transformer and scheduler are loaded)")
    max_sequence_length: int | None = Field(None, ge=1, le=512, description="T5 tokens (default: SD3 256, "
                                            "FLUX 512)")


@dataclass(frozen=True)
class FlowSide:
    """One fully resolved side of a flow pair (``guidance`` None: the model has no guidance input, or its
    default)."""

    model: str
    lora: str | None
    lora_scale: float
    cfg: float
    guidance: float | None
    prompt: str
    negative_prompt: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_flow_sides(card: PairCard, final_cfg: float | None = None, guidance_final: bool = False
                       ) -> dict[str, FlowSide]:
    """``strong``, ``weak``, ``final`` and ``weak_plain`` of a flow card.

    Args:
        final_cfg: ``--cfg``: replaces the final side's guidance (``guidance_final``) or its CFG.
    """
    base = card.strong.model or _first_diffusers(card)
    strong = _side(card.strong, base, None, None, "", card, "strong")
    weak_lora = card.weak.lora or (strong.lora if card.weak.lora_scale is not None else None)
    weak = _side(card.weak, card.weak.model or strong.model, weak_lora, strong.guidance, strong.negative_prompt,
                 card, "weak")
    f = card.final
    final = FlowSide(
        model=f.model or strong.model, lora=f.lora or strong.lora,
        lora_scale=f.lora_scale if f.lora_scale is not None else strong.lora_scale,
        cfg=f.cfg if f.cfg is not None else strong.cfg,
        guidance=f.guidance if f.guidance is not None else strong.guidance,
        prompt=f.prompt or strong.prompt,
        negative_prompt=f.negative_prompt if f.negative_prompt is not None else strong.negative_prompt)
    if final_cfg is not None:
        final = replace(final, guidance=final_cfg) if guidance_final else replace(final, cfg=final_cfg)
    for name, spec in (("strong", strong), ("weak", weak), ("final", final)):
        _check_formats(card, name, spec)
    return {"strong": strong, "weak": weak, "final": final,
            "weak_plain": replace(weak, cfg=final.cfg, guidance=final.guidance)}


def _side(side: Side, model: str, inherited_lora: str | None, guidance: float | None, negative: str,
          card: PairCard, name: str) -> FlowSide:
    for knob in ("control", "control_scale", "experts", "mixture"):
        if getattr(side, knob) is not None:
            raise CardError(f"pair {card.name!r}: {name}.{knob} is not a knob of flow pairs (model, lora, "
                            "lora_scale, cfg, guidance, prompt, negative_prompt).")
    lora = side.lora or inherited_lora
    if side.lora_scale is not None and lora is None:
        raise CardError(f"pair {card.name!r}: {name}.lora_scale is set but no LoRA is named (set {name}.lora).")
    return FlowSide(
        model=model, lora=lora, lora_scale=side.lora_scale if side.lora_scale is not None else (1.0 if lora else 0.0),
        cfg=side.cfg if side.cfg is not None else DEFAULT_CFG,
        guidance=side.guidance if side.guidance is not None else guidance,
        prompt=side.prompt or "{prompt}",
        negative_prompt=side.negative_prompt if side.negative_prompt is not None else negative)


def _first_diffusers(card: PairCard) -> str:
    for key, ref in card.models.items():
        if ref.format == "diffusers":
            return key
    raise CardError(f"pair {card.name!r}: no model of format diffusers (an SD3 or FLUX folder) to sample with.")


def _check_formats(card: PairCard, side: str, spec: FlowSide) -> None:
    for knob, key, fmt in (("model", spec.model, "diffusers"), ("lora", spec.lora, "lora")):
        if key is None:
            continue
        if key not in card.models:
            raise CardError(f"pair {card.name!r}: {side}.{knob} names {key!r}, which is not in models.")
        if card.models[key].format != fmt:
            raise CardError(f"pair {card.name!r}: {side}.{knob} {key!r} has format {card.models[key].format!r}; "
                            f"expected {fmt}.")


class FlowKind(PairKind):
    """Flow-matching pairs on SD3.x and FLUX.1: per-side model, LoRA scale, CFG, distilled guidance and prompt."""

    name = "flow"
    takes = frozenset({"strong_prompt", "negative_prompt", "cfg", "width", "height", "device", "dtype", "offload"})
    summary = "SD3.x and FLUX.1 flow-matching pairs: per-side model, LoRA scale, CFG, guidance and prompt"
    options_model = FlowOptions

    def check(self, card: PairCard) -> None:
        options: FlowOptions = self.options(card)
        sides = resolve_flow_sides(card)
        used = {s.model for s in sides.values()}
        for key, base in options.components_from.items():
            for name in (key, base):
                if name not in card.models or card.models[name].format != "diffusers":
                    raise CardError(f"pair {card.name!r}: options.components_from names {name!r}, which is not a "
                                    "diffusers model of the card.")
            if base in options.components_from:
                raise CardError(f"pair {card.name!r}: options.components_from[{key!r}] = {base!r}, which itself "
                                "borrows its components; name the model that has them.")
            if key not in used:
                raise CardError(f"pair {card.name!r}: options.components_from names {key!r}, which no side uses.")

    def model_keys(self, card: PairCard) -> list[str]:
        keys: list[str] = []
        for spec in resolve_flow_sides(card).values():
            for key in (spec.model, spec.lora):
                if key is not None and key not in keys:
                    keys.append(key)
        for key in list(keys):
            base = self.options(card).components_from.get(key)
            if base is not None and base not in keys:
                keys.append(base)
        return keys

    def load(self, card: PairCard, settings: LoadSettings) -> FlowPair:
        """Every transformer and LoRA the sides use, one VAE and text-encoder set per distinct set, once."""
        from w2sd_cli.kinds.flow_session import FlowPair

        self.check(card)
        return FlowPair.open(card, self.options(card), settings)
