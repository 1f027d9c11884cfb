"""The ``moe-experts`` kind: one DiT-MoE network, each token routed to its best experts or its worst.

Strong = the trained top-k routing, weak = the bottom-k of the same router, on the same weights
(paper Table 3: DiT-MoE-S/2, top-2 vs bottom-2 of 8, reflection CFG 1.5). Class-conditional: the
prompt is an ImageNet class name or number. Latents are decoded with the SD VAE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from w2sd_cli.cards import PairCard, Side, Strict
from w2sd_cli.errors import CardError, InputError, ModelError, suggest
from w2sd_cli.kinds.base import Condition, LoadSettings, PairKind, PreparedPair, Settings, model_path
from w2sd_cli.moe.config import PRESETS, DiTMoEConfig, RoutingMode

if TYPE_CHECKING:
    import torch

    from w2sd_cli.adapters.unet import CFGDenoiser
    from w2sd_cli.moe.model import DiTMoE, Routing

SIDES = ("strong", "weak", "final")
UNSUPPORTED = {"DiT-MoE-XL/2-8E2A": "the published XL checkpoint uses attention with q/k normalisation and other key "
                                    "names than w2sd's DiT-MoE, so it cannot be loaded; use DiT-MoE-S/2-8E2A (or "
                                    "write a kind for the XL network as a plugin)."}
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
    timestep_spacing: Literal["leading", "trailing", "linspace"] = Field(
        "linspace", description="linspace = upstream DiT's respaced grid (999, 979, 958, ...); leading = 980, 960, ...")
    guided_channels: int | None = Field(3, ge=1, description="CFG on the first N eps channels, the rest conditional "
                                        "(upstream DiT guides 3 of 4); null guides all")


class MoESide(Strict):
    """One side of a moe-experts card: its network, its routing and its CFG."""

    model: str | None = None
    experts: Literal["top", "bottom", "random"] | None = None
    cfg: float | None = Field(None, ge=0)


class MoEExpertsKind(PairKind):
    """Good experts vs bad experts of one mixture-of-experts diffusion transformer."""

    name = "moe-experts"
    summary = "DiT-MoE routed to each token's top-k experts (strong) vs its bottom-k (weak)"
    options_model = MoEOptions
    side_model = MoESide
    output = "image"
    conditioning = "class"
    takes = frozenset({"class_label", "cfg", "width", "height", "device", "dtype"})

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
        if options.architecture in UNSUPPORTED:
            raise CardError(f"pair {card.name!r}: {options.architecture}: {UNSUPPORTED[options.architecture]}")
        k = options.experts_per_token
        if k is not None and k > config.num_experts:
            raise CardError(f"pair {card.name!r}: experts_per_token {k} exceeds the {config.num_experts} experts.")
        return config

    def check(self, card: PairCard) -> None:
        options: MoEOptions = self.options(card)
        self.sides(card)
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

    def load(self, card: PairCard, settings: LoadSettings) -> MoEPair:
        """The card's DiT-MoE networks (by model key) and its VAE, on the settings' device and dtype."""
        options: MoEOptions = self.options(card)
        config = self.network_config(card)
        device, dtype = _device(settings.device), _dtype(settings.dtype)
        vae = load_vae(card, options.vae, settings, device, dtype)
        keys = dict.fromkeys(getattr(card, side).model or "" for side in SIDES)
        networks = {key: load_dit(card, key, config, settings, device, dtype) for key in keys}
        routings = {side: self.routing(card, getattr(card, side), side) for side in SIDES}
        return MoEPair(card, options, config, networks, vae, routings)

    def routing(self, card: PairCard, side: Side, role: str) -> Routing:
        """The routing a side asks for (``experts``: top, bottom or random; default by role)."""
        from w2sd_cli.moe.model import Routing

        options: MoEOptions = self.options(card)
        mode = side.experts or DEFAULT_EXPERTS[role]
        return Routing(mode, options.experts_per_token, options.random_seed, options.renormalize)



class MoEPair:
    """Loaded DiT-MoE pair: class-conditional, latents decoded by the SD VAE."""

    def __init__(self, card: PairCard, options: MoEOptions, config: DiTMoEConfig, networks: dict[str, DiTMoE],
                 vae: Any, routings: dict[str, Routing]) -> None:
        self.card, self.options, self.config, self.networks, self.vae = card, options, config, networks, vae
        self.routings = routings
        self.size = config.input_size * 2 ** (len(vae.config.block_out_channels) - 1)

    def prepare(self, condition: Condition, settings: Settings) -> PreparedPair:
        """Denoisers of the four roles for one class."""
        import torch

        from w2sd_cli.moe.imagenet import class_name
        from w2sd_cli.sampling import VPSchedule

        for given, flag in ((settings.width, "--width"), (settings.height, "--height")):
            if given is not None and given != self.size:
                raise InputError(f"{flag} {given}: {self.card.name} generates {self.size}×{self.size} images only.")
        label = class_label(condition, self.config.num_classes)
        options, card = self.options, self.card
        schedule = VPSchedule.linear(options.beta_start, options.beta_end, options.train_steps)
        final_cfg = settings.cfg if settings.cfg is not None else card.final.cfg
        plan = {"strong": (card.strong, "strong", None), "weak": (card.weak, "weak", None),
                "final": (card.final, "final", final_cfg), "weak_plain": (card.weak, "weak", final_cfg)}
        denoisers = {role: self._denoiser(side, routing, label, schedule, cfg)
                     for role, (side, routing, cfg) in plan.items()}
        device = next(iter(self.networks.values())).device
        shape = (1, self.config.in_channels, self.config.input_size, self.config.input_size)

        def noise(seed: int) -> torch.Tensor:
            return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)

        def make_grid(steps: int) -> list[float]:
            return schedule.timesteps(steps, options.timestep_spacing)

        name = class_name(label) if self.config.num_classes == 1000 else f"class {label}"
        sides = {role: {"model": side.model, "routing": _routing_text(self.routings[routing], self.config),
                        "cfg": _cfg(side.cfg if cfg is None else cfg), "class_label": label}
                 for role, (side, routing, cfg) in plan.items()}
        return PreparedPair(strong=denoisers["strong"], weak=denoisers["weak"], final=denoisers["final"],
                            weak_plain=denoisers["weak_plain"], schedule=schedule, grid=make_grid(settings.steps),
                            make_grid=make_grid, noise=noise, sides=sides,
                            info={"class_label": label, "class_name": name})

    def decode(self, x: Any, count: int) -> list[Any]:
        import torch

        from w2sd_cli.images import to_image

        with torch.inference_mode():
            pixels = self.vae.decode(x.to(self.vae.dtype) / self.options.latent_scale).sample
        return [to_image(pixels[i].float()) for i in range(count)]

    def provenance(self) -> dict[str, Any]:
        net = next(iter(self.networks.values()))
        return {"device": str(net.device), "dtype": str(net.dtype).removeprefix("torch."),
                "routing": {s: _routing_text(r, self.config) for s, r in self.routings.items()}}

    def _denoiser(self, side: Side, routing_of: str, label: int, schedule: Any, cfg: float | None) -> CFGDenoiser:
        import torch

        from w2sd_cli.adapters.unet import CFGDenoiser, Conditioning

        net = self.networks[side.model or ""]
        routing = self.routings[routing_of]
        device = net.device

        def call(x: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
            return net(x, timestep, cond.hidden_states, routing)

        labels = Conditioning(torch.tensor([label], device=device))
        null = Conditioning(torch.tensor([net.null_label], device=device))
        return CFGDenoiser(call, schedule, labels, null, _cfg(side.cfg if cfg is None else cfg),
                           dtype=net.dtype, learned_sigma=net.config.learn_sigma,
                           guided_channels=self.options.guided_channels)


def _cfg(scale: float | None) -> float:
    return 1.0 if scale is None else scale


def class_label(condition: Condition, num_classes: int) -> int:
    """The class a condition asks for: ``class_label`` (``--class``), else the prompt as a class name."""
    from w2sd_cli.moe.imagenet import lookup

    if condition.class_label is not None:
        return lookup(str(condition.class_label), num_classes)
    if condition.prompt.strip():
        return lookup(condition.prompt, num_classes)
    raise InputError("This pair is class-conditional: give an ImageNet class name as the prompt "
                     "(e.g. \"golden retriever\") or a class number with --class 207.")


def load_dit(card: PairCard, key: str, config: DiTMoEConfig, settings: LoadSettings, device: torch.device,
             dtype: torch.dtype) -> DiTMoE:
    """The DiT-MoE network of the card's model ``key``, strictly loaded."""
    from w2sd_cli.moe.checkpoint import find_weights, load_network

    ref = card.models[key]
    path = model_path(card, key, settings)
    if path.is_dir():
        path = find_weights(path, ref.filename)
    return load_network(path, config, allow_pickle=settings.allow_pickle, device=device, dtype=dtype)


def load_vae(card: PairCard, key: str, settings: LoadSettings, device: torch.device, dtype: torch.dtype) -> Any:
    """A diffusers ``AutoencoderKL`` from the card's model ``key`` (a folder)."""
    from diffusers import AutoencoderKL

    path = model_path(card, key, settings)
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
