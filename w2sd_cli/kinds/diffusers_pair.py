"""One loaded ``diffusers`` pair, any family: models on the device once, side specs per condition, seeded noise,
decoding. Loading is one path: locate → load → share identical components → place → LoRA scales.

Imported only when a diffusers pair runs (it imports torch and the diffusers adapters).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from w2sd_cli.adapters import families
from w2sd_cli.adapters.control import controlnet_residuals, load_control_image
from w2sd_cli.adapters.flow import DEFAULT_GUIDANCE, visiting
from w2sd_cli.adapters.lora import LoraScales, adapter_name, load_lora
from w2sd_cli.adapters.models import decode, load_controlnet, pick_device
from w2sd_cli.adapters.unet import CFGDenoiser
from w2sd_cli.cards import ModelRef, PairCard
from w2sd_cli.errors import InputError, ModelError
from w2sd_cli.kinds.base import Condition, LoadSettings, PreparedPair, Settings, model_path
from w2sd_cli.kinds.diffusers_sides import (
    GUIDANCE_KNOBS,
    DiffusersOptions,
    SideSpec,
    check_size,
    needed_keys,
    render_prompt,
    with_cfg_flag,
)


@dataclass
class DiffusersPair:
    """A loaded ``diffusers`` pair: its sides resolved once, every model once, one encoder per text-encoder set."""

    card: PairCard
    options: DiffusersOptions
    sides: dict[str, SideSpec]
    family: families.Family
    device: torch.device
    dtype: torch.dtype
    models: dict[str, Any]
    encoders: dict[str, Any]
    lora: LoraScales
    model_info: dict[str, Any] = field(default_factory=dict)
    shared: int = 0
    controlnets: dict[str, Any] = field(default_factory=dict)
    offload: bool = False
    _controls: dict[tuple[Any, ...], Tensor] = field(default_factory=dict)

    @classmethod
    def open(cls, card: PairCard, options: DiffusersOptions, sides: dict[str, SideSpec],
             settings: LoadSettings) -> DiffusersPair:
        """Locate and load every model any side of the card uses."""
        quiet_libraries()
        device = pick_device(settings.device)
        paths, info = _locate(card, settings, needed_keys(sides, options))
        strong = sides["strong"].model
        family = families.detect(paths[options.config_from.get(strong, strong)])
        dtype = family.dtype(device, settings.dtype)
        models = _load_models(card, sides, options, paths, dtype)
        shared = family.share(unique(list(models.values())))
        _load_loras(sides, models, paths)
        controlnets = {s.control: load_controlnet(paths[s.control], dtype) for s in sides.values() if s.control}
        family.place(unique(list(models.values())), list(controlnets.values()), device, settings.offload)
        return cls.assemble(card, options, sides, models, device, dtype, info, shared=shared, controlnets=controlnets,
                            offload=settings.offload)

    @classmethod
    def assemble(cls, card: PairCard, options: DiffusersOptions, sides: dict[str, SideSpec], models: dict[str, Any],
                 device: torch.device, dtype: torch.dtype, info: dict[str, Any], **more: Any) -> DiffusersPair:
        """The pair over loaded, placed components (``open``, and ``from_pipelines`` over a caller's pipelines)."""
        family = families.of(next(iter(models.values())))
        if len({m.family for m in models.values()}) > 1:
            raise ModelError(f"pair {card.name!r} mixes {' and '.join(sorted({m.family for m in models.values()}))} "
                             "models; all sides must share a latent space.")
        if family.final_cfg is None:  # flow families: the final side's CFG is the strong side's unless set
            unset = card.final.cfg is None
            sides = {**sides, "final": replace(sides["final"], cfg=sides["strong"].cfg)} if unset else sides
        lora = LoraScales.scan(unique([m.net for m in models.values()]))
        by_parts: dict[tuple[int, ...], Any] = {}
        encoders = {}
        for key, model in models.items():
            parts = tuple(id(e) for e in (*model.text_encoders, *model.tokenizers))
            if parts not in by_parts:
                by_parts[parts] = family.encoder(model, device, dtype, options, bool(more.get("offload")))
            encoders[key] = by_parts[parts]
        pair = cls(card, options, sides, family, device, dtype, models, encoders, lora, info, **more)
        for spec in sides.values():
            pair._check_side(spec)
        return pair

    @property
    def embeddings_computed(self) -> int:
        return sum(e.cached for e in unique(list(self.encoders.values())))

    def prepare(self, condition: Condition, settings: Settings) -> PreparedPair:
        """The side specs for one prompt and a denoiser for each (embeddings computed before are reused)."""
        if settings.reference_interval and self.family.flow:
            raise InputError("--reference-interval reproduces the reference code's DDIM inversion interval; flow "
                             "pairs invert one Euler step exactly and have no such switch.")
        if self.options.needs_strong_prompt and not condition.strong_prompt:
            raise InputError(f"Pair {self.card.name} compares a refined prompt with the raw one: give --strong-prompt "
                             "(the refined prompt) as well as the prompt.")
        final = self.models[self.sides["final"].model]
        width, height = settings.width or final.native_size, settings.height or final.native_size
        check_size(width, height, *self.family.size_rule(final))
        specs = {role: self._for_condition(role, spec, condition) for role, spec in self.sides.items()}
        specs["final"] = self._effective(with_cfg_flag(specs["final"], settings.cfg, self.family.distilled(final)))
        latent = self.family.latent(final, width, height)
        schedule = self._schedule()
        control = self._control(condition, width, height)
        size = (height, width)

        def make_grid(steps: int) -> list[float]:
            return self.family.grid(final, schedule, steps, latent)

        def noise(seed: int) -> Tensor:
            generator = torch.Generator("cpu").manual_seed(seed)
            return torch.randn(latent, generator=generator, dtype=torch.float32).to(self.device)

        def describe(spec: SideSpec) -> dict[str, Any]:
            extra = {} if self.family.flow else {"text_encoder_lora": self.options.text_encoder_lora}
            return {**spec.as_dict(), "width": width, "height": height, **extra}

        return PreparedPair(specs=specs, denoiser=lambda spec: self._denoiser(spec, schedule, size, control),
                            guidance_knobs=GUIDANCE_KNOBS, describe=describe, schedule=schedule,
                            grid=make_grid(settings.steps), make_grid=make_grid, noise=noise,
                            warnings=self._truncation_warnings(specs), info=self.model_info)

    def decode(self, x: Tensor, count: int) -> list[Any]:
        """The final side's VAE, batched (on the device only while it decodes, with flow ``--offload``)."""
        from w2sd_cli.images import to_image

        vae = self.models[self.sides["final"].model].vae
        with visiting(vae, self.device, self.offload and self.family.flow):
            pixels = decode(vae, x)
        if not bool(torch.isfinite(pixels).all()):
            raise ModelError("the VAE decoded NaN/inf pixels; try --dtype float32 (or bfloat16).")
        return [to_image(pixels[i]) for i in range(count)]

    def provenance(self) -> dict[str, Any]:
        return {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."), "models": self.model_info,
                "shared_components": self.shared, **({"offload": self.offload} if self.family.flow else {})}

    def _for_condition(self, role: str, spec: SideSpec, condition: Condition) -> SideSpec:
        negative = condition.negative_prompt if condition.negative_prompt is not None else spec.negative_prompt
        rendered = render_prompt(spec.prompt, condition.prompt, condition.strong_prompt, role)
        return self._effective(replace(spec, negative_prompt=negative, rendered_prompt=rendered))

    def _effective(self, spec: SideSpec) -> SideSpec:
        """Guidance made explicit: the default on guidance-distilled models."""
        if spec.guidance is None and self.family.distilled(self.models[spec.model]):
            return replace(spec, guidance=DEFAULT_GUIDANCE)
        return spec

    def _schedule(self) -> Any:
        """The strong model's noise schedule, which every side must share."""
        schedule = self.family.schedule(self.models[self.sides["strong"].model])
        if self.family.flow:
            return schedule
        for key in {s.model for s in self.sides.values()}:
            other = self.family.schedule(self.models[key])
            if not torch.allclose(other.alphas_cumprod, schedule.alphas_cumprod):
                raise ModelError(f"models {self.sides['strong'].model!r} and {key!r} use different noise schedules; "
                                 "a pair's sides must share one.")
        return schedule

    def _check_side(self, spec: SideSpec) -> None:
        if spec.guidance is not None and not self.family.distilled(self.models[spec.model]):
            raise ModelError(f"pair {self.card.name!r}: model {spec.model!r} has no guidance input (not a "
                             "guidance-distilled model like FLUX.1-dev); remove `guidance` from its sides and use "
                             "`cfg` (true classifier-free guidance).")
        if spec.control is not None and self.family.flow:
            raise ModelError(f"pair {self.card.name!r}: ControlNet sides are for SD 1.x/2.x and SDXL models; "
                             f"{spec.model!r} is {self.family.name}.")

    def _control(self, condition: Condition, width: int, height: int) -> Tensor | None:
        if not any(spec.control for spec in self.sides.values()):
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

    def _denoiser(self, spec: SideSpec, schedule: Any, size: tuple[int, int], control: Tensor | None) -> CFGDenoiser:
        model, encoder = self.models[spec.model], self.encoders[spec.model]
        if spec.adapter_scales is not None:
            scales = dict(spec.adapter_scales)
        else:
            scales = {adapter_name(spec.lora): spec.lora_scale} if spec.lora else {}
        net_scales = {k: v for k, v in scales.items() if k in self.lora.adapters}
        text_scales = scales if self.options.text_encoder_lora else {k: 0.0 for k in scales}
        cond = encoder.encode(spec.rendered_prompt, text_scales, size=size)
        uncond = None if spec.cfg == 1.0 else encoder.encode(spec.negative_prompt, text_scales, negative=True,
                                                              size=size)
        extra = None
        if spec.control is not None and control is not None:
            extra = controlnet_residuals(self.controlnets[spec.control], control, spec.control_scale)
        net = self.family.network(model, spec.guidance, extra)
        lora = self.lora

        def network(x: Tensor, timestep: Tensor, c: Any) -> Tensor:
            lora.apply(net_scales)
            return net(x, timestep, c)

        return CFGDenoiser(network, schedule, cond, uncond, spec.cfg, self.family.prediction(model), dtype=self.dtype)

    def _truncation_warnings(self, specs: dict[str, SideSpec]) -> list[str]:
        """A warning for each prompt longer than a tokenizer keeps (CLIP: 77 tokens)."""
        warnings = []
        for role in ("strong", "weak", "final"):
            spec = specs[role]
            for used, kept in self.encoders[spec.model].token_counts(spec.rendered_prompt):
                message = (f"the prompt is {used} tokens long; a text encoder keeps {kept}, so the end of it was cut "
                           "(shorten the prompt to use all of it).")
                if used > kept and message not in warnings:
                    warnings.append(message)
        return warnings


def _locate(card: PairCard, settings: LoadSettings, keys: list[str]) -> tuple[dict[str, Path], dict[str, Any]]:
    paths, info = {}, {}
    for key in keys:
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
                 dtype: torch.dtype) -> dict[str, Any]:
    used = list(dict.fromkeys(s.model for s in sides.values()))
    borrowing = options.components_from
    models: dict[str, Any] = {}
    for key in dict.fromkeys([*(borrowing[k] for k in used if k in borrowing), *used]):
        if key in borrowing:
            models[key] = families.load(paths[key], dtype, shared_from=models[borrowing[key]])
        elif card.models[key].format == "single-file":
            models[key] = families.load(paths[options.config_from[key]], dtype, single_file=_with_suffix(paths[key]))
        else:
            models[key] = families.load(paths[key], dtype)
    if len({models[k].family for k in used}) > 1:
        raise ModelError(f"pair {card.name!r} mixes {' and '.join(sorted({models[k].family for k in used}))} models; "
                         "all sides must share a latent space.")
    return {k: models[k] for k in used}


def _load_loras(sides: dict[str, SideSpec], models: dict[str, Any], paths: dict[str, Path]) -> None:
    per_model: dict[str, list[str]] = {}
    for model_key, lora_key in dict.fromkeys((s.model, s.lora) for s in sides.values() if s.lora):
        name = adapter_name(str(lora_key))
        load_lora(models[model_key].container(), lora_file(paths[str(lora_key)]), name, models[model_key].net)
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
