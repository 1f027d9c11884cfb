"""ControlNet conditioning: a control image (an edge map, or a photo turned into one) and the residual hook.

Photos become edge maps with OpenCV's Canny, as ControlNet's canny annotator made its training data
(the optional ``controlnet`` extra).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from w2sd_cli.adapters.unet import Conditioning
from w2sd_cli.errors import InputError

Preprocess = Literal["auto", "canny", "none"]


def canny(rgb: Tensor, low: float = 100.0, high: float = 200.0) -> Tensor:
    """Canny edges of a ``(3, H, W)`` uint8 RGB image as ControlNet's canny models were trained on: a 0/1 map.

    The ControlNet annotators call OpenCV's ``cv2.Canny(image, low, high)`` on the RGB image itself (no blur,
    L1 gradient, 3×3 Sobel, the strongest channel's gradient per pixel), so this does exactly that.

    Args:
        rgb: the image (a ``(H, W)`` grey image is accepted too).
        low, high: hysteresis thresholds on the gradient magnitude.

    Raises:
        InputError: OpenCV is not installed (the ``controlnet`` extra).
    """
    import numpy as np

    try:
        import cv2
    except ImportError:
        raise InputError("Turning a photo into a ControlNet edge map needs OpenCV, which is not installed: run "
                         "`pip install 'w2sd[controlnet]'` (opencv-python-headless), or pass an edge map as "
                         "--control-image.") from None
    image = rgb.to(torch.uint8).cpu()
    array = np.ascontiguousarray(image.permute(1, 2, 0).numpy() if image.dim() == 3 else image.numpy())
    edges = cv2.Canny(array, float(low), float(high))
    return torch.from_numpy(edges > 0).float()


def looks_like_edge_map(rgb: Tensor) -> bool:
    """True for a mostly dark, grey, near-binary image (what ControlNet-canny was trained on)."""
    spread = (rgb.max(dim=0).values - rgb.min(dim=0).values).float().mean()
    gray = rgb.float().mean(dim=0)
    binary = ((gray < 32) | (gray > 223)).float().mean()
    bright = (gray > 127).float().mean()
    return bool(spread < 8 and binary > 0.95 and bright < 0.4)


def load_control_image(path: Path, width: int, height: int, preprocess: Preprocess = "auto",
                       low: float = 100.0, high: float = 200.0) -> Tensor:
    """The control image as a ``(1, 3, H, W)`` tensor in 0..1, resized to the output size.

    Args:
        path: an edge map or a photo.
        width, height: the output image size.
        preprocess: ``canny`` always detects edges, ``none`` uses the image as is, ``auto`` detects
            edges unless the image already looks like an edge map.
        low, high: Canny thresholds.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb_image = image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    except FileNotFoundError:
        raise InputError(f"--control-image {path}: no such file.") from None
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"--control-image {path}: not a readable image ({err}).") from None
    rgb = torch.from_numpy(np.asarray(rgb_image).copy()).permute(2, 0, 1)
    if preprocess == "canny" or (preprocess == "auto" and not looks_like_edge_map(rgb)):
        edges = canny(rgb, low, high)
        return edges.expand(3, -1, -1)[None].contiguous()
    return (rgb.float() / 255.0)[None]


def controlnet_residuals(controlnet: Any, image: Tensor, scale: float) -> Callable[[Tensor, Tensor, Conditioning],
                                                                                   dict[str, Any]]:
    """The ``extra`` hook of ``unet_network``: ControlNet residuals for the UNet's down and mid blocks."""

    def extra(x: Tensor, timestep: Tensor, cond: Conditioning) -> dict[str, Any]:
        control = image.to(x.device, x.dtype).expand(x.shape[0], -1, -1, -1)
        down, mid = controlnet(x, timestep, encoder_hidden_states=cond.hidden_states, controlnet_cond=control,
                               conditioning_scale=scale, added_cond_kwargs=cond.added or None, return_dict=False)
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}

    return extra
