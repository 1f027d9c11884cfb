"""Flow-matching models (Stable Diffusion 3.x, FLUX.1) as velocity denoisers, with their prompts and time grids.

Levels are flow times ``t`` in [0, 1] (diffusers' ``sigmas``; ``x_t = (1 - t) x0 + t noise``). The grid comes
from the model's own ``FlowMatchEulerDiscreteScheduler`` config through the scheduler class itself, with the
pipelines' rules: SD3 uses the static ``shift``; FLUX passes ``linspace(1, 1/T, T)`` and a ``mu`` from the
image token count (dynamic shifting). Network conventions differ: SD3's transformer takes ``1000 t``, FLUX's
takes ``t`` (it scales by 1000 inside) plus a distilled-guidance embedding on FLUX.1-dev, on 2×2-packed
latents. Sampling state is always the unpacked ``(B, C, H, W)`` latent; packing is a permutation, so Euler
steps commute with it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from w2sd_cli.adapters.lora import LoraScales
from w2sd_cli.adapters.models import first_line, read_json
from w2sd_cli.adapters.unet import Conditioning, Network
from w2sd_cli.errors import ModelError
from w2sd_cli.sampling import Level

FAMILIES = ("sd3", "flux")
MAX_SEQUENCE = {"sd3": 256, "flux": 512}
"""The pipelines' default T5 lengths (FLUX.1-schnell uses 256: set ``options.max_sequence_length``)."""
DEFAULT_GUIDANCE = 3.5
"""FluxPipeline's default distilled guidance."""


@dataclass
class FlowComponents:
    """One flow model's parts.

    Attributes:
        family: ``sd3`` (CLIP-L + CLIP-G + T5, MMDiT) or ``flux`` (CLIP-L pooled + T5, packed latents).
        text_encoders, tokenizers: in pipeline order (SD3: 3 of each, the T5 may be absent; FLUX: 2).
        scheduler_config: the model's own flow scheduler config (shift, dynamic shifting).
    """

    family: str
    transformer: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    scheduler_config: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    _container: Any = None

    @property
    def net(self) -> Any:
        return self.transformer

    @property
    def vae_scale_factor(self) -> int:
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))

    @property
    def latent_multiple(self) -> int:
        """Image sides must be multiples of this (the VAE factor × the patch or packing size)."""
        patch = int(self.transformer.config.patch_size) if self.family == "sd3" else 2
        return self.vae_scale_factor * patch

    @property
    def native_size(self) -> int:
        size = getattr(self.transformer.config, "sample_size", None) or 128  # FluxPipeline's default_sample_size
        return int(size) * self.vae_scale_factor

    @property
    def guidance_embeds(self) -> bool:
        """A guidance-distilled model (FLUX.1-dev): guidance is an input, not a second branch."""
        return bool(getattr(self.transformer.config, "guidance_embeds", False))

    def container(self) -> Any:
        """A diffusers pipeline over these parts (diffusers' LoRA loader lives on pipelines)."""
        if self._container is None:
            from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusion3Pipeline

            scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
            enc, tok = self.text_encoders, self.tokenizers
            if self.family == "flux":
                self._container = FluxPipeline(scheduler=scheduler, vae=self.vae, text_encoder=enc[0],
                                               tokenizer=tok[0], text_encoder_2=enc[1], tokenizer_2=tok[1],
                                               transformer=self.transformer)
            else:
                self._container = StableDiffusion3Pipeline(
                    transformer=self.transformer, scheduler=scheduler, vae=self.vae, text_encoder=enc[0],
                    tokenizer=tok[0], text_encoder_2=enc[1], tokenizer_2=tok[1], text_encoder_3=enc[2],
                    tokenizer_3=tok[2])
        return self._container


def detect_family(folder: Path) -> str:
    """``sd3`` or ``flux`` from the folder's ``model_index.json`` (or its transformer config)."""
    index = read_json(folder / "model_index.json").get("_class_name", "")
    transformer = read_json(folder / "transformer" / "config.json").get("_class_name", "")
    if "Flux" in index or transformer == "FluxTransformer2DModel":
        return "flux"
    if "StableDiffusion3" in index or transformer == "SD3Transformer2DModel":
        return "sd3"
    raise ModelError(f"{folder}: not an SD3 or FLUX diffusers folder (model_index.json names {index or 'nothing'!r}, "
                     f"transformer/config.json {transformer or 'nothing'!r}).")


