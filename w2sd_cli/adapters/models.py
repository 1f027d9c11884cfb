"""Loading SD 1.x/2.x and SDXL components from diffusers folders or single-file checkpoints.

Nothing here touches the network: folders are read with ``local_files_only`` and single files take
their configs from a local base-model folder. Components two models share (VAE, text encoders,
tokenizers) are kept once when their weights are identical.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from w2sd_cli.errors import InputError, ModelError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@dataclass
class Components:
    """One text-to-image model's parts.

    Attributes:
        family: ``sd`` (SD 1.x/2.x) or ``sdxl``.
        scheduler_config: the model's own scheduler config (alphas, prediction type, spacing).
        force_zeros_for_empty_prompt: SDXL's pipeline rule for an empty negative prompt.
        info: provenance (source path, format) for image metadata.
    """

    family: str
    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    scheduler_config: dict[str, Any]
    force_zeros_for_empty_prompt: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    _container: Any = None

    @property
    def net(self) -> Any:
        return self.unet

    @property
    def vae_scale_factor(self) -> int:
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))

    @property
    def native_size(self) -> int:
        """The image side the UNet was trained at (``sample_size`` × VAE factor)."""
        size = self.unet.config.sample_size
        size = size[0] if isinstance(size, list | tuple) else size
        return int(size) * self.vae_scale_factor

    def container(self) -> Any:
        """A diffusers pipeline object over these parts (diffusers' LoRA loader lives on pipelines)."""
        if self._container is None:
            from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

            scheduler = DDIMScheduler.from_config(self.scheduler_config)
            if self.family == "sdxl":
                self._container = StableDiffusionXLPipeline(
                    vae=self.vae, text_encoder=self.text_encoders[0], text_encoder_2=self.text_encoders[1],
                    tokenizer=self.tokenizers[0], tokenizer_2=self.tokenizers[1], unet=self.unet, scheduler=scheduler)
            else:
                self._container = StableDiffusionPipeline(
                    vae=self.vae, text_encoder=self.text_encoders[0], tokenizer=self.tokenizers[0], unet=self.unet,
                    scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        return self._container

    def modules(self) -> list[Any]:
        """Every torch module (shared ones included)."""
        return [self.unet, self.vae, *self.text_encoders]


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; a named device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is visible to torch; use --device cpu (or auto).")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("--device mps: Apple's MPS backend is not available; use --device cpu (or auto).")
    return device


def pick_dtype(device: torch.device, name: str | None = None) -> torch.dtype:
    """float16 on GPUs and float32 on CPU unless ``--dtype`` names one."""
    if name is None:
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if name not in DTYPES:
        raise InputError(f"--dtype {name!r}: use float32, float16 or bfloat16.")
    dtype = DTYPES[name]
    if dtype is torch.float16 and device.type == "cpu":
        raise InputError("--dtype float16 does not run on the CPU; use float32 or bfloat16 there.")
    return dtype


def detect_family(folder: Path) -> str:
    """``sdxl`` when the folder holds a second text encoder, else ``sd``."""
    if (folder / "text_encoder_2").is_dir():
        return "sdxl"
    if (folder / "unet").is_dir() and (folder / "text_encoder").is_dir():
        return "sd"
    raise ModelError(f"{folder}: not a Stable Diffusion model folder (no unet/ and text_encoder/ subfolders).")


def load_folder(folder: Path, dtype: torch.dtype) -> Components:
    """Load a diffusers-format SD or SDXL folder (fp16 weight variants are picked up when alone)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    family = detect_family(folder)
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype,
                                                    local_files_only=True, variant=_variant(folder / "unet"))
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=_vae_dtype(folder / "vae", dtype),
                                            local_files_only=True, variant=_variant(folder / "vae"))
        encoders: list[Any] = [CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype,
                                                  local_files_only=True, variant=_variant(folder / "text_encoder"))]
        tokenizers = [CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)]
        if family == "sdxl":
            encoders.append(CLIPTextModelWithProjection.from_pretrained(
                folder, subfolder="text_encoder_2", dtype=dtype, local_files_only=True,
                variant=_variant(folder / "text_encoder_2")))
            tokenizers.append(CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2", local_files_only=True))
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"{folder}: cannot load the model ({first_line(err)}). "
                         "Run `w2sd pull` for the pair again, or check the folder.") from None
    return Components(family, unet.eval(), vae.eval(), [e.eval() for e in encoders], tokenizers,
                      _scheduler_config(folder), _force_zeros(folder, family),
                      {"path": str(folder), "format": "diffusers"})


def load_single_file(path: Path, config_folder: Path, dtype: torch.dtype) -> Components:
    """Load a single-file checkpoint (civitai ``.safetensors``) with configs from a local base-model folder."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    family = detect_family(config_folder)
    cls: Any = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    extra = {} if family == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    try:
        pipe = cls.from_single_file(str(path), config=str(config_folder), local_files_only=True, torch_dtype=dtype,
                                    **extra)
    except (OSError, ValueError, RuntimeError, KeyError, SingleFileComponentError) as err:
        raise ModelError(f"{path.name}: cannot load it as a {family.upper()} checkpoint with the configs of "
                         f"{config_folder} ({first_line(err)}).") from None
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if family == "sdxl" else [])
    if _vae_dtype(config_folder / "vae", dtype) != dtype:
        pipe.vae.to(torch.float32)
    return Components(family, pipe.unet.eval(), pipe.vae.eval(), [e.eval() for e in encoders], tokenizers,
                      _scheduler_config(config_folder), _force_zeros(config_folder, family),
                      {"path": str(path), "format": "single-file", "config": str(config_folder)})


def load_controlnet(path: Path, dtype: torch.dtype) -> Any:
    """A diffusers-format ControlNet folder."""
    from diffusers import ControlNetModel

    try:
        return ControlNetModel.from_pretrained(path, torch_dtype=dtype, local_files_only=True,
                                               variant=_variant(path)).eval()
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"{path}: cannot load the ControlNet ({first_line(err)}).") from None


