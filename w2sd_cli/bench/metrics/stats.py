"""Metrics that need no model: colour statistics of images, and exact statistics of analytic sample sets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

THUMB = 32
CLIP_LOW, CLIP_HIGH = 2, 253


class ImageStats:
    """Saturation, clipped-pixel fraction and brightness: W2SD's known side effect is more clipping."""

    name = "image-stats"
    summary = "mean HSV saturation, fraction of clipped channel values (<=2 or >=253), mean brightness"
    directions: ClassVar[dict[str, int]] = {"saturation": 0, "clipped": -1, "brightness": 0}
    bounds: ClassVar[dict[str, tuple[float, float]]] = {"saturation": (0, 1), "clipped": (0, 1), "brightness": (0, 1)}
    primary = "clipped"
    side_effect = True
    """A side-effect statistic: reports list its verdict after the quality metrics and checkers."""

    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> list[dict[str, float]]:
        import numpy as np

        rows = []
        for image in images:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
            hsv = np.asarray(image.convert("RGB").convert("HSV"), dtype=np.float64)
            clipped = float(((rgb <= CLIP_LOW) | (rgb >= CLIP_HIGH)).mean())
            rows.append({"saturation": float(hsv[..., 1].mean() / 255), "clipped": clipped,
                         "brightness": float(rgb.mean() / 255)})
        return rows

    def embed(self, images: Sequence[Any]) -> Any:
        """Unit-length 32×32 RGB thumbnails, centred: a crude but model-free image embedding."""
        import numpy as np
        from PIL import Image

        vectors = []
        for image in images:
            thumb = np.asarray(image.convert("RGB").resize((THUMB, THUMB), Image.Resampling.BILINEAR), dtype=np.float64)
            v = (thumb / 255 - 0.5).ravel()
            vectors.append(v / max(float(np.linalg.norm(v)), 1e-12))
        return np.stack(vectors)


class MixtureStats:
    """Analytic pairs: how a sample set matches the card's ideal mixture (docs/method.md)."""

    name = "mixture-stats"
    summary = ("analytic pairs: KL and total variation of mode occupancy to the ideal weights, mean log-likelihood "
               "under the ideal, spread per mode vs the ideal std, share of the mode the strong side "
               "under-weights most")
    inputs = "samples"
    directions: ClassVar[dict[str, int]] = {"kl_to_ideal": -1, "tv_to_ideal": -1, "mean_loglik": 1,
                                            "spread_ratio": 0, "underweighted_share": 0}
    bounds: ClassVar[dict[str, tuple[float, float]]] = {"tv_to_ideal": (0, 1), "underweighted_share": (0, 1)}
    primary = "kl_to_ideal"

    def score(self, samples: Sequence[Any], prompts: Sequence[str], card: Any = None) -> list[dict[str, float]]:
        import math

        import torch

        from w2sd_cli.analytic import kl_divergence, occupancy, spread_ratio
        from w2sd_cli.errors import InputError
        from w2sd_cli.kinds.analytic import AnalyticKind

        if card is None or card.kind != "analytic":
            raise InputError("mixture-stats scores analytic pairs only (their cards name the ideal mixture).")
        mixtures = AnalyticKind().mixtures(card)
        ideal = mixtures["ideal"]
        under = int(torch.argmin(mixtures["strong"].weights / ideal.weights)) if \
            mixtures["strong"].weights.shape == ideal.weights.shape else int(torch.argmin(ideal.weights))
        rows = []
        for array in samples:
            x = torch.as_tensor(array, dtype=torch.float64)
            share = occupancy(ideal, x)
            ratios = [r for r in spread_ratio(ideal, x).tolist() if not math.isnan(r)]
            rows.append({"kl_to_ideal": kl_divergence(share, ideal.weights),
                         "tv_to_ideal": 0.5 * float((share - ideal.weights).abs().sum()),
                         "mean_loglik": float(ideal.log_prob(x).mean()),
                         "spread_ratio": sum(ratios) / len(ratios) if ratios else float("nan"),
                         "underweighted_share": float(share[under])})
        return rows
