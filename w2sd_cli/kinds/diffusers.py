"""The ``diffusers`` kind: text-to-image pairs on SD 1.x/2.x, SDXL, SD3.x and FLUX.1, one card per difference.

The card format and its side rules are in ``w2sd_cli.kinds.diffusers_sides``; what differs between model
families in ``w2sd_cli.adapters.families``; the loaded pair in ``w2sd_cli.kinds.diffusers_pair`` (imported only
when a pair loads). ``kind: flow`` (the SD3/FLUX kind before the families merged) is an alias.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from w2sd_cli.cards import PairCard
from w2sd_cli.errors import CardError
from w2sd_cli.kinds.base import LoadSettings, PairKind
from w2sd_cli.kinds.diffusers_sides import (
    DEFAULT_FINAL_CFG,
    DiffusersOptions,
    DiffusersSide,
    SideSpec,
    needed_keys,
    resolve_sides,
)

if TYPE_CHECKING:
    from w2sd_cli.kinds.diffusers_pair import DiffusersPair

__all__ = ["DiffusersKind", "DiffusersOptions", "DiffusersSide", "FlowKind", "SideSpec"]


class DiffusersKind(PairKind):
    """Text-to-image pairs on diffusers models: per-side model, LoRA scale, CFG, guidance, prompt and ControlNet."""

    name = "diffusers"
    summary = ("SD 1.x/2.x, SDXL, SD3.x and FLUX.1 pairs: per-side model, LoRA scale, CFG, distilled guidance, "
               "prompt and ControlNet")
    options_model = DiffusersOptions
    takes = frozenset({"strong_prompt", "negative_prompt", "control_image", "cfg", "width", "height", "device",
                       "dtype", "offload"})
    side_model = DiffusersSide

    def resolve(self, card: PairCard, final_cfg: float | None = DEFAULT_FINAL_CFG) -> dict[str, SideSpec]:
        """The card's resolved sides, worked out once per card (``check``, ``model_keys`` and ``load`` share them)."""
        cache: dict[tuple[int, float | None], tuple[PairCard, dict[str, SideSpec]]] = self.__dict__.setdefault(
            "_resolved", {})
        key = (id(card), final_cfg)
        if key not in cache or cache[key][0] is not card:
            if len(cache) > 16:
                cache.clear()
            cache[key] = (card, resolve_sides(card, self.sides(card), final_cfg))
        return dict(cache[key][1])

    def check(self, card: PairCard) -> None:
        self.check_resolved(card, self.options(card), self.resolve(card))

    def check_resolved(self, card: PairCard, options: DiffusersOptions, sides: dict[str, SideSpec]) -> None:
        """The card's cross-field rules, over sides resolved once."""
        for field, table in (("config_from", options.config_from), ("components_from", options.components_from)):
            for key, base in table.items():
                for name in (key, base):
                    if name not in card.models:
                        raise CardError(f"pair {card.name!r}: options.{field} names {name!r}, not in models.")
                if card.models[base].format != "diffusers" or base in table:
                    raise CardError(f"pair {card.name!r}: options.{field}[{key!r}] must name a diffusers folder "
                                    "that has its own components.")
        used = {s.model for s in sides.values()}
        for key in options.components_from:
            if key not in used:
                raise CardError(f"pair {card.name!r}: options.components_from names {key!r}, which no side uses.")
        for key, ref in card.models.items():
            if ref.format == "single-file" and key not in options.config_from:
                raise CardError(f"pair {card.name!r}: single-file model {key!r} needs options.config_from[{key!r}] "
                                "naming the diffusers base model whose configs it uses (never fetched at load time).")

    def model_keys(self, card: PairCard) -> list[str]:
        return needed_keys(self.resolve(card), self.options(card))

    def load(self, card: PairCard, settings: LoadSettings) -> DiffusersPair:
        """Every model, LoRA and ControlNet the card's sides use, on the device once."""
        from w2sd_cli.kinds.diffusers_pair import DiffusersPair

        options = self.options(card)
        sides = self.resolve(card)
        self.check_resolved(card, options, sides)
        return DiffusersPair.open(card, options, sides, settings)


class FlowKind(DiffusersKind):
    """``kind: flow``: the name SD3.x and FLUX.1 cards had before one kind served every family."""

    name = "flow"
    summary = "alias of diffusers (SD3.x and FLUX.1 cards may say kind: diffusers)"