def load_flow_folder(folder: Path, dtype: torch.dtype, shared_from: FlowComponents | None = None) -> FlowComponents:
    """Load an SD3 or FLUX diffusers folder; with ``shared_from`` only the transformer and scheduler are read.

    Raises:
        ModelError: the folder is not a flow model, or a part does not load.
    """
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel

    family = detect_family(folder)
    if shared_from is not None and shared_from.family != family:
        raise ModelError(f"{folder}: a {family} model cannot share the text encoders and VAE of a "
                         f"{shared_from.family} model.")
    cls: Any = FluxTransformer2DModel if family == "flux" else SD3Transformer2DModel
    try:
        transformer = cls.from_pretrained(folder, subfolder="transformer", torch_dtype=dtype, local_files_only=True)
        if shared_from is not None:
            vae, encoders, tokenizers = shared_from.vae, shared_from.text_encoders, shared_from.tokenizers
        else:
            vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype, local_files_only=True)
            encoders, tokenizers = _text_parts(folder, family, dtype)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"{folder}: cannot load the model ({first_line(err)}). "
                         "Run `w2sd pull` for the pair again, or check the folder.") from None
    info: dict[str, Any] = {"path": str(folder), "format": "diffusers", "family": family}
    if shared_from is not None:
        info["text_encoders_and_vae_from"] = shared_from.info.get("path")
    return FlowComponents(family, transformer.eval(), vae.eval(), [e.eval() if e is not None else None
                                                                  for e in encoders], tokenizers,
                          _scheduler_config(folder), info)


def _text_parts(folder: Path, family: str, dtype: torch.dtype) -> tuple[list[Any], list[Any]]:
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    def tokenizer(sub: str) -> Any:
        return AutoTokenizer.from_pretrained(folder, subfolder=sub, local_files_only=True)

    if family == "flux":
        encoders: list[Any] = [CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype,
                                                             local_files_only=True),
                               T5EncoderModel.from_pretrained(folder, subfolder="text_encoder_2", dtype=dtype,
                                                              local_files_only=True)]
        return encoders, [tokenizer("tokenizer"), tokenizer("tokenizer_2")]
    encoders = [CLIPTextModelWithProjection.from_pretrained(folder, subfolder=sub, dtype=dtype, local_files_only=True)
                for sub in ("text_encoder", "text_encoder_2")]
    tokenizers = [tokenizer("tokenizer"), tokenizer("tokenizer_2")]
    if (folder / "text_encoder_3").is_dir():  # SD3 runs without its T5 (zeros in its place), as diffusers allows
        encoders.append(T5EncoderModel.from_pretrained(folder, subfolder="text_encoder_3", dtype=dtype,
                                                       local_files_only=True))
        tokenizers.append(tokenizer("tokenizer_3"))
    else:
        encoders.append(None)
        tokenizers.append(None)
    return encoders, tokenizers


def flow_grid(config: Mapping[str, Any], family: str, steps: int, image_tokens: int) -> list[Level]:
    """The flow times diffusers' own scheduler samples at (``set_timesteps`` as the family's pipeline calls it),
    then the clean end ``0``: ``steps + 1`` levels.

    Args:
        config: the model's scheduler config (``FlowMatchEulerDiscreteScheduler``).
        family: ``sd3`` (static ``shift``; ``mu`` only if the config asks for dynamic shifting) or ``flux``
            (``linspace(1, 1/T, T)`` and ``mu`` from the token count).
        image_tokens: the transformer's image sequence length (latent cells / patch area), for ``mu``.

    Raises:
        ModelError: a scheduler setting w2sd's deterministic Euler sampler cannot honour.
    """
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    for key, why in (("stochastic_sampling", "it re-noises every step"), ("invert_sigmas", "it runs time backwards")):
        if config.get(key):
            raise ModelError(f"scheduler config: `{key}: true` is not supported: {why}, which w2sd's deterministic "
                             "Euler sampler does not do.")
    if steps < 1:
        raise ModelError(f"steps must be at least 1, got {steps}.")
    try:
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(dict(config))
    except (ValueError, TypeError) as err:
        raise ModelError(f"scheduler config: {err}") from None
    mu = calculate_shift(image_tokens, scheduler.config.get("base_image_seq_len", 256),
                         scheduler.config.get("max_image_seq_len", 4096), scheduler.config.get("base_shift", 0.5),
                         scheduler.config.get("max_shift", 1.15 if family == "flux" else 1.16))
    sigmas = None
    if family == "flux" and not scheduler.config.get("use_flow_sigmas", False):
        sigmas = np.linspace(1.0, 1 / steps, steps)
    dynamic = bool(scheduler.config.get("use_dynamic_shifting", False))
    scheduler.set_timesteps(steps if sigmas is None else None, sigmas=sigmas,
                            mu=mu if (dynamic or family == "flux") else None)
    return [float(s) for s in scheduler.sigmas.tolist()]


