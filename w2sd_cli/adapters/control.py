"""ControlNet conditioning: a control image (an edge map, or a photo turned into one) and the residual hook.

The Canny detector is written in torch (Gaussian blur, Sobel, non-maximum suppression, hysteresis) so
no OpenCV is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from w2sd_cli.adapters.unet import Conditioning
from w2sd_cli.errors import InputError

Preprocess = Literal["auto", "canny", "none"]


def canny(gray: Tensor, low: float = 100.0, high: float = 200.0) -> Tensor:
    """Canny edges of a ``(H, W)`` grey image in 0..255: a 0/1 float map.

    Args:
        gray: the image.
        low, high: hysteresis thresholds on the Sobel gradient magnitude (OpenCV's convention).
    """
    x = gray.float()[None, None]
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k[:, None] * k[None, :]) / 256.0
    x = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k[None, None])
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, sobel[None, None])[0, 0]
    gy = F.conv2d(padded, sobel.t()[None, None])[0, 0]
    magnitude = torch.hypot(gx, gy)
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180.0
    sector = (((angle + 22.5) // 45.0) % 4).long()  # 0: horizontal gradient, 1: 45°, 2: vertical, 3: 135°
    m = F.pad(magnitude, (1, 1, 1, 1))
    h, w = magnitude.shape
    shifts = {0: ((0, 1), (0, -1)), 1: ((1, 1), (-1, -1)), 2: ((1, 0), (-1, 0)), 3: ((1, -1), (-1, 1))}
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    for s, ((dy1, dx1), (dy2, dx2)) in shifts.items():
        n1 = m[1 + dy1:1 + dy1 + h, 1 + dx1:1 + dx1 + w]
        n2 = m[1 + dy2:1 + dy2 + h, 1 + dx2:1 + dx2 + w]
        keep |= (sector == s) & (magnitude >= n1) & (magnitude >= n2)
    thin = magnitude * keep
    strong, weak = thin >= high, thin >= low
    edges = strong
    while True:
        grown = (F.max_pool2d(edges.float()[None, None], 3, 1, 1)[0, 0] > 0) & weak
        if torch.equal(grown, edges):
            return edges.float()
        edges = grown


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
        edges = canny(rgb.float().mean(dim=0), low, high)
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