def share_identical(models: list[Components]) -> int:
    """Make later models reuse earlier models' VAE, text encoders and tokenizers where weights are identical.

    Returns:
        How many components are now shared instead of held twice.
    """
    shared = 0
    for i, model in enumerate(models):
        for earlier in models[:i]:
            if earlier.family != model.family:
                continue
            if model.vae is not earlier.vae and same_weights(model.vae, earlier.vae):
                model.vae, shared = earlier.vae, shared + 1
            for j, encoder in enumerate(model.text_encoders):
                if encoder is not earlier.text_encoders[j] and same_weights(encoder, earlier.text_encoders[j]):
                    model.text_encoders[j], shared = earlier.text_encoders[j], shared + 1
            for j, tokenizer in enumerate(model.tokenizers):
                if tokenizer is not earlier.tokenizers[j] and _same_tokenizer(tokenizer, earlier.tokenizers[j]):
                    model.tokenizers[j], shared = earlier.tokenizers[j], shared + 1
    return shared


def same_weights(a: Any, b: Any) -> bool:
    """Same class, same config and bit-identical parameters and buffers."""
    if a is b:
        return True
    if type(a) is not type(b) or _config(a) != _config(b):
        return False
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return False
    return all(sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def decode(vae: Any, latents: Tensor) -> Tensor:
    """Pixels in [-1, 1] from latents (undoing the VAE's scaling and shift), in float32."""
    scale = float(vae.config.scaling_factor)
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    with torch.no_grad():
        pixels = vae.decode((latents / scale + shift).to(vae.device, vae.dtype), return_dict=False)[0]
    return pixels.float()


def _same_tokenizer(a: Any, b: Any) -> bool:
    return bool(type(a) is type(b) and a.model_max_length == b.model_max_length and a.get_vocab() == b.get_vocab())


def _config(module: Any) -> Any:
    config = getattr(module, "config", None)
    if config is None:
        return None
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: v for k, v in data.items() if not k.startswith("_") and k != "transformers_version"}


def _variant(folder: Path) -> str | None:
    """``fp16`` when the folder holds only fp16-variant weights."""
    names = [p.name for p in folder.glob("*.safetensors")] + [p.name for p in folder.glob("*.bin")]
    plain = [n for n in names if n.count(".") == 1]
    return "fp16" if not plain and any(".fp16." in n for n in names) else None


def _vae_dtype(folder: Path, dtype: torch.dtype) -> torch.dtype:
    """float32 for VAEs that overflow in float16 (``force_upcast``, e.g. SDXL's)."""
    config = read_json(folder / "config.json")
    return torch.float32 if dtype == torch.float16 and config.get("force_upcast", False) else dtype


def _scheduler_config(folder: Path) -> dict[str, Any]:
    path = folder / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        raise ModelError(f"{folder}: no scheduler/scheduler_config.json; the noise schedule cannot be known.")
    return read_json(path)


def _force_zeros(folder: Path, family: str) -> bool:
    index = read_json(folder / "model_index.json")
    return bool(index.get("force_zeros_for_empty_prompt", family == "sdxl"))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` ({} when the file is absent); damage is a ``ModelError``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: unreadable ({err}).") from None
    return data if isinstance(data, dict) else {}


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, for one-paragraph errors."""
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
