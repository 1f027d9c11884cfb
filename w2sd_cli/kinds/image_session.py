"""One loaded image pair: models on the device, denoisers per side, seeded noise, decoding and recipes.

Imported only when an image pair runs (it imports torch and the diffusers adapters).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from w2sd_cli.adapters.control import controlnet_residuals, load_control_image
from w2sd_cli.adapters.lora import LoraScales, adapter_name, load_lora
from w2sd_cli.adapters.models import (
    Components,
    decode,
    load_controlnet,
    load_folder,
    load_single_file,
    pick_device,
    pick_dtype,
    share_identical,
)
from w2sd_cli.adapters.text import PromptEncoder
from w2sd_cli.adapters.unet import CFGDenoiser, grid_from_config, schedule_from_config, unet_network
from w2sd_cli.cards import ModelRef, PairCard
from w2sd_cli.errors import ModelError
from w2sd_cli.kinds.base import GenRequest, PreparedPair
from w2sd_cli.kinds.image_sides import SideSpec, check_size, render_prompt

if TYPE_CHECKING:
    from PIL import Image

    from w2sd_cli.kinds.image import DiffusersOptions
    from w2sd_cli.sampling import Callback, SampleResult

ROLES = ("strong", "weak", "final", "weak_plain")


@dataclass
class ImageSession:
    """Everything loaded for one ``w2sd gen`` run of a ``diffusers`` pair."""

    device: torch.device
    dtype: torch.dtype
    width: int
    height: int
    sides: dict[str, SideSpec]
    models: dict[str, Components]
    encoders: dict[str, PromptEncoder]
    lora: LoraScales
    pair: PreparedPair
    model_info: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    shared: int = 0
    controlnets: dict[str, Any] = field(default_factory=dict)
    control: Tensor | None = None

    @classmethod
    def open(cls, card: PairCard, request: GenRequest, sides: dict[str, SideSpec], options: DiffusersOptions,
             observer: Callback | None) -> ImageSession:
        """Locate and load the card's models, then build the four denoisers for ``request``."""
        _quiet_libraries()
        device = pick_device(request.device)
        dtype = pick_dtype(device, request.dtype)
        paths, info = _locate_all(card, request, sides, options)
        models = _load_models(card, sides, options, paths, dtype)
        shared = share_identical(_unique(list(models.values())))
        _load_loras(sides, models, paths)
        controlnets = {s.control: load_controlnet(paths[s.control], dtype) for s in sides.values() if s.control}
        _place(models, controlnets, device, offload=bool(request.extra.get("offload")))
        lora = LoraScales.scan(_unique([c.unet for c in models.values()]))
        strong = models[sides["strong"].model]
        width = request.width or strong.native_size
        height = request.height or strong.native_size
        down = 2 ** (len(strong.unet.config.down_block_types) - 1)
        check_size(width, height, strong.vae_scale_factor, strong.vae_scale_factor * down)
        encoders = _prompt_encoders(models, device, dtype, options.clip_skip)
        control = None
        if controlnets and request.control_image is not None:
            control = load_control_image(request.control_image, width, height, options.control_preprocess,
                                         options.canny_low, options.canny_high)
        session = cls(device, dtype, width, height, sides, models, encoders, lora, None,  # type: ignore[arg-type]
                      info, shared=shared, controlnets=controlnets, control=control)
        session.use_prompt(request.prompt or options.prompt, request)
        return session

    def use_prompt(self, prompt: str, request: GenRequest) -> None:
        """Render every side's prompt from ``prompt`` (and ``request.strong_prompt``) and rebuild the denoisers.

        Models stay loaded; embeddings already computed are reused (``w2sd bench`` calls this per prompt).
        """
        prompts = {name: render_prompt(s.prompt, prompt, request.strong_prompt, name)
                   for name, s in self.sides.items() if name != "weak_plain"}
        self.prompts = {**prompts, "weak_plain": prompts["weak"]}
        self.pair = self._prepare(request)

    @property
    def embeddings_computed(self) -> int:
        return sum(e.cached for e in _unique(list(self.encoders.values())))

    def _prepare(self, request: GenRequest, controlnets: dict[str, Any] | None = None,
                 control: Tensor | None = None) -> PreparedPair:
        controlnets = self.controlnets if controlnets is None else controlnets
        control = self.control if control is None else control
        strong = self.models[self.sides["strong"].model]
        config = strong.scheduler_config
        schedule = schedule_from_config(config)
        for key in {s.model for s in self.sides.values()}:
            other = schedule_from_config(self.models[key].scheduler_config)
            if not torch.allclose(other.alphas_cumprod, schedule.alphas_cumprod):
                raise ModelError(f"models {self.sides['strong'].model!r} and {key!r} use different noise schedules; "
                                 "a pair's sides must share one.")
        denoisers = {role: self._denoiser(role, schedule, controlnets, control) for role in ROLES}
        latent = (1, int(strong.unet.config.in_channels), self.height // strong.vae_scale_factor,
                  self.width // strong.vae_scale_factor)

        def noise(seed: int) -> Tensor:
            generator = torch.Generator("cpu").manual_seed(seed)
            return torch.randn(latent, generator=generator, dtype=torch.float32).to(self.device)

        steps = request.steps or 50
        return PreparedPair(strong=denoisers["strong"], weak=denoisers["weak"], final=denoisers["final"],
                            weak_plain=denoisers["weak_plain"], schedule=schedule,
                            grid=grid_from_config(schedule, config, steps),
                            make_grid=lambda n: grid_from_config(schedule, config, n), noise=noise,
                            info=self.model_info)

    def _denoiser(self, role: str, schedule: Any, controlnets: dict[str, Any], control: Tensor | None) -> CFGDenoiser:
        spec = self.sides[role]
        model = self.models[spec.model]
        encoder = self.encoders[spec.model]
        scales = {adapter_name(spec.lora): spec.lora_scale} if spec.lora else {}
        unet_scales = {k: v for k, v in scales.items() if k in self.lora.adapters}
        size = (self.height, self.width)
        cond = encoder.encode(self.prompts[role], scales, size=size)
        uncond = None if spec.cfg == 1.0 else encoder.encode(spec.negative_prompt, scales, negative=True, size=size)
        extra = None
        if spec.control is not None and control is not None:
            extra = controlnet_residuals(controlnets[spec.control], control, spec.control_scale)
        net = unet_network(model.unet, extra)
        lora = self.lora

        def network(x: Tensor, timestep: Tensor, c: Any) -> Tensor:
            lora.apply(unet_scales)
            return net(x, timestep, c)

        prediction = str(model.scheduler_config.get("prediction_type", "epsilon"))
        return CFGDenoiser(network, schedule, cond, uncond, spec.cfg, prediction, dtype=self.dtype)

    def sample(self, method: str, seed: int, request: GenRequest, observer: Callback | None
               ) -> tuple[SampleResult, Image.Image]:
        """One image: sample ``method`` from the seed's noise, check it stayed finite, decode it."""
        from w2sd_cli.images import to_image
        from w2sd_cli.methods import run_method

        def watch(info: dict[str, Any]) -> None:
            if not bool(torch.isfinite(info["x"]).all()):
                raise ModelError(f"{method}: the latent became NaN/inf at step {info['i']} ({info['phase']}). "
                                 "In float16 try --dtype float32 (or bfloat16); otherwise a model or LoRA is "
                                 "broken or its scale is too large.")
            if observer is not None:
                observer({**info, "method": method, "label": f"{method} seed {seed}", "seed": seed})

        result = run_method(self.pair, method, self.pair.noise(seed), lam=request.lam, rounds=request.rounds or 1,
                            reference_interval=request.reference_interval, callback=watch)
        vae = self.models[self.sides["final"].model].vae
        pixels = decode(vae, result.x)
        if not bool(torch.isfinite(pixels).all()):
            raise ModelError(f"{method}: the VAE decoded NaN/inf pixels; try --dtype float32.")
        return result, to_image(pixels)

    def recipe(self, card: PairCard, request: GenRequest, prompt: str, seed: int, method: str,
               result: SampleResult | None, seconds: float | None) -> dict[str, Any]:
        """Everything needed to make the image again (what ``--from-image`` reads back)."""
        from w2sd_cli.images import versions

        knobs = {"prompt": prompt, "seed": seed, "steps": len(self.pair.grid) - 1, "lam": request.lam,
                 "rounds": request.rounds or 1, "width": self.width, "height": self.height, "cfg": request.cfg,
                 "strong_prompt": request.strong_prompt, "negative_prompt": request.negative_prompt,
                 "control_image": str(request.control_image) if request.control_image else None,
                 "reference_interval": request.reference_interval, "dtype": request.dtype}
        out: dict[str, Any] = {
            "pair": card.name, "kind": "diffusers", "card_digest": card.digest(), "method": method,
            "prompt": prompt, "negative_prompt": request.negative_prompt, "seed": seed, "request": knobs,
            "sides": {role: {**spec.as_dict(), "rendered_prompt": self.prompts[role]}
                      for role, spec in self.sides.items()},
            "grid": [float(t) for t in self.pair.grid], "models": self.model_info,
            "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."), "versions": versions()}
        if result is not None:
            out.update(nfe=result.nfe, calls=result.calls, cost=result.cost, seconds=seconds)
        return out