def image_tokens(family: str, latent_height: int, latent_width: int, patch_size: int) -> int:
    """The transformer's image sequence length for a latent of this size (FLUX packs 2×2 cells)."""
    patch = 2 if family == "flux" else patch_size
    return (latent_height // patch) * (latent_width // patch)


@dataclass
class FlowPromptEncoder:
    """Prompt embeddings of one set of text encoders, as diffusers' SD3 and FLUX pipelines compute them.

    Embeddings are cached per (prompt, text-encoder LoRA scales). With ``offload`` each encoder visits the
    device only while it encodes (T5-XXL is ~9.5 GB in bfloat16 and runs once per prompt).
    """

    family: str
    tokenizers: Sequence[Any]
    encoders: Sequence[Any]
    device: torch.device
    dtype: torch.dtype
    max_sequence_length: int
    joint_attention_dim: int = 4096
    offload: bool = False
    lora: LoraScales | None = None
    _cache: dict[tuple[Any, ...], Conditioning] = field(default_factory=dict)

    def encode(self, prompt: str | None, lora_scales: Mapping[str, float] | None = None, *, negative: bool = False,
               size: tuple[int, int] | None = None) -> Conditioning:
        """The conditioning of one prompt: token states, and the pooled embedding as ``added["pooled"]``."""
        prompt = prompt or ""
        adapters = self.lora.adapters if self.lora is not None else set()
        scales = {k: v for k, v in (lora_scales or {}).items() if k in adapters}
        key = (prompt, tuple(sorted(scales.items())))
        if key not in self._cache:
            if self.lora is not None:
                self.lora.apply(scales)
            with torch.no_grad():
                self._cache[key] = self._flux(prompt) if self.family == "flux" else self._sd3(prompt)
        return self._cache[key]

    @property
    def cached(self) -> int:
        return len(self._cache)

    def token_counts(self, prompt: str) -> list[tuple[int, int]]:
        """(tokens used, tokens kept) per tokenizer, for truncation warnings."""
        out = []
        for i, tokenizer in enumerate(self.tokenizers):
            if tokenizer is None:
                continue
            kept = self._length(i, tokenizer)
            out.append((len(tokenizer(prompt, truncation=False).input_ids), kept))
        return out

    def _length(self, index: int, tokenizer: Any) -> int:
        t5 = (self.family == "flux" and index == 1) or (self.family == "sd3" and index == 2)
        return self.max_sequence_length if t5 else int(tokenizer.model_max_length)

    def _ids(self, index: int, prompt: str) -> Tensor:
        tokenizer = self.tokenizers[index]
        return tokenizer(prompt, padding="max_length", max_length=self._length(index, tokenizer), truncation=True,
                         return_tensors="pt").input_ids

    def _sd3(self, prompt: str) -> Conditioning:
        states, pooled = [], []
        for i in (0, 1):
            with self._visit(self.encoders[i]) as encoder:
                out = encoder(self._ids(i, prompt).to(self._where(encoder)), output_hidden_states=True)
                states.append(out.hidden_states[-2].to(self.device, self.dtype))
                pooled.append(out[0].to(self.device, self.dtype))
        clip = torch.cat(states, dim=-1)
        if self.encoders[2] is None:
            t5 = torch.zeros((1, self.max_sequence_length, self.joint_attention_dim), device=self.device,
                             dtype=self.dtype)
        else:
            with self._visit(self.encoders[2]) as encoder:
                t5 = encoder(self._ids(2, prompt).to(self._where(encoder)))[0].to(self.device, self.dtype)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return Conditioning(torch.cat([clip, t5], dim=-2), {"pooled": torch.cat(pooled, dim=-1)})

    def _flux(self, prompt: str) -> Conditioning:
        with self._visit(self.encoders[0]) as encoder:
            pooled = encoder(self._ids(0, prompt).to(self._where(encoder)), output_hidden_states=False).pooler_output
        with self._visit(self.encoders[1]) as encoder:
            states = encoder(self._ids(1, prompt).to(self._where(encoder)), output_hidden_states=False)[0]
        return Conditioning(states.to(self.device, self.dtype), {"pooled": pooled.to(self.device, self.dtype)})

    @contextmanager
    def _visit(self, module: Any) -> Iterator[Any]:
        with visiting(module, self.device, self.offload):
            yield module

    @staticmethod
    def _where(module: Any) -> torch.device:
        return next(module.parameters()).device


@contextmanager
def visiting(module: Any, device: torch.device, offload: bool) -> Iterator[None]:
    """With ``offload``, ``module`` is on ``device`` for the block only, and back on the CPU after."""
    if not offload:
        yield
        return
    module.to(device)
    try:
        yield
    finally:
        module.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()


def sd3_network(transformer: Any, guidance: float | None = None) -> Network:
    """SD3's MMDiT: timestep ``1000 t`` (float32, as the scheduler's ``timesteps``); no guidance input."""

    def call(x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        return transformer(hidden_states=x, timestep=(t.float() * 1000), encoder_hidden_states=cond.hidden_states,
                           pooled_projections=cond.added["pooled"], return_dict=False)[0]

    return call


def flux_network(transformer: Any, guidance: float | None = None) -> Network:
    """FLUX: 2×2-packed latents with position ids, timestep ``t`` (FluxPipeline's ``t·1000 → dtype → /1000``),
    and the distilled guidance as an input on guidance-embedding models."""
    embeds = bool(getattr(transformer.config, "guidance_embeds", False))

    def call(x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        b, c, h, w = x.shape
        packed = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)
        timestep = (t.float() * 1000).to(x.dtype) / 1000
        g = None
        if embeds:
            g = torch.full((b,), DEFAULT_GUIDANCE if guidance is None else float(guidance), dtype=torch.float32,
                           device=x.device)
        out = transformer(hidden_states=packed, timestep=timestep, guidance=g, pooled_projections=cond.added["pooled"],
                          encoder_hidden_states=cond.hidden_states, txt_ids=_text_ids(cond, x),
                          img_ids=_image_ids(h // 2, w // 2, x), return_dict=False)[0]
        return out.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)

    return call


def _image_ids(h: int, w: int, like: Tensor) -> Tensor:
    ids = torch.zeros(h, w, 3)
    ids[..., 1] += torch.arange(h)[:, None]
    ids[..., 2] += torch.arange(w)[None, :]
    return ids.reshape(h * w, 3).to(like.device, like.dtype)


def _text_ids(cond: Conditioning, like: Tensor) -> Tensor:
    return torch.zeros(cond.hidden_states.shape[1], 3, device=like.device, dtype=cond.hidden_states.dtype)


def _scheduler_config(folder: Path) -> dict[str, Any]:
    path = folder / "scheduler" / "scheduler_config.json"
    config = read_json(path)
    if not config:
        raise ModelError(f"{folder}: no scheduler/scheduler_config.json; the flow time grid cannot be known.")
    name = config.get("_class_name", "FlowMatchEulerDiscreteScheduler")
    if name != "FlowMatchEulerDiscreteScheduler":
        raise ModelError(f"{path}: scheduler {name!r} is not a flow-matching Euler scheduler; the `flow` kind samples "
                         "models trained for FlowMatchEulerDiscreteScheduler (SD3, FLUX).")
    return config
