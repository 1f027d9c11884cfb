"""What differs between diffusers model families, behind one small adapter each: SD 1.x/2.x and SDXL (UNets on a
VP schedule) and SD3.x and FLUX.1 (flow transformers).

An adapter knows its family's default precision, how its models are placed, shared and prompted, its noise
schedule and grid, the latent shape and size rule, and how its network is called (added conditioning, FLUX's
latent packing, true CFG or distilled guidance). The loaded pair (``w2sd_cli.kinds.diffusers_pair``) does the
rest the same way for every family.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from w2sd_cli.adapters import flow, models
from w2sd_cli.adapters.lora import LoraScales
from w2sd_cli.adapters.text import PromptEncoder
from w2sd_cli.adapters.unet import Network, grid_from_config, schedule_from_config, unet_network
from w2sd_cli.errors import InputError, ModelError
from w2sd_cli.sampling import FlowSchedule, Level


@dataclass(frozen=True)
class _Family:
    """The shared shape of a family adapter (``name``: ``sd``, ``sdxl``, ``sd3`` or ``flux``)."""

    name: str
    flow: ClassVar[bool] = False
    final_cfg: ClassVar[float | None] = 5.5
    """The final side's CFG when the card sets none (``None``: the strong side's)."""

    def distilled(self, model: Any) -> bool:
        """A guidance-distilled model: guidance is an input of its one call, not a second branch."""
        return False


@dataclass(frozen=True)
class UNetFamily(_Family):
    """SD 1.x/2.x (one CLIP) and SDXL (two CLIPs, pooled embeddings and time ids as added conditioning)."""

    def dtype(self, device: torch.device, name: str | None) -> torch.dtype:
        return models.pick_dtype(device, name)

    def schedule(self, model: Any) -> Any:
        return schedule_from_config(model.scheduler_config)

    def grid(self, model: Any, schedule: Any, steps: int, latent: tuple[int, ...]) -> list[Level]:
        return grid_from_config(schedule, model.scheduler_config, steps)

    def prediction(self, model: Any) -> str:
        return str(model.scheduler_config.get("prediction_type", "epsilon"))

    def size_rule(self, model: Any) -> tuple[int, int]:
        """(multiple, smallest) of an image side."""
        down = 2 ** (len(model.unet.config.down_block_types) - 1)
        return model.vae_scale_factor, model.vae_scale_factor * down

    def latent(self, model: Any, width: int, height: int) -> tuple[int, ...]:
        f = model.vae_scale_factor
        return (1, int(model.unet.config.in_channels), height // f, width // f)

    def network(self, model: Any, guidance: float | None, extra: Any = None) -> Network:
        return unet_network(model.unet, extra)

    def encoder(self, model: Any, device: torch.device, dtype: torch.dtype, options: Any, offload: bool) -> Any:
        lora = LoraScales.scan(model.text_encoders)
        return PromptEncoder(model.family, model.tokenizers, model.text_encoders, device, dtype, options.clip_skip,
                             model.force_zeros_for_empty_prompt, lora if lora.slots else None)

    def share(self, loaded: list[Any]) -> int:
        return models.share_identical(loaded)

    def place(self, loaded: list[Any], extra: list[Any], device: torch.device, offload: bool) -> None:
        """Everything on ``device``; with ``offload`` (CUDA only) each model visits the GPU only while it runs."""
        if offload and device.type == "cuda":
            for model in loaded:
                model.container().enable_model_cpu_offload(device=device)
            modules = extra
        else:
            modules = [*(m for c in loaded for m in c.modules()), *extra]
        for module in {id(m): m for m in modules}.values():
            module.to(device)


@dataclass(frozen=True)
class FlowFamily(_Family):
    """SD3.x (CLIP-L + CLIP-G + T5, MMDiT) and FLUX.1 (CLIP-L pooled + T5, 2×2-packed latents, distilled guidance)."""

    flow: ClassVar[bool] = True
    final_cfg: ClassVar[float | None] = None

    def dtype(self, device: torch.device, name: str | None) -> torch.dtype:
        """bfloat16 on GPUs (SD3 and FLUX overflow in float16), float32 on the CPU, unless ``--dtype`` names one."""
        if name is None:
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return models.pick_dtype(device, name)

    def distilled(self, model: Any) -> bool:
        return bool(model.guidance_embeds)

    def schedule(self, model: Any) -> Any:
        return FlowSchedule()

    def grid(self, model: Any, schedule: Any, steps: int, latent: tuple[int, ...]) -> list[Level]:
        tokens = flow.image_tokens(self.name, latent[2], latent[3], int(model.transformer.config.patch_size))
        return flow.flow_grid(model.scheduler_config, self.name, steps, tokens)

    def prediction(self, model: Any) -> str:
        return "velocity"

    def size_rule(self, model: Any) -> tuple[int, int]:
        return model.latent_multiple, model.latent_multiple

    def latent(self, model: Any, width: int, height: int) -> tuple[int, ...]:
        f = model.vae_scale_factor
        return (1, int(model.vae.config.latent_channels), height // f, width // f)

    def network(self, model: Any, guidance: float | None, extra: Any = None) -> Network:
        make = flow.flux_network if self.name == "flux" else flow.sd3_network
        return make(model.transformer, guidance)

    def encoder(self, model: Any, device: torch.device, dtype: torch.dtype, options: Any, offload: bool) -> Any:
        lora = LoraScales.scan([e for e in model.text_encoders if e is not None])
        length = options.max_sequence_length or flow.MAX_SEQUENCE[self.name]
        return flow.FlowPromptEncoder(self.name, model.tokenizers, model.text_encoders, device, dtype, length,
                                      int(getattr(model.transformer.config, "joint_attention_dim", 4096)), offload,
                                      lora if lora.slots else None)

    def share(self, loaded: list[Any]) -> int:
        """Later models reuse earlier models' VAE and text encoders where the weights are bit-identical."""
        shared = 0
        for i, model in enumerate(loaded):
            for earlier in loaded[:i]:
                if model.vae is not earlier.vae and models.same_weights(model.vae, earlier.vae):
                    model.vae, shared = earlier.vae, shared + 1
                for j, encoder in enumerate(model.text_encoders):
                    other = earlier.text_encoders[j] if j < len(earlier.text_encoders) else None
                    if encoder is not None and other is not None and encoder is not other and \
                            models.same_weights(encoder, other):
                        model.text_encoders[j], model.tokenizers[j] = other, earlier.tokenizers[j]
                        shared += 1
        return shared

    def place(self, loaded: list[Any], extra: list[Any], device: torch.device, offload: bool) -> None:
        """Transformers on ``device``; VAEs and text encoders too, or on the CPU with ``offload`` (they visit)."""
        for module in {id(m.transformer): m.transformer for m in loaded}.values():
            module.to(device)
        parts = [p for m in loaded for p in (m.vae, *m.text_encoders) if p is not None]
        for module in {id(p): p for p in parts}.values():
            module.to("cpu" if offload else device)