def _locate_all(card: PairCard, request: GenRequest, sides: dict[str, SideSpec], options: DiffusersOptions
                ) -> tuple[dict[str, Path], dict[str, Any]]:
    keys = [k for s in sides.values() for k in (s.model, s.lora, s.control) if k is not None]
    keys += [options.config_from[k] for k in keys if k in options.config_from]
    paths, info = {}, {}
    for key in dict.fromkeys(keys):
        ref = card.models[key]
        paths[key] = locate_model(card, key, ref, request)
        info[key] = {**ref.model_dump(mode="json", exclude_none=True), **_lock_info(card, key, ref)}
    return paths, info


def locate_model(card: PairCard, key: str, ref: ModelRef, request: GenRequest) -> Path:
    """The local path of one model (downloaded and verified by the store when needed)."""
    from w2sd_cli.store import locate

    return Path(locate(ref, offline=request.offline, allow_pickle=request.allow_pickle, pair=card.name, key=key))


def _lock_info(card: PairCard, key: str, ref: ModelRef) -> dict[str, Any]:
    """The resolved commit and file hashes recorded in the pair's lock."""
    from w2sd_cli.store import pairlock

    entry = pairlock.entry(card.name, key, ref) or {}
    files = {name: f.get("sha256") for name, f in (entry.get("files") or {}).items() if isinstance(f, dict)}
    return {"resolved_commit": entry.get("commit"), "file_sha256": files}


