"""Renderers for w2sd's built-in kinds, built on each kind's own ``prepare`` and loading helpers.

A plugin kind provides its own by overriding ``PairKind.renderer``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from w2sd_cli.bench.render import Rendered
from w2sd_cli.errors import InputError, ModelError

if TYPE_CHECKING:
    from w2sd_cli.cards import PairCard
    from w2sd_cli.kinds.base import GenRequest, PairKind, PreparedPair
    from w2sd_cli.sampling import Callback, SampleResult


def builtin_renderer(kind: PairKind, card: PairCard, request: GenRequest) -> Any:
    """The renderer of a built-in kind, or an ``InputError`` naming what a plugin kind must provide."""
    makers = {"analytic": AnalyticRenderer, "toy-unet": ToyRenderer, "diffusers": DiffusersRenderer,
              "moe-experts": MoERenderer}
    maker = makers.get(kind.name)
    if maker is None:
        raise InputError(f"kind {kind.name!r} cannot be benchmarked: its plugin must implement "
                         "`renderer(card, request)` (see w2sd_cli.bench.render.Renderer).")
    return maker(kind, card, request)


def _run(pair: PreparedPair, method: str, seed: int, request: GenRequest, observer: Callback | None) -> SampleResult:
    import torch

    from w2sd_cli.methods import run_method

    with torch.inference_mode():
        result = run_method(pair, method, pair.noise(seed), lam=request.lam, rounds=request.rounds or 1,
                        k=float(request.extra.get("k", 1.0)), reference_interval=request.reference_interval,
                        callback=observer)
    if not bool(torch.isfinite(result.x).all()):
        raise ModelError(f"{method} seed {seed}: the sample became NaN/inf; try --dtype float32 or a smaller --lambda.")
    return result


class AnalyticRenderer:
    """Gaussian-mixture pairs: an item is a set of ``samples`` points; prompts are ignored."""

    output = "samples"
    uses_prompts = False

    def __init__(self, kind: Any, card: PairCard, request: GenRequest) -> None:
        self.request = request
        self.pair = kind.prepare(card, request)

    def render(self, prompt: str, seed: int, method: str, observer: Callback | None = None) -> Rendered:
        result = _run(self.pair, method, seed, self.request, observer)
        return Rendered(result.x.double().cpu().numpy(), result.nfe, result.cost)

    def provenance(self) -> dict[str, Any]:
        return {"device": "cpu", "dtype": "float64"}


class ToyRenderer:
    """The shapes-world UNet pair: 32×32 images, models cached per process by the kind."""

    output = "image"
    uses_prompts = True

    def __init__(self, kind: Any, card: PairCard, request: GenRequest) -> None:
        self.kind, self.card, self.request = kind, card, request
        self._pairs: dict[str, PreparedPair] = {}

    def render(self, prompt: str, seed: int, method: str, observer: Callback | None = None) -> Rendered:
        from PIL import Image

        from w2sd_cli.kinds.shapes import to_pixels

        if prompt not in self._pairs:
            self._pairs = {prompt: self.kind.prepare(self.card, self.request, prompt)}
        result = _run(self._pairs[prompt], method, seed, self.request, observer)
        return Rendered(Image.fromarray(to_pixels(result.x)), result.nfe, result.cost)

    def provenance(self) -> dict[str, Any]:
        return {"device": "cpu", "dtype": "float32"}


class DiffusersRenderer:
    """SD/SDXL pairs: models load once; each new prompt re-encodes and rebuilds the denoisers."""

    output = "image"
    uses_prompts = True

    def __init__(self, kind: Any, card: PairCard, request: GenRequest) -> None:
        from w2sd_cli.kinds.image_sides import resolve_sides

        options = kind.options(card)
        if options.needs_strong_prompt:
            raise InputError(f"Pair {card.name} compares a refined prompt with the raw one; a bench has one prompt "
                             "per item, so benchmark it with a card whose sides template the prompt instead.")
        self.sides = resolve_sides(card, request.cfg)
        if any(spec.control for spec in self.sides.values()):
            raise InputError(f"Pair {card.name} needs a control image per prompt, which `w2sd bench` cannot supply.")
        self.kind, self.card, self.options, self.request = kind, card, options, request
        self.session: Any = None
        self.prompt: str | None = None

    def _session_for(self, prompt: str) -> Any:
        from w2sd_cli.kinds.image_session import ImageSession

        request = replace(self.request, prompt=prompt)
        if self.session is None:
            self.session = ImageSession.open(self.card, request, self.sides, self.options, None)
        elif prompt != self.prompt:
            self.session.use_prompt(prompt, request)
        self.prompt = prompt
        return self.session

    def render(self, prompt: str, seed: int, method: str, observer: Callback | None = None) -> Rendered:
        import torch

        from w2sd_cli.adapters.models import decode
        from w2sd_cli.images import to_image

        session = self._session_for(prompt)
        result = _run(session.pair, method, seed, self.request, observer)
        with torch.no_grad():
            pixels = decode(session.models[self.sides["final"].model].vae, result.x)
        if not bool(torch.isfinite(pixels).all()):
            raise ModelError(f"{method} seed {seed}: the VAE decoded NaN/inf pixels; try --dtype float32.")
        return Rendered(to_image(pixels), result.nfe, result.cost)

    def provenance(self) -> dict[str, Any]:
        if self.session is None:
            return {}
        return {"device": str(self.session.device), "dtype": str(self.session.dtype).removeprefix("torch."),
                "size": f"{self.session.width}x{self.session.height}", "models": self.session.model_info}


class MoERenderer:
    """DiT-MoE class-conditional pairs: the prompt is a class name or number."""

    output = "image"
    uses_prompts = True

    def __init__(self, kind: Any, card: PairCard, request: GenRequest) -> None:
        kind.check(card)
        self.kind, self.card, self.request = kind, card, request
        self.config = kind.network_config(card)
        self.scale = kind.options(card).latent_scale
        self.networks: dict[str, Any] = {}
        self.vae: Any = None
        self._pairs: dict[int, PreparedPair] = {}

    def render(self, prompt: str, seed: int, method: str, observer: Callback | None = None) -> Rendered:
        import torch

        from w2sd_cli.images import to_image
        from w2sd_cli.kinds.moe import class_label

        if not self.networks:
            self.networks, self.vae = self.kind.load(self.card, self.request)
        label = class_label(replace(self.request, prompt=prompt, extra={}), self.config.num_classes)
        if label not in self._pairs:
            self._pairs = {label: self.kind.prepare(self.card, self.request, self.networks, label)}
        result = _run(self._pairs[label], method, seed, self.request, observer)
        with torch.inference_mode():
            pixels = self.vae.decode(result.x.to(self.vae.dtype) / self.scale).sample
        return Rendered(to_image(pixels.float()), result.nfe, result.cost, {"class_label": label})

    def provenance(self) -> dict[str, Any]:
        if not self.networks:
            return {}
        net = next(iter(self.networks.values()))
        return {"device": str(net.device), "dtype": str(net.dtype).removeprefix("torch.")}