Family = UNetFamily | FlowFamily


def detect(folder: Path) -> Family:
    """The family of a diffusers folder (or of the base folder a single file takes its configs from)."""
    try:
        name = flow.detect_family(folder)
    except ModelError:
        return UNetFamily(models.detect_family(folder))
    return FlowFamily(name)


def of(model: Any) -> Family:
    """The family adapter of loaded components."""
    return FlowFamily(model.family) if model.family in flow.FAMILIES else UNetFamily(model.family)


def load(folder: Path, dtype: torch.dtype, *, single_file: Path | None = None, shared_from: Any = None) -> Any:
    """One model's components: a diffusers folder, or ``single_file`` with ``folder``'s configs (SD, SDXL)."""
    family = detect(folder)
    if single_file is not None:
        if family.flow:
            raise ModelError(f"{single_file.name}: single-file checkpoints are read for SD 1.x/2.x and SDXL only; "
                             "give SD3/FLUX models as diffusers folders.")
        return models.load_single_file(single_file, folder, dtype)
    if family.flow:
        return flow.load_flow_folder(folder, dtype, shared_from=shared_from)
    if shared_from is not None:
        raise InputError(f"{folder}: options.components_from is for SD3/FLUX models; SD and SDXL folders carry "
                         "their own components (identical ones are shared anyway).")
    return models.load_folder(folder, dtype)
