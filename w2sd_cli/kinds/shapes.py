"""The ``toy-unet`` kind: a small pixel-space text-to-image pair trained by w2sd (``python -m w2sd_cli.toy.train``).

Each side is a diffusers-style folder (``unet/ text_encoder/ tokenizer/ scheduler/``) loaded with the
same UNet adapter as every real pair. Images are 32×32 pixels, decoded upscaled (nearest
neighbour); the card names the shapes-world checker as its metric, so every image says whether it matches.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from w2sd_cli.cards import PairCard, Strict
from w2sd_cli.errors import CardError, InputError, ModelError
from w2sd_cli.kinds.base import Condition, LoadSettings, PairKind, PreparedPair, Settings

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

DEFAULT_PROMPT = "two red circles on the left"
DEFAULT_CFG = 1.5


class ToyOptions(Strict):
    """Options of a toy-unet card."""

    upscale: int = Field(8, ge=1, le=32, description="nearest-neighbour upscale factor of the PNG")


class ToySide(Strict):
    """One side of a toy-unet card: its checkpoint and its CFG."""

    model: str | None = None
    cfg: float | None = Field(None, ge=0)


@dataclass(frozen=True)
class ToySpec:
    """One resolved side: the checkpoint folder, its CFG and the prompt."""

    model: str
    cfg: float
    prompt: str


class ToyUNetKind(PairKind):
    """Two checkpoints of a small pixel-space UNet (autoguidance-style: weak = earlier training)."""

    name = "toy-unet"
    summary = "small pixel-space text-to-image UNet pair shipped with w2sd (offline, seconds on CPU)"
    options_model = ToyOptions
    side_model = ToySide
    small = True
    takes = frozenset({"cfg"})

    def check(self, card: PairCard) -> None:
        self.options(card)
        self.sides(card)
        for side in ("strong", "weak"):
            key = getattr(card, side).model
            if key is None:
                raise CardError(f"pair {card.name!r}: toy-unet cards need `{side}.model`.")
            if card.models[key].path is None:
                raise CardError(f"pair {card.name!r}: model {key!r} must be a local `path` (toy-unet ships weights).")

    def model_keys(self, card: PairCard) -> list[str]:
        return []

    def load(self, card: PairCard, settings: LoadSettings) -> ToyPair:
        """Both sides' models (cached per process), on the CPU in float32."""
        if settings.device not in ("auto", "cpu"):
            raise InputError(f"--device {settings.device}: the shapes pair runs on the CPU only (it is tiny).")
        if settings.dtype not in (None, "float32"):
            raise InputError(f"--dtype {settings.dtype}: the shapes pair runs in float32 only.")
        final_side = card.final if card.final.model is not None else card.strong
        models = {side: load_model(model_folder(card, key)) for side, key in
                  (("strong", card.strong.model), ("weak", card.weak.model), ("final", final_side.model))}
        cfgs = {"strong": card.strong.cfg, "weak": card.weak.cfg, "final": final_side.cfg}
        return ToyPair(models, cfgs, self.options(card).upscale)


class ToyPair:
    """The loaded shapes pair: 32×32 pixel-space images, decoded upscaled (nearest neighbour)."""

    def __init__(self, models: dict[str, ToyModel], cfgs: dict[str, float | None], upscale: int) -> None:
        self.models, self.cfgs, self.upscale = models, cfgs, upscale

    def prepare(self, condition: Condition, settings: Settings) -> PreparedPair:
        """Side specs for the prompt (strong/weak at their reflection CFG, final at the final CFG) and their
        denoisers; the plain weak side is the method table's rule."""
        import torch

        from w2sd_cli.adapters.unet import CFGDenoiser, Conditioning, grid_from_config, schedule_from_config

        prompt = condition.prompt.strip()
        config = self.models["strong"].scheduler_config
        schedule = schedule_from_config(config)
        final_cfg = settings.cfg if settings.cfg is not None else self.cfgs["final"]
        cfgs = {"strong": self.cfgs["strong"], "weak": self.cfgs["weak"], "final": final_cfg}
        specs = {role: ToySpec(str(self.models[role].folder), DEFAULT_CFG if cfg is None else cfg, prompt)
                 for role, cfg in cfgs.items()}
        by_folder = {str(m.folder): m for m in self.models.values()}

        def denoiser(spec: ToySpec) -> CFGDenoiser:
            model = by_folder[spec.model]
            cond, uncond = (Conditioning(model.conditioning(p)) for p in (spec.prompt, ""))
            return CFGDenoiser(model.network, schedule, cond, uncond, spec.cfg,
                               prediction_type=config.get("prediction_type", "epsilon"))

        def describe(spec: ToySpec) -> dict[str, Any]:
            return {"model": model_record(by_folder[spec.model].folder), "cfg": spec.cfg, "prompt": spec.prompt}

        def noise(seed: int) -> Tensor:
            return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))

        def make_grid(steps: int) -> list[float]:
            return grid_from_config(schedule, config, steps)

        return PreparedPair(specs=specs, denoiser=denoiser, schedule=schedule, grid=make_grid(settings.steps),
                            make_grid=make_grid, noise=noise, describe=describe,
                            warnings=_unknown_words(prompt) + self.models["strong"].cut(prompt))

    def decode(self, x: Tensor, count: int) -> list[Any]:
        from PIL import Image

        return [Image.fromarray(upscale(to_pixels(x[i:i + 1]), self.upscale)) for i in range(count)]

    def provenance(self) -> dict[str, Any]:
        return {"device": "cpu", "dtype": "float32",
                "models": {s: model_record(m.folder) for s, m in self.models.items()}}


