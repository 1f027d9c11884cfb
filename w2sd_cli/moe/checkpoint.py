"""Reading and writing DiT-MoE weights: strict, so a checkpoint either loads whole or not at all.

The published checkpoints are torch pickles (``dit_moe_s_8E2A.pt``) holding a plain state dict or
a training dict with ``ema``/``model``. As everywhere in w2sd, a pickle needs ``--allow-pickle`` and
is then read with ``torch.load(weights_only=True)``, which refuses arbitrary objects; safetensors
files are read directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from w2sd_cli.errors import ModelError
from w2sd_cli.moe.model import DiTMoE, DiTMoEConfig
from w2sd_cli.store.safety import WEIGHT_SUFFIXES, check_weights_file, load_pickle_checkpoint

TRAINING_KEYS = ("ema", "model")
"""Where train.py keeps the weights inside a training checkpoint; ``ema`` is preferred, as upstream."""


def read_state_dict(path: Path, allow_pickle: bool = False) -> dict[str, Tensor]:
    """The tensors of a weights file.

    Args:
        path: a safetensors file or a torch pickle, told apart by their bytes (the store's ``sniff``).
        allow_pickle: accept a pickle checkpoint; it is still read with ``torch.load(weights_only=True)``,
            which refuses code objects (w2sd never unpickles those).

    Returns:
        Parameter name to tensor, unwrapped from a training checkpoint's ``ema``/``model`` entry.
    """
    if not path.is_file():
        raise ModelError(f"{path}: no such weights file.")
    if check_weights_file(path, allow_pickle) == "pickle":
        return _unwrap(load_pickle_checkpoint(path), path)
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as err:
        raise ModelError(f"{path}: not a readable safetensors file ({err}); download it again.") from None


def _unwrap(data: object, path: Path) -> dict[str, Tensor]:
    if isinstance(data, Mapping):
        for key in TRAINING_KEYS:
            if isinstance(data.get(key), Mapping):
                data = data[key]
                break
    if not isinstance(data, Mapping) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ModelError(f"{path}: expected a state dict of tensors (optionally under 'ema' or 'model').")
    return {str(k): v for k, v in data.items()}


def check_state_dict(model: DiTMoE, state: Mapping[str, Tensor], origin: str) -> None:
    """Raise ``ModelError`` naming every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = sorted(k for k in state if k not in expected)
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_some(missing)}")
    if extra:
        problems.append(f"unexpected keys: {_some(extra)}")
    if shapes:
        problems.append(f"wrong shapes: {_some(shapes)}")
    if problems:
        raise ModelError(
            f"{origin}: does not match the DiT-MoE architecture of the card ({_describe(model.config)}): "
            + "; ".join(problems)
            + ". Check the card's options.architecture/config against the checkpoint."
        )


def load_network(path: Path, config: DiTMoEConfig, *, allow_pickle: bool = False,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> DiTMoE:
    """Build the network for ``config`` and load ``path`` into it, strictly; returns it in eval mode."""
    state = read_state_dict(path, allow_pickle)
    with torch.device("meta"):
        model = DiTMoE(config)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def save_network(model: DiTMoE, path: Path) -> None:
    """Write the network's state dict as safetensors (the format w2sd prefers to pickles)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(path))


def find_weights(folder: Path, filename: str | None = None) -> Path:
    """The weights file in a model folder: ``filename`` if given, else its only weights file."""
    if filename is not None:
        return folder / filename
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in WEIGHT_SUFFIXES)
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise ModelError(f"{folder}: expected one weights file ({', '.join(sorted(WEIGHT_SUFFIXES))}), found {names}; "
                         "name it with `filename:` in the card.")
    return found[0]


def _some(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _describe(config: DiTMoEConfig) -> str:
    return (f"hidden {config.hidden_size}, depth {config.depth}, {config.num_experts} experts, "
            f"patch {config.patch_size}, {config.num_classes} classes")
