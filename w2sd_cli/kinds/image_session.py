"""One loaded image pair: models on the device once, denoisers per condition, seeded noise, decoding.

Imported only when an image pair runs (it imports torch and the diffusers adapters).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
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
from w2sd_cli.errors import InputError, ModelError
from w2sd_cli.kinds.base import Condition, LoadSettings, PreparedPair, Settings, model_path
from w2sd_cli.kinds.image_sides import SideSpec, check_size, render_prompt, resolve_sides

if TYPE_CHECKING:
    from w2sd_cli.kinds.image import DiffusersOptions

ROLES = ("strong", "weak", "final", "weak_plain")


@dataclass
class DiffusersPair:
    """A loaded ``diffusers`` pair: models on the device once; each condition gets its own denoisers."""

    card: PairCard
    options: DiffusersOptions
    device: torch.device
    dtype: torch.dtype
    models: dict[str, Components]
    encoders: dict[str, PromptEncoder]
    lora: LoraScales
    model_info: dict[str, Any] = field(default_factory=dict)
    shared: int = 0
    controlnets: dict[str, Any] = field(default_factory=dict)
    adapter_scales: dict[str, dict[str, float]] | None = None
    """Per role, adapter name -> scale, instead of the card's one LoRA per side (``from_pipelines``)."""
    _controls: dict[tuple[Any, ...], Tensor] = field(default_factory=dict)

    @classmethod
    def open(cls, card: PairCard, options: DiffusersOptions, settings: LoadSettings) -> DiffusersPair:
        """Locate and load every model any side of the card uses."""
        quiet_libraries()
        device = pick_device(settings.device)
        dtype = pick_dtype(device, settings.dtype)
        sides = resolve_sides(card)
        paths, info = _locate_all(card, settings, sides, options)
        models = _load_models(card, sides, options, paths, dtype)
        shared = share_identical(unique(list(models.values())))
        _load_loras(sides, models, paths)
        controlnets = {s.control: load_controlnet(paths[s.control], dtype) for s in sides.values() if s.control}
        _place(models, controlnets, device, offload=settings.offload)
        lora = LoraScales.scan(unique([c.unet for c in models.values()]))
        encoders = prompt_encoders(models, device, dtype, options.clip_skip)
        return cls(card, options, device, dtype, models, encoders, lora, info, shared=shared, controlnets=controlnets)

    @property
    def embeddings_computed(self) -> int:
        return sum(e.cached for e in unique(list(self.encoders.values())))

    def prepare(self, condition: Condition, settings: Settings) -> PreparedPair:
        """The four denoisers for one prompt (embeddings computed before are reused)."""
        sides = resolve_sides(self.card, settings.cfg)
        if condition.negative_prompt is not None:
            sides = {role: replace(spec, negative_prompt=condition.negative_prompt) for role, spec in sides.items()}
        if self.options.needs_strong_prompt and not condition.strong_prompt:
            raise InputError(f"Pair {self.card.name} compares a refined prompt with the raw one: give --strong-prompt "
                             "(the refined prompt) as well as the prompt.")
        strong = self.models[sides["strong"].model]
        width, height = settings.width or strong.native_size, settings.height or strong.native_size
        down = 2 ** (len(strong.unet.config.down_block_types) - 1)
        check_size(width, height, strong.vae_scale_factor, strong.vae_scale_factor * down)
        control = self._control(sides, condition, width, height)
        prompts = {role: render_prompt(s.prompt, condition.prompt, condition.strong_prompt,
                                       "weak" if role == "weak_plain" else role) for role, s in sides.items()}
        config = strong.scheduler_config
        schedule = schedule_from_config(config)
        for key in {s.model for s in sides.values()}:
            other = schedule_from_config(self.models[key].scheduler_config)
            if not torch.allclose(other.alphas_cumprod, schedule.alphas_cumprod):
                raise ModelError(f"models {sides['strong'].model!r} and {key!r} use different noise schedules; "
                                 "a pair's sides must share one.")
        size = (height, width)
        denoisers = {role: self._denoiser(role, sides[role], prompts[role], schedule, size, control) for role in ROLES}
        latent = (1, int(strong.unet.config.in_channels), height // strong.vae_scale_factor,
                  width // strong.vae_scale_factor)

        def noise(seed: int) -> Tensor:
            generator = torch.Generator("cpu").manual_seed(seed)
            return torch.randn(latent, generator=generator, dtype=torch.float32).to(self.device)

        def make_grid(steps: int) -> list[float]:
            return grid_from_config(schedule, config, steps)

        described = {role: {**spec.as_dict(), "rendered_prompt": prompts[role], "width": width, "height": height,
                            "text_encoder_lora": self.options.text_encoder_lora,
                            **({"adapter_scales": self.adapter_scales.get(role, {})} if self.adapter_scales else {})}
                     for role, spec in sides.items()}
        warnings = self._truncation_warnings(sides, prompts)
        return PreparedPair(strong=denoisers["strong"], weak=denoisers["weak"], final=denoisers["final"],
                            weak_plain=denoisers["weak_plain"], schedule=schedule, grid=make_grid(settings.steps),
                            make_grid=make_grid, noise=noise, sides=described, warnings=warnings,
                            info=self.model_info)

    def decode(self, x: Tensor, count: int) -> list[Any]:
        """The final side's VAE, batched; NaN pixels are an error naming the fix."""
        from w2sd_cli.images import to_image

        vae = self.models[resolve_sides(self.card)["final"].model].vae
        pixels = decode(vae, x)
        if not bool(torch.isfinite(pixels).all()):
            raise ModelError("the VAE decoded NaN/inf pixels; try --dtype float32 (or bfloat16).")
        return [to_image(pixels[i]) for i in range(count)]

    def provenance(self) -> dict[str, Any]:
        return {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."), "models": self.model_info,
                "shared_components": self.shared}

    def _control(self, sides: dict[str, SideSpec], condition: Condition, width: int, height: int) -> Tensor | None:
        if not any(spec.control for spec in sides.values()):
            return None
        if condition.control_image is None:
            raise InputError(f"Pair {self.card.name} conditions a ControlNet on an image: give --control-image PATH "
                             "(an edge map, or a photo to turn into one).")
        key = (str(condition.control_image), width, height)
        if key not in self._controls:
            o = self.options
            self._controls = {key: load_control_image(condition.control_image, width, height, o.control_preprocess,
                                                      o.canny_low, o.canny_high)}
        return self._controls[key]

    def _denoiser(self, role: str, spec: SideSpec, prompt: str, schedule: Any, size: tuple[int, int],
                  control: Tensor | None) -> CFGDenoiser:
        model = self.models[spec.model]
        encoder = self.encoders[spec.model]
        if self.adapter_scales is not None:
            scales = dict(self.adapter_scales.get(role, {}))
        else:
            scales = {adapter_name(spec.lora): spec.lora_scale} if spec.lora else {}
        unet_scales = {k: v for k, v in scales.items() if k in self.lora.adapters}
        text_scales = scales if self.options.text_encoder_lora else {k: 0.0 for k in scales}
        cond = encoder.encode(prompt, text_scales, size=size)
        uncond = None if spec.cfg == 1.0 else encoder.encode(spec.negative_prompt, text_scales, negative=True,
                                                              size=size)
        extra = None
        if spec.control is not None and control is not None:
            extra = controlnet_residuals(self.controlnets[spec.control], control, spec.control_scale)
        net = unet_network(model.unet, extra)
        lora = self.lora

        def network(x: Tensor, timestep: Tensor, c: Any) -> Tensor:
            lora.apply(unet_scales)
            return net(x, timestep, c)

        prediction = str(model.scheduler_config.get("prediction_type", "epsilon"))
        return CFGDenoiser(network, schedule, cond, uncond, spec.cfg, prediction, dtype=self.dtype)

    def _truncation_warnings(self, sides: dict[str, SideSpec], prompts: dict[str, str]) -> list[str]:
        """A warning for each prompt longer than its tokenizer keeps (CLIP: 77 tokens)."""
        warnings = []
        for role in ("strong", "weak", "final"):
            tokenizer = self.models[sides[role].model].tokenizers[0]
            kept = int(tokenizer.model_max_length)
            used = len(tokenizer(prompts[role], truncation=False).input_ids)
            message = (f"the prompt is {used} tokens long; the text encoder keeps {kept}, so the end of it was cut "
                       "(shorten the prompt to use all of it).")
            if used > kept and message not in warnings:
                warnings.append(message)
        return warnings


def _locate_all(card: PairCard, settings: LoadSettings, sides: dict[str, SideSpec], options: DiffusersOptions
                ) -> tuple[dict[str, Path], dict[str, Any]]:
    keys = [k for s in sides.values() for k in (s.model, s.lora, s.control) if k is not None]
    keys += [options.config_from[k] for k in keys if k in options.config_from]
    paths, info = {}, {}
    for key in dict.fromkeys(keys):
        ref = card.models[key]
        paths[key] = model_path(card, key, settings)
        info[key] = {**ref.model_dump(mode="json", exclude_none=True), **lock_info(card, key, ref)}
    return paths, info


def lock_info(card: PairCard, key: str, ref: ModelRef) -> dict[str, Any]:
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
        load_lora(models[model_key].container(), lora_file(paths[lora_key]), name, models[model_key].unet)
        per_model.setdefault(model_key, []).append(name)
    for model_key, names in per_model.items():
        models[model_key].container().set_adapters(names, [1.0] * len(names))


def lora_file(path: Path) -> Path:
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


def prompt_encoders(models: dict[str, Components], device: torch.device, dtype: torch.dtype,
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
        for model in unique(list(models.values())):
            model.container().enable_model_cpu_offload(device=device)
        modules = list(controlnets.values())
    else:
        modules = [*(m for c in models.values() for m in c.modules()), *controlnets.values()]
    for module in unique(modules):
        module.to(device)


def quiet_libraries() -> None:
    """diffusers and transformers print progress bars and advice; w2sd reports progress itself."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def unique(items: list[Any]) -> list[Any]:
    return list({id(i): i for i in items}.values())
