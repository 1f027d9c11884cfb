"""An instant pair kind and a plain metric, registered as a test plugin: a real bench → eval → report in
milliseconds, with outputs whose scores the test chooses.

The pair ``instant`` draws a flat grey 8×8 image per (prompt, seed, method). Its level is ``LEVEL[method]``
plus the number after ``+`` in the prompt for that method (``"a fox w2sd+5"`` adds 5 to W2SD), plus
``seed`` unless the prompt contains ``same`` (then every seed gives the same image). The metric
``level`` scores an image by its grey level (higher is better) and embeds it as a two-pixel vector,
so its diversity is zero for ``same`` prompts.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from w2sd_cli.hookspecs import hookimpl
from w2sd_cli.kinds.base import PairKind

LEVEL = {"weak": 60, "strong": 100, "w2sd": 100, "extrapolate": 90, "first-order": 95}


def level(prompt: str, seed: int, method: str) -> int:
    """The grey level the instant pair draws."""
    bonus = sum(int(n) for n in re.findall(rf"\b{re.escape(method)}([+-]\d+)", prompt))
    return LEVEL[method] + bonus + (0 if "same" in prompt else seed)


ROLES = ("strong", "weak", "final", "weak_plain")
STEPS = 10


class AddSchedule:
    """A toy noise process: a step adds the prediction, so the final latent counts every denoiser call."""

    def step(self, x: Any, prediction: Any, t_from: float, t_to: float, label: float | None = None) -> Any:
        return x + prediction


class InstantPair:
    """Latent channels: [seed, one per role]; each role's denoiser adds its one-hot, so the final latent tells
    which method ran (plain weak, plain strong, W2SD, first-order, extrapolate) and the image is drawn from it."""

    prompt = ""

    def prepare(self, condition: Any, settings: Any) -> Any:
        import torch

        from w2sd_cli.plugin import PreparedPair

        self.prompt = condition.prompt

        def role(k: int) -> Any:
            def denoise(x: Any, t: float) -> Any:
                out = torch.zeros_like(x)
                out[:, 1 + k] = 1.0
                return out
            return denoise

        def noise(seed: int) -> Any:
            return torch.tensor([[float(seed), 0, 0, 0, 0]], dtype=torch.float64)

        grid = [float(t) for t in range(settings.steps, -1, -1)]
        denoisers = {name: role(k) for k, name in enumerate(ROLES)}
        return PreparedPair(**denoisers, schedule=AddSchedule(), grid=grid,
                            make_grid=lambda n: [float(t) for t in range(n, -1, -1)], noise=noise)

    def decode(self, x: Any, count: int) -> list[Any]:
        from PIL import Image

        images = []
        for row in x.tolist():
            seed, s, w, f, wp = (round(v) for v in row)
            method = ("weak" if wp > 0 and not f else "extrapolate" if wp < 0 else "first-order" if w < 0
                      else "w2sd" if s > 0 else "strong")
            value = max(0, min(255, level(self.prompt, seed, method)))
            image = Image.new("RGB", (8, 8), (value, value, value))
            if "same" not in self.prompt:
                image.putpixel((0, 0), (seed * 37 % 256, 0, 255 - seed * 37 % 256))
            images.append(image)
        return images

    def provenance(self) -> dict[str, Any]:
        return {"device": "test"}


class InstantKind(PairKind):
    name = "instant"
    summary = "test kind: flat grey images"

    def load(self, card: Any, settings: Any) -> Any:
        return InstantPair()


class LevelMetric:
    name = "level"
    summary = "grey level (test metric)"
    directions: ClassVar[dict[str, int]] = {"score": 1}

    def score(self, images: Any, prompts: Any) -> list[dict[str, float]]:
        import numpy as np

        return [{"score": float(np.asarray(im.convert("RGB"), dtype=np.float64)[4, 4, 1])} for im in images]

    def embed(self, images: Any) -> Any:
        import numpy as np

        vectors = []
        for image in images:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
            v = np.array([rgb[0, 0, 0] + 1.0, rgb[0, 0, 2] + 1.0])
            vectors.append(v / np.linalg.norm(v))
        return np.stack(vectors)


class BrightChecker:
    """A 0/1 checker: is the image at least as bright as strong's level?"""

    name = "bright"
    summary = "1 when the grey level is at least 100 (test checker)"
    directions: ClassVar[dict[str, int]] = {"all": 1}

    def score(self, images: Any, prompts: Any) -> list[dict[str, float]]:
        return [{"all": float(row["score"] >= 100)} for row in LevelMetric().score(images, prompts)]


class InstantPlugin:
    @hookimpl
    def register_pair_kinds(self, register: Any) -> None:
        register(InstantKind())

    @hookimpl
    def register_pairs(self, register: Any) -> None:
        register({"schema": 1, "name": "instant", "kind": "instant", "description": "test pair",
                  "defaults": {"steps": STEPS}})

    @hookimpl
    def register_metrics(self, register: Any) -> None:
        register(LevelMetric())
        register(BrightChecker())


def install() -> None:
    """Register the plugin on the current (per-test, fresh) plugin host."""
    from w2sd_cli.plugins import get_host

    host = get_host()
    if "test-instant" not in host.records:
        host.add(InstantPlugin(), "test-instant", "test")