def model_record(folder: Path) -> dict[str, str]:
    """How a recipe names a model folder: relative to the shipped registry (``registry/models/shapes/strong``)
    when it is the embedded one, so recipes carry no local paths, and the sha256 of its files."""
    from w2sd_cli.paths import registry_dir

    resolved = folder.resolve()
    try:
        name = "registry/" + resolved.relative_to(registry_dir().resolve()).as_posix()
    except ValueError:
        name = str(folder)
    return {"path": name, "sha256": folder_digest(resolved)}


@functools.lru_cache(maxsize=16)
def folder_digest(folder: Path) -> str:
    """sha256 over every file of ``folder``: its relative path and its own sha256, in sorted order."""
    total = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        total.update(f"{path.relative_to(folder).as_posix()}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n"
                     .encode())
    return total.hexdigest()


def _unknown_words(prompt: str) -> list[str]:
    """A warning for words the shapes world does not know (its checker cannot score them)."""
    from w2sd_cli.toy import world

    finder = getattr(world, "unknown_words", None)
    unknown = finder(prompt) if finder is not None else []
    if not unknown:
        return []
    return [f"the shapes pair does not know {', '.join(repr(w) for w in unknown)}; it knows the colours, shapes, "
            "counts and positions of its world (see `w2sd pairs show shapes`)."]


def model_folder(card: PairCard, key: str | None) -> Path:
    """The local folder of model ``key``; a clear error when the shipped weights are missing."""
    if key is None or card.models[key].path is None:
        raise CardError(f"pair {card.name!r}: model {key!r} needs a local `path`.")
    folder = Path(str(card.models[key].path)).expanduser()
    if not (folder / "unet").is_dir():
        raise ModelError(f"pair {card.name!r}: no model at {folder}. Rebuild it with "
                         f"`python -m w2sd_cli.toy.train --out DIR` and point the card there, or reinstall w2sd.")
    return folder


class ToyModel:
    """One side's UNet, text encoder, tokenizer and scheduler config, in float32 on CPU."""

    def __init__(self, folder: Path) -> None:
        import json

        import torch
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
        from transformers import PreTrainedTokenizerFast
        from transformers.models.clip.modeling_clip import CLIPTextModel

        from w2sd_cli.adapters.unet import unet_network

        self.folder = folder
        try:
            self.unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32).eval()
            self.text_encoder = _quietly(lambda: CLIPTextModel.from_pretrained(folder / "text_encoder",
                                                                           dtype=torch.float32).eval())
            self.tokenizer = PreTrainedTokenizerFast.from_pretrained(folder / "tokenizer")
            self.scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        except (OSError, ValueError) as err:
            raise ModelError(f"cannot load the toy model at {folder}: {err}. Re-run the training command "
                             f"or reinstall w2sd.") from None
        self.network = unet_network(self.unet)
        self._states: dict[str, Tensor] = {}

    def cut(self, prompt: str) -> list[str]:
        """A warning when the tokenizer cuts ``prompt`` (``w2sd_cli.toy.components.cut_warning``)."""
        from w2sd_cli.toy.components import cut_warning

        return cut_warning(self.tokenizer, prompt)

    def conditioning(self, prompt: str) -> Tensor:
        """The text encoder's last hidden states for ``prompt`` (cached per prompt)."""
        import torch

        from w2sd_cli.toy.components import encode

        if prompt not in self._states:
            with torch.no_grad():
                self._states[prompt] = encode(self.tokenizer, self.text_encoder, [prompt])
        return self._states[prompt]


def _quietly(load: Callable[[], Any]) -> Any:
    """Run a transformers loader without its progress bar (the CLI owns the terminal)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return load()
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@functools.lru_cache(maxsize=4)
def load_model(folder: Path) -> ToyModel:
    """Load (once per process) the toy model in ``folder``."""
    return ToyModel(folder)


def to_pixels(x: Tensor) -> np.ndarray:
    """A ``(1, 3, H, W)`` sample in [-1, 1] as an ``(H, W, 3)`` uint8 array."""
    import numpy as np

    array = ((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return np.ascontiguousarray(array)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale (each pixel becomes a ``factor``×``factor`` block)."""
    return image.repeat(factor, axis=0).repeat(factor, axis=1)