def _load_models(card: PairCard, sides: dict[str, SideSpec], options: DiffusersOptions, paths: dict[str, Path],
                 dtype: torch.dtype) -> dict[str, Components]:
    models: dict[str, Components] = {}
    for key in dict.fromkeys(s.model for s in sides.values()):
        if card.models[key].format == "single-file":
            base = options.config_from[key]
            models[key] = load_single_file(_with_suffix(paths[key]), paths[base], dtype)
        else:
            models[key] = load_folder(paths[key], dtype)
    families = {m.family for m in models.values()}
    if len(families) > 1:
        raise ModelError(f"pair {card.name!r} mixes SD and SDXL models; both sides must share a latent space.")
    return models


def _load_loras(sides: dict[str, SideSpec], models: dict[str, Components], paths: dict[str, Path]) -> None:
    wanted = dict.fromkeys((s.model, s.lora) for s in sides.values() if s.lora)
    per_model: dict[str, list[str]] = {}
    for model_key, lora_key in wanted:
        assert lora_key is not None
        name = adapter_name(lora_key)
        load_lora(models[model_key].container(), _lora_file(paths[lora_key]), name, models[model_key].unet)
        per_model.setdefault(model_key, []).append(name)
    for model_key, names in per_model.items():
        models[model_key].container().set_adapters(names, [1.0] * len(names))


def _lora_file(path: Path) -> Path:
    if path.is_file():
        return _with_suffix(path)
    files = sorted(path.glob("*.safetensors"))
    preferred = [p for p in files if p.name == "pytorch_lora_weights.safetensors"]
    if not (preferred or files):
        raise ModelError(f"{path}: no .safetensors LoRA file in this folder.")
    return (preferred or files)[0]


def _with_suffix(path: Path) -> Path:
    """Store blobs are named by hash; diffusers picks its reader by suffix, so link one with a suffix."""
    from w2sd_cli.paths import home

    if path.suffix in (".safetensors", ".ckpt", ".pt", ".bin", ".pth") or not path.is_file():
        return path
    folder = home() / "links"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / f"{path.name}.safetensors"
    if not (link.is_symlink() and link.resolve() == path.resolve()):
        temp = Path(tempfile.mkdtemp(dir=folder)) / link.name
        temp.symlink_to(path.resolve())
        os.replace(temp, link)
        temp.parent.rmdir()
    return link


def _prompt_encoders(models: dict[str, Components], device: torch.device, dtype: torch.dtype,
                     clip_skip: int) -> dict[str, PromptEncoder]:
    """One encoder (and embedding cache) per distinct set of text encoders."""
    by_parts: dict[tuple[int, ...], PromptEncoder] = {}
    encoders = {}
    for key, model in models.items():
        parts = tuple(id(e) for e in (*model.text_encoders, *model.tokenizers))
        if parts not in by_parts:
            lora = LoraScales.scan(model.text_encoders)
            by_parts[parts] = PromptEncoder(model.family, model.tokenizers, model.text_encoders, device, dtype,
                                            clip_skip, model.force_zeros_for_empty_prompt,
                                            lora if lora.slots else None)
        encoders[key] = by_parts[parts]
    return encoders


def _place(models: dict[str, Components], controlnets: dict[str, Any], device: torch.device, offload: bool) -> None:
    """Move everything to ``device``; with ``offload`` (CUDA only) each model visits the GPU only while it runs."""
    if offload and device.type == "cuda":
        for model in _unique(list(models.values())):
            model.container().enable_model_cpu_offload(device=device)
        modules = list(controlnets.values())
    else:
        modules = [*(m for c in models.values() for m in c.modules()), *controlnets.values()]
    for module in _unique(modules):
        module.to(device)


def _quiet_libraries() -> None:
    """diffusers and transformers print progress bars and advice; w2sd reports progress itself."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _unique(items: list[Any]) -> list[Any]:
    return list({id(i): i for i in items}.values())
