"""LoRA adapters loaded once through peft, their scales switched by writing the per-layer scalings.

``set_adapters`` walks every module and re-activates adapters on each call; a W2SD step switches scale
three times, so w2sd computes the same per-layer value (``scale * lora_alpha / r``, the expression peft's
``set_scale`` uses, so results agree bit for bit) and writes it into the cached layers directly.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2sd_cli.errors import ModelError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@functools.cache
def _reserved_names() -> frozenset[str]:
    """Names peft cannot use: attributes of the ``ModuleDict`` that holds each layer's adapters."""
    import torch

    return frozenset(dir(torch.nn.ModuleDict())) | {"__base__", "default_0"}


def check_adapter_name(name: str) -> str:
    """``name`` if peft accepts it as an adapter name, else a ``ModelError`` saying why."""
    if not _NAME.match(name):
        raise ModelError(f"LoRA adapter name {name!r} must be letters, digits and '_' (no dots, dashes or spaces).")
    if name in _reserved_names() or name.startswith("lora_"):
        raise ModelError(f"LoRA adapter name {name!r} clashes with a torch/peft attribute; choose another name.")
    return name


def adapter_name(key: str) -> str:
    """A peft-safe adapter name for a card's model key (``hd-lora`` -> ``w2sd_hd_lora``)."""
    return check_adapter_name("w2sd_" + re.sub(r"[^A-Za-z0-9_]", "_", key))


@dataclass
class _Slot:
    layer: Any
    adapter: str
    alpha: float
    rank: float
    rslora: bool


@dataclass
class LoraScales:
    """Every peft LoRA layer found in some modules, and the scale each adapter currently has.

    ``apply({name: scale})`` sets the named adapters and zeroes every other one, so a side that
    names no LoRA gets the base weights even on a network that carries one.
    """

    slots: list[_Slot] = field(default_factory=list)
    current: dict[str, float] = field(default_factory=dict)

    @classmethod
    def scan(cls, modules: Iterable[Any]) -> LoraScales:
        """Collect the LoRA layers of ``modules`` (each visited once, however often it is shared)."""
        from peft.tuners.lora import LoraLayer

        slots, seen = [], set()
        for module in modules:
            if id(module) in seen:
                continue
            seen.add(id(module))
            for layer in module.modules():
                if isinstance(layer, LoraLayer):
                    for adapter in layer.scaling:
                        slots.append(_Slot(layer, adapter, float(layer.lora_alpha[adapter]), float(layer.r[adapter]),
                                           bool(layer.use_rslora.get(adapter, False))))
        return cls(slots, {})

    @property
    def adapters(self) -> set[str]:
        return {s.adapter for s in self.slots}

    def layers(self, adapter: str) -> int:
        """How many layers carry ``adapter``."""
        return sum(1 for s in self.slots if s.adapter == adapter)

    def apply(self, scales: Mapping[str, float]) -> None:
        """Give each adapter its scale (0 for adapters not named); a no-op when nothing changes."""
        wanted = {name: float(scales.get(name, 0.0)) for name in self.adapters}
        unknown = set(scales) - self.adapters
        if unknown:
            raise ModelError(f"no LoRA adapter called {sorted(unknown)} is loaded (loaded: {sorted(self.adapters)}).")
        if wanted == self.current:
            return
        for slot in self.slots:
            scale = wanted[slot.adapter]
            if slot.rslora:
                slot.layer.scaling[slot.adapter] = scale * slot.alpha / math.sqrt(slot.rank)
            else:
                slot.layer.scaling[slot.adapter] = scale * slot.alpha / slot.rank
        self.current = wanted


def load_lora(container: Any, path: Path, name: str, unet: Any) -> None:
    """Load a LoRA file (diffusers, kohya or civitai format) into ``container``'s UNet and text encoders.

    Args:
        container: a diffusers pipeline object (the LoRA loader lives there).
        path: the ``.safetensors`` file, or a folder holding ``pytorch_lora_weights.safetensors``.
        name: the peft adapter name (see ``adapter_name``).
        unet: the UNet that must end up carrying the adapter.

    Raises:
        ModelError: the file does not load or fits none of the UNet's layers.
    """
    import warnings

    check_adapter_name(name)
    source = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if source.is_dir():
                container.load_lora_weights(str(source), adapter_name=name, local_files_only=True)
            else:
                container.load_lora_weights(str(source.parent), weight_name=source.name, adapter_name=name,
                                            local_files_only=True)
    except (RuntimeError, ValueError, KeyError, OSError, TypeError) as err:
        raise ModelError(f"LoRA {source.name}: does not fit this model ({_first_line(err)}). "
                         "Check that the LoRA was trained for this base model (SD1.x vs SDXL).") from None
    if LoraScales.scan([unet]).layers(name) == 0:
        raise ModelError(f"LoRA {source.name}: none of its weights fit this UNet. "
                         "Check that the LoRA was trained for this base model (SD1.x vs SDXL).")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
