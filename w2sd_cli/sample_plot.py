"""Plots of sample sets (analytic pairs) with Pillow: one panel per sampler (the paper's Fig. 1 and 5)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from torch import Tensor

PANEL = 240
TITLE = 22
COLOURS = {"weak": (214, 96, 77), "strong": (67, 147, 195), "w2sd": (27, 120, 55),
           "extrapolate": (153, 112, 171), "first-order": (230, 150, 40), "equal-nfe": (120, 120, 30),
           "ideal": (90, 90, 90)}


def plot(points: dict[str, Any], title: str = "") -> Image.Image:
    """One histogram (1-D) or scatter (2-D, first two coordinates) panel per sample set, on a shared extent."""
    import torch

    names = list(points)
    sets = {name: torch.as_tensor(points[name]).detach().double() for name in names}
    reach = torch.cat([x.abs().flatten() for x in sets.values()])
    extent = float(torch.quantile(reach[:200_000], 0.995)) * 1.1 + 1e-6
    image = Image.new("RGB", (PANEL * len(names), PANEL + 2 * TITLE), "white")
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), title, fill=(0, 0, 0))
    for i, name in enumerate(names):
        left, top = i * PANEL, 2 * TITLE
        colour = COLOURS.get(name, (0, 0, 0))
        draw.rectangle([left + 4, top, left + PANEL - 4, top + PANEL - 4], outline=(200, 200, 200))
        draw.text((left + 8, TITLE + 2), name, fill=colour)
        x = sets[name]
        if x.shape[1] == 1:
            _histogram(draw, x[:, 0], extent, (left + 4, top, PANEL - 8), colour)
        else:
            _scatter(draw, x[:3000, :2], extent, (left + 4, top, PANEL - 8), colour)
    return image


def _histogram(draw: ImageDraw.ImageDraw, x: Tensor, extent: float, box: tuple[int, int, int],
               colour: tuple[int, int, int]) -> None:
    import torch

    left, top, size = box
    bins = 60
    counts = torch.histc(x.clamp(-extent, extent), bins=bins, min=-extent, max=extent)
    peak = float(counts.max()) or 1.0
    width = size / bins
    for b, c in enumerate(counts.tolist()):
        height = (size - 10) * c / peak
        x0 = left + b * width
        draw.rectangle([x0, top + size - height, x0 + width - 1, top + size], fill=colour)


def _scatter(draw: ImageDraw.ImageDraw, x: Tensor, extent: float, box: tuple[int, int, int],
             colour: tuple[int, int, int]) -> None:
    left, top, size = box
    scale = size / (2 * extent)
    for px, py in x.tolist():
        u = left + (px + extent) * scale
        v = top + size - (py + extent) * scale
        if left <= u <= left + size and top <= v <= top + size:
            draw.point((u, v), fill=colour)
