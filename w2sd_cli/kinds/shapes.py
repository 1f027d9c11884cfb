"""The ``toy-unet`` kind: a small pixel-space text-to-image pair trained by w2sd (``python -m w2sd_cli.toy.train``).

Each side is a diffusers-style folder (``unet/ text_encoder/ tokenizer/ scheduler/``) loaded with the
same UNet adapter as every real pair. Images are 32×32 pixels, written upscaled (nearest neighbour),
and every image is scored by the shapes-world checker so ``--json`` says whether it matches the prompt.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from w2sd_cli.cards import PairCard, Strict
from w2sd_cli.errors import CardError, InputError, ModelError
from w2sd_cli.kinds.base import GenRequest, GenResult, PairKind, PreparedPair

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

    from w2sd_cli.sampling import Callback

DEFAULT_PROMPT = "two red circles on the left"
DEFAULT_CFG = 1.5
LABELS = {"weak": "weak", "strong": "strong", "w2sd": "W2SD", "extrapolate": "extrap. k=1", "equal-nfe": "equal NFE"}


class ToyOptions(Strict):
    """Options of a toy-unet card."""

    upscale: int = Field(8, ge=1, le=32, description="nearest-neighbour upscale factor of the PNG")
    checker: bool = Field(True, description="score images with the shapes-world checker")


class ToyUNetKind(PairKind):
    """Two checkpoints of a small pixel-space UNet (autoguidance-style: weak = earlier training)."""

    name = "toy-unet"
    summary = "small pixel-space text-to-image UNet pair shipped with w2sd (offline, seconds on CPU)"
    options_model = ToyOptions

    def check(self, card: PairCard) -> None:
        self.options(card)
        for side in ("strong", "weak"):
            key = getattr(card, side).model
            if key is None:
                raise CardError(f"pair {card.name!r}: toy-unet cards need `{side}.model`.")
            if card.models[key].path is None:
                raise CardError(f"pair {card.name!r}: model {key!r} must be a local `path` (toy-unet ships weights).")

    def model_keys(self, card: PairCard) -> list[str]:
        return []

    def prepare(self, card: PairCard, request: GenRequest, prompt: str, batch: int = 1) -> PreparedPair:
        """Denoisers for ``prompt``: strong/weak at their reflection CFG, final and plain weak at the final CFG.

        ``batch`` sizes the conditioning, so several seeds of one prompt can be sampled at once.
        """
        import torch

        from w2sd_cli.adapters.unet import CFGDenoiser, Conditioning, grid_from_config, schedule_from_config

        self.check(card)
        final_side = card.final if card.final.model is not None else card.strong
        models = {side: load_model(model_folder(card, key)) for side, key in
                  (("strong", card.strong.model), ("weak", card.weak.model), ("final", final_side.model))}
        schedule = schedule_from_config(models["strong"].scheduler_config)
        config = models["strong"].scheduler_config

        def denoiser(side: str, cfg: float | None) -> CFGDenoiser:
            model = models[side]
            cond, uncond = (model.conditioning(p).expand(batch, -1, -1) for p in (prompt, ""))
            return CFGDenoiser(model.network, schedule, Conditioning(cond), Conditioning(uncond),
                               DEFAULT_CFG if cfg is None else cfg,
                               prediction_type=config.get("prediction_type", "epsilon"))

        final_cfg = request.cfg if request.cfg is not None else final_side.cfg
        weak_plain = denoiser("weak", final_cfg)

        def noise(seed: int) -> Tensor:
            return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))

        steps = request.steps or card.defaults.steps
        return PreparedPair(strong=denoiser("strong", card.strong.cfg), weak=denoiser("weak", card.weak.cfg),
                            final=denoiser("final", final_cfg), weak_plain=weak_plain, schedule=schedule,
                            grid=grid_from_config(schedule, config, steps),
                            make_grid=lambda n: grid_from_config(schedule, config, n), noise=noise,
                            info={side: str(m.folder) for side, m in models.items()})

    def generate(self, card: PairCard, request: GenRequest, observer: Callback | None = None) -> GenResult:
        from w2sd_cli.methods import run_method

        request = request.resolved(card)
        options: ToyOptions = self.options(card)
        factor = options.upscale if request.width is None else max(1, request.width // 32)
        prompt = (request.prompt or DEFAULT_PROMPT).strip()
        if not prompt:
            raise InputError("the prompt is empty: describe a scene, e.g. \"two red circles on the left\".")
        pair = self.prepare(card, request, prompt)
        methods = ["weak", "strong", "w2sd"] if request.compare else ["w2sd"]
        files: list[Path] = []
        images: list[dict[str, Any]] = []
        request.out.mkdir(parents=True, exist_ok=True)
        for offset in range(request.num_images):
            seed = (request.seed or 0) + offset
            x = pair.noise(seed)
            shown: dict[str, np.ndarray] = {}
            for method in methods:
                started = time.perf_counter()
                result = run_method(pair, method, x, lam=request.lam, rounds=request.rounds or 1,
                                    reference_interval=request.reference_interval, callback=_tagged(observer, method))
                shown[method] = to_pixels(result.x)
                record: dict[str, Any] = {"seed": seed, "method": method, "nfe": result.nfe, "cost": result.cost,
                                          "seconds": round(time.perf_counter() - started, 3)}
                if options.checker:
                    from w2sd_cli.toy.checker import verdict

                    record["checker"] = verdict(shown[method], prompt)
                images.append(record)
            stem = f"{card.name}-{slug(prompt)}-seed{seed}"
            files.append(save_png(upscale(shown["w2sd"], factor), request.out / f"{stem}.png"))
            if request.compare:
                strip = panel([upscale(shown[m], factor) for m in methods], [LABELS[m] for m in methods])
                files.append(save_png(strip, request.out / f"{stem}-compare.png"))
        summary = {"pair": card.name, "kind": self.name, "card_digest": card.digest(), "prompt": prompt,
                   "seed": request.seed, "steps": request.steps, "lam": request.lam, "device": "cpu",
                   "methods": {r["method"]: _row(r) for r in images if r["seed"] == request.seed},
                   "images": images, "files": [str(f) for f in files]}
        first_w2sd = next(r for r in images if r["method"] == "w2sd")
        if "checker" in first_w2sd:
            summary["checker"] = first_w2sd["checker"]
        return GenResult(files=files, summary=summary)


def _row(record: dict[str, Any]) -> dict[str, Any]:
    """One method's line in the summary table: cost, time and the checker's verdict per attribute."""
    row = {k: record[k] for k in ("nfe", "cost", "seconds")}
    if "checker" in record:
        row.update({k: "ok" if ok else "wrong" for k, ok in record["checker"]["checks"].items()})
        row["matches prompt"] = record["checker"]["all"]
    return row


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
    import torch

    from w2sd_cli.threads import limit_threads_for_small_work

    torch.set_grad_enabled(False)
    limit_threads_for_small_work("cpu")  # issue 11 item 10; the lead moves this to the engine's loading
    return ToyModel(folder)


def to_pixels(x: Tensor) -> np.ndarray:
    """A ``(1, 3, H, W)`` sample in [-1, 1] as an ``(H, W, 3)`` uint8 array."""
    import numpy as np

    array = ((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return np.ascontiguousarray(array)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale (each pixel becomes a ``factor``×``factor`` block)."""
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def panel(images: list[np.ndarray], labels: list[str], gap: int = 8, band: int = 20) -> np.ndarray:
    """Images side by side on a light background, each labelled above."""
    import numpy as np
    from PIL import Image, ImageDraw

    height, width = images[0].shape[:2]
    canvas = Image.new("RGB", (len(images) * width + (len(images) + 1) * gap, height + band + gap), (245, 245, 245))
    draw = ImageDraw.Draw(canvas)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        left = gap + i * (width + gap)
        canvas.paste(Image.fromarray(image), (left, band))
        draw.text((left + 2, 4), label, fill=(20, 20, 20))
    return np.asarray(canvas)


def save_png(image: np.ndarray, path: Path) -> Path:
    """Write an RGB array as PNG (written beside, then renamed, so no half file is left)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    Image.fromarray(image).save(partial, format="PNG")
    partial.replace(path)
    return path


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe version of a prompt."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "prompt"


def _tagged(observer: Callback | None, method: str) -> Callback | None:
    if observer is None:
        return None
    return lambda info: observer({**info, "method": method})
