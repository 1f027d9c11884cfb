"""The ``moe-experts`` kind: one DiT-MoE network, each token routed to its best experts or its worst.

Strong = the trained top-k routing, weak = the bottom-k of the same router, on the same weights
(paper Table 3: DiT-MoE-S/2, top-2 vs bottom-2 of 8, reflection CFG 1.5). Class-conditional: the
prompt is an ImageNet class name or number. Latents are decoded with the SD VAE.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from w2sd_cli.cards import ModelRef, PairCard, Side, Strict
from w2sd_cli.errors import CardError, InputError, ModelError, suggest
from w2sd_cli.kinds.base import GenRequest, GenResult, PairKind, PreparedPair
from w2sd_cli.moe.config import PRESETS, DiTMoEConfig, RoutingMode

if TYPE_CHECKING:
    import torch

    from w2sd_cli.adapters.unet import CFGDenoiser
    from w2sd_cli.moe.model import DiTMoE, Routing
    from w2sd_cli.sampling import Callback

SIDES = ("strong", "weak", "final")
DEFAULT_EXPERTS: dict[str, RoutingMode] = {"strong": "top", "weak": "bottom", "final": "top"}


class MoEOptions(Strict):
    """Options of a ``moe-experts`` card."""

    architecture: str = Field("DiT-MoE-S/2-8E2A", description="a preset: " + ", ".join(PRESETS))
    config: dict[str, int | bool] = Field({}, description="overrides of the preset's fields")
    experts_per_token: int | None = Field(None, ge=1, description="k on every side (default: the trained k)")
    renormalize: bool = Field(False, description="rescale the chosen experts' weights to sum to 1")
    random_seed: int = Field(0, ge=0, description="seed of `experts: random` routing")
    vae: str = Field("vae", description="key into the card's models: the latent decoder")
    latent_scale: float = Field(0.18215, gt=0)
    beta_start: float = Field(1e-4, gt=0)
    beta_end: float = Field(0.02, gt=0, lt=1)
    train_steps: int = Field(1000, ge=1)
    timestep_spacing: Literal["leading", "trailing", "linspace"] = "leading"


class MoEExpertsKind(PairKind):
    """Good experts vs bad experts of one mixture-of-experts diffusion transformer."""

    name = "moe-experts"
    summary = "DiT-MoE routed to each token's top-k experts (strong) vs its bottom-k (weak)"
    options_model = MoEOptions

    def network_config(self, card: PairCard) -> DiTMoEConfig:
        """The architecture the card's checkpoint must have."""
        options: MoEOptions = self.options(card)
        if options.architecture not in PRESETS:
            raise CardError(f"pair {card.name!r}: unknown options.architecture {options.architecture!r}."
                            f"{suggest(options.architecture, PRESETS)} Known: {', '.join(PRESETS)}.")
        try:
            config = DiTMoEConfig.from_mapping(options.config, PRESETS[options.architecture])
        except (ValueError, TypeError) as err:
            raise CardError(f"pair {card.name!r}: options.config: {err}.") from None
        k = options.experts_per_token
        if k is not None and k > config.num_experts:
            raise CardError(f"pair {card.name!r}: experts_per_token {k} exceeds the {config.num_experts} experts.")
        return config

    def check(self, card: PairCard) -> None:
        options: MoEOptions = self.options(card)
        self.network_config(card)
        for side in SIDES:
            key = getattr(card, side).model
            if key is None:
                raise CardError(f"pair {card.name!r}: moe-experts pairs need `{side}.model` (a dit-moe model).")
            if card.models[key].format != "dit-moe":
                raise CardError(f"pair {card.name!r}: model {key!r} must have `format: dit-moe`.")
        vae = card.models.get(options.vae)
        if vae is None or vae.format != "vae":
            raise CardError(f"pair {card.name!r}: options.vae names {options.vae!r}, which must be a model "
                            "with `format: vae` (the SD VAE, e.g. stabilityai/sd-vae-ft-mse).")

    def model_keys(self, card: PairCard) -> list[str]:
        options: MoEOptions = self.options(card)
        keys = [getattr(card, side).model for side in SIDES] + [options.vae]
        return list(dict.fromkeys(k for k in keys if k is not None))

    def prepare(self, card: PairCard, request: GenRequest, networks: dict[str, DiTMoE], label: int) -> PreparedPair:
        """Denoisers of the four roles over already-loaded networks (keyed like the card's models).

        Args:
            card: the pair card.
            request: a resolved request (its ``cfg`` overrides the final side's).
            networks: the loaded DiT-MoE networks.
            label: the class to generate.
        """
        import torch

        from w2sd_cli.sampling import VPSchedule

        options: MoEOptions = self.options(card)
        config = self.network_config(card)
        schedule = VPSchedule.linear(options.beta_start, options.beta_end, options.train_steps)
        final_cfg = request.cfg if request.cfg is not None else card.final.cfg
        device = next(iter(networks.values())).device
        strong = self._denoiser(card, networks, card.strong, "strong", label, schedule)
        weak = self._denoiser(card, networks, card.weak, "weak", label, schedule)
        weak_plain = self._denoiser(card, networks, card.weak, "weak", label, schedule, cfg=final_cfg)
        final = self._denoiser(card, networks, card.final, "final", label, schedule, cfg=final_cfg)

        def noise(seed: int) -> torch.Tensor:
            shape = (1, config.in_channels, config.input_size, config.input_size)
            return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)

        def make_grid(steps: int) -> list[float]:
            return schedule.timesteps(steps, options.timestep_spacing)

        routings = {side: _routing_text(self.routing(card, getattr(card, side), side), config) for side in SIDES}
        return PreparedPair(strong=strong, weak=weak, final=final, weak_plain=weak_plain,
                            schedule=schedule, grid=make_grid(request.steps or card.defaults.steps),
                            make_grid=make_grid, noise=noise, info={"routing": routings})

    def routing(self, card: PairCard, side: Side, role: str) -> Routing:
        """The routing a side asks for (``experts``: top, bottom or random; default by role)."""
        from w2sd_cli.moe.model import Routing

        options: MoEOptions = self.options(card)
        mode = side.experts or DEFAULT_EXPERTS[role]
        return Routing(mode, options.experts_per_token, options.random_seed, options.renormalize)

    def _denoiser(self, card: PairCard, networks: dict[str, DiTMoE], side: Side, role: str, label: int,
                  schedule: Any, cfg: float | None = None) -> CFGDenoiser:
        import torch

        from w2sd_cli.adapters.unet import CFGDenoiser, Conditioning

        net = networks[side.model or ""]
        routing = self.routing(card, side, role)
        scale = side.cfg if cfg is None else cfg
        device = net.device

        def call(x: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
            return net(x, timestep, cond.hidden_states, routing)

        labels = Conditioning(torch.tensor([label], device=device))
        null = Conditioning(torch.tensor([net.null_label], device=device))
        return CFGDenoiser(call, schedule, labels, null, 1.0 if scale is None else scale,
                           dtype=net.dtype, learned_sigma=net.config.learn_sigma)

    def generate(self, card: PairCard, request: GenRequest, observer: Callback | None = None) -> GenResult:
        from w2sd_cli.images import image_name, panel, save_png, versions
        from w2sd_cli.moe.imagenet import class_name

        self.check(card)
        config = self.network_config(card)
        label = class_label(request, config.num_classes)
        networks, vae = self.load(card, request)
        pair = self.prepare(card, request, networks, label)
        final_cfg = request.cfg if request.cfg is not None else card.final.cfg
        methods = ("weak", "strong", "w2sd") if request.compare else ("w2sd",)
        name = class_name(label) if config.num_classes == 1000 else f"class {label}"
        recipe = {"pair": card.name, "kind": self.name, "card_digest": card.digest(), "prompt": name,
                  "class_label": label, "steps": len(pair.grid) - 1, "lam": request.lam, "rounds": request.rounds,
                  "cfg": final_cfg, "routing": pair.info["routing"]}
        scale = self.options(card).latent_scale
        files: list[Path] = []
        stats: dict[str, dict[str, Any]] = {}
        for seed in range(request.seed or 0, (request.seed or 0) + request.num_images):
            pictures = []
            for method in methods:
                tagged = _tagged(observer, method, seed)
                image, sample, seconds = self._sample(pair, method, seed, request, vae, scale, tagged)
                path = request.out / image_name(card.name, seed, method)
                files.append(save_png(image, path, {**recipe, "seed": seed, "method": method, "versions": versions()}))
                pictures.append((method, image))
                entry = stats.setdefault(method, {"nfe": sample.nfe, "cost": sample.cost, "seconds": 0.0})
                entry["seconds"] = round(entry["seconds"] + seconds, 3)
            if request.compare:
                files.append(save_png(panel(pictures), request.out / image_name(card.name, seed, "compare")))
        summary = {**recipe, "class_name": name, "seed": request.seed or 0, "images": request.num_images,
                   "device": str(next(iter(networks.values())).device), "methods": stats}
        return GenResult(files=files, summary=summary)

    def load(self, card: PairCard, request: GenRequest) -> tuple[dict[str, DiTMoE], Any]:
        """The card's DiT-MoE networks (by model key) and its VAE, on the request's device and dtype."""
        options: MoEOptions = self.options(card)
        config = self.network_config(card)
        device, dtype = _device(request.device), _dtype(request.dtype)
        vae = load_vae(card, options.vae, request, device, dtype)
        size = config.input_size * 2 ** (len(vae.config.block_out_channels) - 1)
        for given, flag in ((request.width, "--width"), (request.height, "--height")):
            if given is not None and given != size:
                raise InputError(f"{flag} {given}: {card.name} generates {size}×{size} images only.")
        keys = dict.fromkeys(getattr(card, side).model or "" for side in SIDES)
        return {key: load_dit(card, key, config, request, device, dtype) for key in keys}, vae

    def _sample(self, pair: PreparedPair, method: str, seed: int, request: GenRequest, vae: Any, scale: float,
                observer: Callback | None) -> tuple[Any, Any, float]:
        """One method from one seed's noise, decoded: ``(image, SampleResult, seconds)``."""
        import torch

        from w2sd_cli.images import to_image
        from w2sd_cli.methods import run_method

        started = time.perf_counter()
        with torch.inference_mode():
            sample = run_method(pair, method, pair.noise(seed), lam=request.lam, rounds=request.rounds or 1,
                                reference_interval=request.reference_interval, callback=observer)
            pixels = vae.decode(sample.x.to(vae.dtype) / scale).sample
        return to_image(pixels.float()), sample, time.perf_counter() - started


def class_label(request: GenRequest, num_classes: int) -> int:
    """The class a request asks for: ``extra["class_label"]`` (``--class``), else the prompt as a name."""
    from w2sd_cli.moe.imagenet import lookup

    given = request.extra.get("class_label")
    if given is not None:
        return lookup(str(given), num_classes)
    if request.prompt:
        return lookup(request.prompt, num_classes)
    raise InputError("This pair is class-conditional: give an ImageNet class name as the prompt "
                     "(e.g. \"golden retriever\") or a class number with --class 207.")


def locate(ref: ModelRef, request: GenRequest, pair: str | None = None, key: str | None = None) -> Path:
    """The local path of a model: ``path`` refs directly (a ``subfolder`` is honoured), others via the store."""
    if ref.path is not None:
        path = Path(ref.path).expanduser()
        if ref.subfolder:
            path = path / ref.subfolder
        if not path.exists():
            raise ModelError(f"{path}: no such file or folder (named by the card's `path`).")
        return path
    from w2sd_cli.store import locate as store_locate

    return store_locate(ref, offline=request.offline, allow_pickle=request.allow_pickle, pair=pair, key=key)


def load_dit(card: PairCard, key: str, config: DiTMoEConfig, request: GenRequest, device: torch.device,
             dtype: torch.dtype) -> DiTMoE:
    """The DiT-MoE network of the card's model ``key``, strictly loaded."""
    from w2sd_cli.moe.checkpoint import find_weights, load_network

    ref = card.models[key]
    path = locate(ref, request, card.name, key)
    if path.is_dir():
        path = find_weights(path, ref.filename)
    return load_network(path, config, allow_pickle=request.allow_pickle, device=device, dtype=dtype)


def load_vae(card: PairCard, key: str, request: GenRequest, device: torch.device, dtype: torch.dtype) -> Any:
    """A diffusers ``AutoencoderKL`` from the card's model ``key`` (a folder)."""
    from diffusers import AutoencoderKL

    path = locate(card.models[key], request, card.name, key)
    try:
        vae = AutoencoderKL.from_pretrained(str(path), torch_dtype=dtype)
    except (OSError, ValueError) as err:
        raise ModelError(f"{path}: not a diffusers AutoencoderKL folder ({err}).") from None
    if vae.config.latent_channels != 4:
        raise ModelError(f"{path}: a {vae.config.latent_channels}-channel VAE; DiT-MoE latents have 4 channels.")
    return vae.to(device).eval().requires_grad_(False)


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name!r}: not a device (use auto, cpu, cuda or cuda:N).") from None


def _dtype(name: str | None) -> torch.dtype:
    import torch

    table = {None: torch.float32, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in table:
        raise InputError(f"--dtype {name!r}: use float32, float16 or bfloat16.")
    return table[name]


def _routing_text(routing: Routing, config: DiTMoEConfig) -> str:
    text = f"{routing.mode}-{routing.k or config.experts_per_token} of {config.num_experts}"
    return text + (" renormalized" if routing.renormalize else "")


def _tagged(observer: Callback | None, method: str, seed: int) -> Callback | None:
    if observer is None:
        return None
    return lambda info: observer({**info, "method": method, "seed": seed})
