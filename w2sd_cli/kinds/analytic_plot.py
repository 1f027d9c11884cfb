"""Plots of analytic-pair samples with Pillow: one panel per sampler (the paper's Fig. 1 and 5)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from w2sd_cli.files import atomic_path

if TYPE_CHECKING:
    from torch import Tensor

    from w2sd_cli.analytic import GaussianMixture

PANEL = 240
TITLE = 22
COLOURS = {"weak": (214, 96, 77), "strong": (67, 147, 195), "w2sd": (27, 120, 55),
           "extrapolate": (153, 112, 171), "ideal": (90, 90, 90)}


def save_plot(points: dict[str, Tensor], ideal: GaussianMixture, path: Path, title: str = "") -> None:
    """Write a PNG with one histogram (1-D) or scatter (2-D, first two coordinates) panel per sampler."""
    names = list(points)
    image = Image.new("RGB", (PANEL * len(names), PANEL + 2 * TITLE), "white")
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), title, fill=(0, 0, 0))
    extent = float(ideal.means.abs().max() + 4 * ideal.stds.max())
    for i, name in enumerate(names):
        left, top = i * PANEL, 2 * TITLE
        draw.rectangle([left + 4, top, left + PANEL - 4, top + PANEL - 4], outline=(200, 200, 200))
        draw.text((left + 8, TITLE + 2), name, fill=COLOURS.get(name, (0, 0, 0)))
        x = points[name].detach().double()
        if x.shape[1] == 1:
            _histogram(draw, x[:, 0], extent, (left + 4, top, PANEL - 8), COLOURS.get(name, (0, 0, 0)))
        else:
            _scatter(draw, x[:3000, :2], extent, (left + 4, top, PANEL - 8), COLOURS.get(name, (0, 0, 0)))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


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
