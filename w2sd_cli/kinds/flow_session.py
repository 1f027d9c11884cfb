"""One loaded flow pair (SD3.x / FLUX.1): transformers on the device once, velocity denoisers per condition.

Imported only when a flow pair runs (it imports torch and diffusers). Text encoders and the VAE are used only
when a prompt is first encoded and when latents are decoded; with ``--offload`` they live on the CPU and visit
the device for that moment, so only the transformers (and their LoRAs) stay on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from w2sd_cli.adapters.flow import (
    DEFAULT_GUIDANCE,
    MAX_SEQUENCE,
    FlowComponents,
    FlowDenoiser,
    FlowPromptEncoder,
    flow_grid,
    flux_network,
    image_tokens,
    load_flow_folder,
    sd3_network,
    visiting,
)
from w2sd_cli.adapters.lora import LoraScales, adapter_name, load_lora
from w2sd_cli.adapters.models import DTYPES, decode, pick_device, same_weights
from w2sd_cli.cards import PairCard
from w2sd_cli.errors import InputError, ModelError
from w2sd_cli.kinds.base import Condition, LoadSettings, PreparedPair, Settings, model_path
from w2sd_cli.kinds.flow import FlowSide, resolve_flow_sides
from w2sd_cli.kinds.image_session import lock_info, lora_file, quiet_libraries, unique
from w2sd_cli.kinds.image_sides import check_size, render_prompt

if TYPE_CHECKING:
    from w2sd_cli.kinds.flow import FlowOptions

ROLES = ("strong", "weak", "final", "weak_plain")


@dataclass
class FlowPair:
    """A loaded ``flow`` pair: every side's transformer once, one encoder (and embedding cache) per text-encoder set."""

    card: PairCard
    options: FlowOptions
    device: torch.device
    dtype: torch.dtype
    models: dict[str, FlowComponents]
    encoders: dict[str, FlowPromptEncoder]
    lora: LoraScales
    offload: bool = False
    model_info: dict[str, Any] = field(default_factory=dict)
    shared: int = 0

    @classmethod
    def open(cls, card: PairCard, options: FlowOptions, settings: LoadSettings) -> FlowPair:
        quiet_libraries()
        device = pick_device(settings.device)
        dtype = flow_dtype(device, settings.dtype)
        sides = resolve_flow_sides(card)
        paths, info = _locate(card, settings, sides, options)
        models = _load_models(card, sides, options, paths, dtype)
        shared = _share_identical(models)
        _load_loras(sides, models, paths)
        transformers = unique([m.transformer for m in models.values()])
        for module in transformers:
            module.to(device)
        for module in unique([p for m in models.values() for p in (m.vae, *m.text_encoders) if p is not None]):
            module.to("cpu" if settings.offload else device)
        lora = LoraScales.scan(transformers)
        encoders = prompt_encoders(models, device, dtype, options, settings.offload)
        pair = cls(card, options, device, dtype, models, encoders, lora, settings.offload, info, shared)
        for spec in sides.values():
            pair._check_guidance(spec)
        return pair

    @property
    def embeddings_computed(self) -> int:
        return sum(e.cached for e in unique(list(self.encoders.values())))

    def prepare(self, condition: Condition, settings: Settings) -> PreparedPair:
        """The four velocity denoisers for one prompt, the flow grid of the final model, seeded noise."""
        if settings.reference_interval:
            raise InputError("--reference-interval reproduces the reference code's DDIM inversion interval; flow "
                             "pairs invert one Euler step exactly and have no such switch.")
        distilled = self.models[resolve_flow_sides(self.card)["final"].model].guidance_embeds
        sides = {role: self._effective(spec) for role, spec in
                 resolve_flow_sides(self.card, settings.cfg, guidance_final=distilled).items()}
        if condition.negative_prompt is not None:
            sides = {role: replace(spec, negative_prompt=condition.negative_prompt) for role, spec in sides.items()}
        if self.options.needs_strong_prompt and not condition.strong_prompt:
            raise InputError(f"Pair {self.card.name} compares a refined prompt with the raw one: give --strong-prompt "
                             "(the refined prompt) as well as the prompt.")
        final = self.models[sides["final"].model]
        width, height = settings.width or final.native_size, settings.height or final.native_size
        check_size(width, height, final.latent_multiple, final.latent_multiple)
        prompts = {role: render_prompt(s.prompt, condition.prompt, condition.strong_prompt,
                                       "weak" if role == "weak_plain" else role) for role, s in sides.items()}
        denoisers = {role: self._denoiser(sides[role], prompts[role]) for role in ROLES}
        latent = (1, int(final.vae.config.latent_channels), height // final.vae_scale_factor,
                  width // final.vae_scale_factor)
        tokens = image_tokens(final.family, latent[2], latent[3], int(final.transformer.config.patch_size))
        config = final.scheduler_config

        def make_grid(steps: int) -> list[float]:
            return flow_grid(config, final.family, steps, tokens)

        def noise(seed: int) -> Tensor:
            generator = torch.Generator("cpu").manual_seed(seed)
            return torch.randn(latent, generator=generator, dtype=torch.float32).to(self.device)

        from w2sd_cli.sampling import FlowSchedule

        described = {role: {**spec.as_dict(), "rendered_prompt": prompts[role], "width": width, "height": height}
                     for role, spec in sides.items()}
        return PreparedPair(strong=denoisers["strong"], weak=denoisers["weak"], final=denoisers["final"],
                            weak_plain=denoisers["weak_plain"], schedule=FlowSchedule(), grid=make_grid(settings.steps),
                            make_grid=make_grid, noise=noise, sides=described,
                            warnings=self._truncation_warnings(sides, prompts), info=self.model_info)

    def decode(self, x: Tensor, count: int) -> list[Any]:
        """The final side's VAE (on the device only while it decodes, with ``--offload``)."""
        from w2sd_cli.images import to_image

        vae = self.models[resolve_flow_sides(self.card)["final"].model].vae
        with visiting(vae, self.device, self.offload):
            pixels = decode(vae, x)
        if not bool(torch.isfinite(pixels).all()):
            raise ModelError("the VAE decoded NaN/inf pixels; try --dtype float32 (or bfloat16).")
        return [to_image(pixels[i]) for i in range(count)]

    def provenance(self) -> dict[str, Any]:
        return {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."), "models": self.model_info,
                "shared_components": self.shared, "offload": self.offload}

    def _effective(self, spec: FlowSide) -> FlowSide:
        """Guidance made explicit: the default on guidance-distilled models, none elsewhere."""
        if self.models[spec.model].guidance_embeds and spec.guidance is None:
            return replace(spec, guidance=DEFAULT_GUIDANCE)
        return spec

    def _check_guidance(self, spec: FlowSide) -> None:
        if spec.guidance is not None and not self.models[spec.model].guidance_embeds:
            raise ModelError(f"pair {self.card.name!r}: model {spec.model!r} has no guidance input (not a "
                             "guidance-distilled model like FLUX.1-dev); remove `guidance` from its sides and use "
                             "`cfg` (true classifier-free guidance).")

    def _denoiser(self, spec: FlowSide, prompt: str) -> FlowDenoiser:
        model = self.models[spec.model]
        encoder = self.encoders[spec.model]
        scales = {adapter_name(spec.lora): spec.lora_scale} if spec.lora else {}
        net_scales = {k: v for k, v in scales.items() if k in self.lora.adapters}
        cond = encoder.encode(prompt, scales)
        uncond = None if spec.cfg == 1.0 else encoder.encode(spec.negative_prompt, scales)
        network = flux_network(model.transformer) if model.family == "flux" else sd3_network(model.transformer)
        lora = self.lora
        return FlowDenoiser(network, cond, uncond, spec.cfg, spec.guidance, dtype=self.dtype,
                            before=lambda: lora.apply(net_scales))

    def _truncation_warnings(self, sides: dict[str, FlowSide], prompts: dict[str, str]) -> list[str]:
        warnings = []
        for role in ("strong", "weak", "final"):
            for used, kept in self.encoders[sides[role].model].token_counts(prompts[role]):
                message = (f"the prompt is {used} tokens long; a text encoder keeps {kept}, so the end of it was cut "
                           "for that encoder (shorten the prompt to use all of it).")
                if used > kept and message not in warnings:
                    warnings.append(message)
        return warnings


def flow_dtype(device: torch.device, name: str | None) -> torch.dtype:
    """bfloat16 on GPUs (SD3 and FLUX overflow in float16), float32 on the CPU, unless ``--dtype`` names one."""
    if name is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise InputError(f"--dtype {name!r}: use float32, float16 or bfloat16.")
    if DTYPES[name] is torch.float16 and device.type == "cpu":
        raise InputError("--dtype float16 does not run on the CPU; use float32 or bfloat16 there.")
    return DTYPES[name]


def _locate(card: PairCard, settings: LoadSettings, sides: dict[str, FlowSide], options: FlowOptions
            ) -> tuple[dict[str, Path], dict[str, Any]]:
    keys = [k for s in sides.values() for k in (s.model, s.lora) if k is not None]
    keys += [options.components_from[k] for k in keys if k in options.components_from]
    paths, info = {}, {}
    for key in dict.fromkeys(keys):
        ref = card.models[key]
        paths[key] = model_path(card, key, settings)
        info[key] = {**ref.model_dump(mode="json", exclude_none=True), **lock_info(card, key, ref)}
    return paths, info


def _load_models(card: PairCard, sides: dict[str, FlowSide], options: FlowOptions, paths: dict[str, Path],
                 dtype: torch.dtype) -> dict[str, FlowComponents]:
    used = list(dict.fromkeys(s.model for s in sides.values()))
    bases = [options.components_from[k] for k in used if k in options.components_from]
    models: dict[str, FlowComponents] = {}
    for key in dict.fromkeys([*bases, *(k for k in used if k not in options.components_from)]):
        models[key] = load_flow_folder(paths[key], dtype)
    for key in used:
        if key in options.components_from:
            models[key] = load_flow_folder(paths[key], dtype, shared_from=models[options.components_from[key]])
    families = {models[k].family for k in used}
    if len(families) > 1:
        raise ModelError(f"pair {card.name!r} mixes SD3 and FLUX models; both sides must share a latent space.")
    channels = {int(models[k].vae.config.latent_channels) for k in used}
    if len(channels) > 1:
        raise ModelError(f"pair {card.name!r}: the sides' VAEs have different latent channels {sorted(channels)}.")
    return {k: models[k] for k in used}


def _share_identical(models: dict[str, FlowComponents]) -> int:
    """Later models reuse earlier models' VAE and text encoders where the weights are bit-identical."""
    shared = 0
    distinct = unique(list(models.values()))
    for i, model in enumerate(distinct):
        for earlier in distinct[:i]:
            if model.vae is not earlier.vae and same_weights(model.vae, earlier.vae):
                model.vae, shared = earlier.vae, shared + 1
            for j, encoder in enumerate(model.text_encoders):
                other = earlier.text_encoders[j] if j < len(earlier.text_encoders) else None
                if encoder is not None and other is not None and encoder is not other and same_weights(encoder, other):
                    model.text_encoders[j], model.tokenizers[j] = other, earlier.tokenizers[j]
                    shared += 1
    return shared


def _load_loras(sides: dict[str, FlowSide], models: dict[str, FlowComponents], paths: dict[str, Path]) -> None:
    per_model: dict[str, list[str]] = {}
    for model_key, lora_key in dict.fromkeys((s.model, s.lora) for s in sides.values() if s.lora):
        assert lora_key is not None
        name = adapter_name(lora_key)
        load_lora(models[model_key].container(), lora_file(paths[lora_key]), name, models[model_key].transformer)
        per_model.setdefault(model_key, []).append(name)
    for model_key, names in per_model.items():
        models[model_key].container().set_adapters(names, [1.0] * len(names))


def prompt_encoders(models: dict[str, FlowComponents], device: torch.device, dtype: torch.dtype,
                     options: FlowOptions, offload: bool) -> dict[str, FlowPromptEncoder]:
    by_parts: dict[tuple[int, ...], FlowPromptEncoder] = {}
    encoders = {}
    for key, model in models.items():
        parts = tuple(id(e) for e in (*model.text_encoders, *model.tokenizers))
        if parts not in by_parts:
            lora = LoraScales.scan([e for e in model.text_encoders if e is not None])
            length = options.max_sequence_length or MAX_SEQUENCE[model.family]
            by_parts[parts] = FlowPromptEncoder(
                model.family, model.tokenizers, model.text_encoders, device, dtype, length,
                int(getattr(model.transformer.config, "joint_attention_dim", 4096)), offload,
                lora if lora.slots else None)
        encoders[key] = by_parts[parts]
    return encoders
