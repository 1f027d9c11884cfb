"""The contract between w2sd and a pair kind: a card becomes a loaded pair, a condition becomes denoisers.

A kind answers three questions and nothing else (the engine, ``w2sd_cli.engine``, does the rest):

1. ``PairKind.load(card, settings) -> LoadedPair``: load the models, once.
2. ``LoadedPair.prepare(condition, settings) -> PreparedPair``: the strong / weak / final / weak-plain
   denoisers, the noise schedule and grid for one condition (a prompt, a class, a control image...).
3. ``LoadedPair.decode(x, count) -> outputs``: latents of ``count`` seeds into images or sample arrays.

Kinds write no files, loop over no seeds or methods and build no panels. This module stays import-light
(no torch at import time) so the CLI can list kinds quickly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from w2sd_cli.cards import PairCard, format_validation_error
from w2sd_cli.errors import CardError, InputError

if TYPE_CHECKING:
    from torch import Tensor

    from w2sd_cli.sampling import Denoiser, Level, Schedule

Output = Literal["image", "samples"]
Conditioning = Literal["text", "class", "none"]


@dataclass(frozen=True)
class LoadSettings:
    """How a pair's models are loaded: where, in which precision, and what may be fetched.

    Attributes:
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        dtype: ``float32``, ``float16``, ``bfloat16`` or ``None`` (the kind's default for the device).
        offline: never touch the network; missing models are an error naming ``w2sd pull``.
        allow_pickle: accept pickle checkpoints (loaded with ``weights_only=True``).
        offload: keep idle models on the CPU (CUDA only).
    """

    device: str = "auto"
    dtype: str | None = None
    offline: bool = False
    allow_pickle: bool = False
    offload: bool = False


@dataclass(frozen=True)
class Condition:
    """What one output is conditioned on; kinds read the fields they understand.

    Attributes:
        prompt: the user's prompt (text pairs), or a class name (class-conditional pairs).
        strong_prompt: prompt pairs: the refined prompt used on the strong and final sides.
        negative_prompt: replaces the card's negative prompt on every side (image pairs).
        control_image: pipeline pairs: an edge map or a photo to turn into one.
        class_label: class-conditional pairs: the class number (overrides ``prompt``).
    """

    prompt: str = ""
    strong_prompt: str | None = None
    negative_prompt: str | None = None
    control_image: Path | None = None
    class_label: int | None = None

    def as_recipe(self) -> dict[str, Any]:
        """JSON-able form; a control image is recorded by absolute path and sha256."""
        out: dict[str, Any] = {k: v for k, v in asdict(self).items() if v is not None}
        if self.control_image is not None:
            path = Path(self.control_image).expanduser().resolve()
            out["control_image"] = str(path)
            try:
                out["control_image_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                out["control_image_sha256"] = None
        return out

    @classmethod
    def from_recipe(cls, data: dict[str, Any]) -> Condition:
        """The condition a recipe records (``as_recipe``'s inverse)."""
        image = data.get("control_image")
        return cls(prompt=str(data.get("prompt") or ""), strong_prompt=data.get("strong_prompt"),
                   negative_prompt=data.get("negative_prompt"), control_image=Path(image) if image else None,
                   class_label=data.get("class_label"))


@dataclass(frozen=True)
class Settings:
    """Sampler settings, resolved against a card's defaults (``Settings.resolve``).

    Attributes:
        steps: sampling steps ``T``.
        lam: reflected steps ``λ`` (the first ``λ``, at the high-noise end).
        rounds: reflections per reflecting step.
        k: the weight of the first-order and extrapolation controls.
        reference_interval: reproduce the reference code's inversion interval.
        cfg: overrides the final side's CFG scale.
        width, height: image size (``None``: the model's native size).
        samples: sample-set pairs: points per seed.
    """

    steps: int = 50
    lam: int = 49
    rounds: int = 1
    k: float = 1.0
    reference_interval: bool = False
    cfg: float | None = None
    width: int | None = None
    height: int | None = None
    samples: int | None = None

    @classmethod
    def resolve(cls, card: PairCard, *, steps: int | None = None, lam: int | None = None,
                rounds: int | None = None, k: float | None = None, reference_interval: bool = False,
                cfg: float | None = None, width: int | None = None, height: int | None = None,
                samples: int | None = None) -> Settings:
        """The card's defaults where the caller gave ``None``; ``lam`` follows ``steps`` when only steps is given.

        Raises:
            InputError: a knob is not finite or out of range (``w2sd_cli.validate.check_knobs``), or ``lam``
                exceeds ``steps``.
        """
        from w2sd_cli.validate import check_knobs

        knobs = check_knobs(steps=steps, lam=lam, rounds=rounds, k=k, cfg=cfg, width=width, height=height,
                            samples=samples, reference_interval=reference_interval)
        steps, lam, rounds, k, cfg = (knobs[key] for key in ("steps", "lam", "rounds", "k", "cfg"))
        width, height, samples = knobs["width"], knobs["height"], knobs["samples"]
        d = card.defaults
        if lam is None:
            lam = d.lam if (steps is None and d.lam is not None) else (steps or d.steps) - 1
        steps = steps if steps is not None else d.steps
        if lam > steps:
            raise InputError(f"--lambda {lam} exceeds --steps {steps}: reflect on at most every step.")
        return cls(steps=steps, lam=lam, rounds=rounds or d.rounds, k=1.0 if k is None else k,
                   reference_interval=reference_interval, cfg=cfg, width=width or d.width,
                   height=height or d.height, samples=samples or d.samples)

    def with_(self, **changes: Any) -> Settings:
        """A copy with ``changes``."""
        return replace(self, **changes)

    def as_recipe(self) -> dict[str, Any]:
        return asdict(self)


ROLES = ("strong", "weak", "final", "weak_plain")


@dataclass(kw_only=True)
class PreparedPair:
    """A pair made ready for one condition: what every method (W2SD, plain, the controls) needs.

    A kind gives its sides one of two ways:

    - ``specs`` (``strong``, ``weak``, ``final``: frozen, hashable side specs, e.g. dataclasses with a ``cfg``)
      and ``denoiser(spec)``: the method table's rule (``w2sd_cli.methods.plain_weak``) then adds the plain weak
      side at the final side's ``guidance_knobs``, and equal specs share one denoiser, so methods that then
      coincide are detected. ``diffusers`` (every family) and ``toy-unet`` do this.
    - the four denoisers themselves, for kinds whose sides have no guidance knob to lend (``analytic``: fixed
      mixtures) or that choose their plain weak side themselves (``moe-experts``: the weak routing at the final
      CFG; plugin kinds written before specs existed): ``weak_plain`` is then theirs, and coincidence follows
      denoiser identity.

    Attributes:
        strong, weak: the reflection denoisers (the card's ``strong`` and ``weak`` sides).
        final: the closing denoise step's denoiser; also the plain strong baseline.
        weak_plain: the plain weak baseline.
        schedule, grid: the noise process and its ``steps + 1`` levels.
        make_grid: the grid for another step count (the equal-NFE control), same spacing.
        noise: one seed's initial latent, drawn on its own generator (leading dim: that seed's rows), so an
            output depends only on its seed whatever the batch.
        specs, denoiser, guidance_knobs: see above.
        sides: what each role is (model, CFG, LoRA scale, rendered prompt...), for the recipe (from ``specs``
            by ``describe`` when given).
        warnings: things the user should know (a prompt cut by the tokenizer, an unknown word...).
        info: provenance (model revisions, file hashes).
    """

    schedule: Schedule
    grid: list[Level]
    make_grid: Callable[[int], list[Level]]
    noise: Callable[[int], Tensor]
    strong: Denoiser = None  # type: ignore[assignment]
    weak: Denoiser = None  # type: ignore[assignment]
    final: Denoiser = None  # type: ignore[assignment]
    weak_plain: Denoiser = None  # type: ignore[assignment]
    specs: dict[str, Any] = field(default_factory=dict)
    denoiser: Callable[[Any], Denoiser] | None = None
    guidance_knobs: tuple[str, ...] = ("cfg",)
    describe: Callable[[Any], dict[str, Any]] | None = None
    sides: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.specs:
            self._from_specs()
        elif self.sides:  # one object per distinct role, so coinciding methods share their work
            if self.sides.get("final") == self.sides.get("strong"):
                self.final = self.strong
            if self.sides.get("weak_plain") == self.sides.get("weak"):
                self.weak_plain = self.weak
        missing = [role for role in ROLES if getattr(self, role) is None]
        if missing:
            raise TypeError(f"PreparedPair needs specs and denoiser(spec), or every role's denoiser; no {missing}")

    def _from_specs(self) -> None:
        from w2sd_cli.methods import plain_weak

        if self.denoiser is None:
            raise TypeError("PreparedPair(specs=...) needs denoiser(spec)")
        self.specs = {**self.specs, "weak_plain": plain_weak(self.specs, self.guidance_knobs)}
        built: dict[Any, Denoiser] = {}
        for role in ROLES:
            spec = self.specs[role]
            if spec not in built:
                built[spec] = self.denoiser(spec)
            setattr(self, role, built[spec])
        describe = self.describe or _as_dict
        self.sides = {role: describe(self.specs[role]) for role in ROLES}

    def identity(self, role: str) -> Hashable:
        """What the role is, for coincidence: its spec, or (kinds that give denoisers) the denoiser object."""
        return self.specs[role] if self.specs else id(getattr(self, role))


def _as_dict(spec: Any) -> dict[str, Any]:
    return asdict(spec) if is_dataclass(spec) and not isinstance(spec, type) else {"side": repr(spec)}


@runtime_checkable
class LoadedPair(Protocol):
    """A pair's models in memory (``PairKind.load``); the engine asks it for denoisers and outputs.

    It may also have ``reference(seed, settings) -> output``: the truth sampled for a seed, for pairs that
    know it (the analytic mixtures); the engine shows it beside the methods.
    """

    def prepare(self, condition: Condition, settings: Settings) -> PreparedPair:
        """Denoisers, schedule, grid and noise for ``condition``; reuse what earlier calls computed."""
        ...

    def decode(self, x: Tensor, count: int) -> list[Any]:
        """Final latents of ``count`` seeds (stacked along dim 0) into ``count`` outputs."""
        ...

    def provenance(self) -> dict[str, Any]:
        """Device, dtype, model revisions and file hashes: recorded with every output."""
        ...


class PairKind:
    """Base class of a pair kind: set ``name`` and ``summary``, implement ``load``.

    ``options_model`` (a strict pydantic model) validates the card's ``options`` and ``side_model`` each side's
    knobs (``sides``: a plugin kind declares its own knobs there); ``check`` runs when a
    card is shown or used, so a bad card fails early with its file named. ``model_keys`` names the card's
    models the engine must download before ``load``.

    Attributes:
        output: ``"image"`` (PIL images) or ``"samples"`` (``(N, dim)`` arrays).
        conditioning: ``"text"`` (a prompt is required), ``"class"`` (a class name or number) or ``"none"``
            (the condition is ignored; a bench grid has one empty prompt).
        gen_methods: what `w2sd gen` samples without ``--compare`` / ``--methods``.
        compare_methods: what ``--compare`` samples.
        takes: the pair-specific options the kind reads (``w2sd_cli.validate.FLAGS``: ``cfg``, ``width``,
            ``class_label``, ``device``...); others are refused before anything loads. ``None``: all of them.
        small: tiny networks on the CPU: sampled on one torch thread (``W2SD_THREADS`` overrides), since torch's
            default threads collapse under load on small machines.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    output: ClassVar[Output] = "image"
    conditioning: ClassVar[Conditioning] = "text"
    options_model: ClassVar[type[BaseModel] | None] = None
    side_model: ClassVar[type[BaseModel] | None] = None
    small: ClassVar[bool] = False
    gen_methods: ClassVar[tuple[str, ...]] = ("w2sd",)
    compare_methods: ClassVar[tuple[str, ...]] = ("weak", "strong", "w2sd")
    takes: ClassVar[frozenset[str] | None] = None

    def options(self, card: PairCard) -> Any:
        """The card's ``options`` validated by ``options_model`` (or the raw dict)."""
        if self.options_model is None:
            if card.options:
                raise CardError(f"pair {card.name!r}: kind {self.name!r} takes no options, got {sorted(card.options)}.")
            return card.options
        try:
            return self.options_model.model_validate(card.options)
        except ValidationError as err:
            raise CardError(format_validation_error(err, f"pair {card.name!r} options")) from None

    def sides(self, card: PairCard) -> dict[str, Any]:
        """The card's ``strong``, ``weak`` and ``final`` knobs validated by ``side_model`` (or the raw sides).

        Raises:
            CardError: naming the card's file and every bad field (``strong.cfg: ...``).
        """
        raw = {name: getattr(card, name) for name in ("strong", "weak", "final")}
        if self.side_model is None:
            return raw
        out, problems = {}, []
        for name, side in raw.items():
            try:
                out[name] = self.side_model.model_validate(side.knobs())
            except ValidationError as err:
                problems.append(format_validation_error(err, "", name).removeprefix(": invalid pair card: "))
        if problems:
            raise CardError(f"{card.origin}: invalid pair card (kind {self.name}): " + " ".join(problems))
        return out

    def check(self, card: PairCard) -> None:
        """Raise ``CardError`` when the card cannot work with this kind."""
        self.options(card)
        self.sides(card)

    def model_keys(self, card: PairCard) -> list[str]:
        """The card's models this kind needs (downloaded by the engine before ``load``)."""
        return list(card.models)

    def load(self, card: PairCard, settings: LoadSettings) -> LoadedPair:
        """Load the card's models (already downloaded) and return the loaded pair."""
        raise NotImplementedError(f"kind {self.name!r} does not implement load()")


def model_path(card: PairCard, key: str, settings: LoadSettings) -> Path:
    """The local path of the card's model ``key``: a ``path`` source as given, others from the store."""
    from w2sd_cli.errors import ModelError

    ref = card.models[key]
    if ref.path is not None:
        path = Path(ref.path).expanduser()
        if ref.subfolder:
            path = path / ref.subfolder
        if not path.exists():
            raise ModelError(f"{path}: no such file or folder (named by pair {card.name}'s model {key!r}).")
        return path
    from w2sd_cli.store import locate

    return Path(locate(ref, offline=settings.offline, allow_pickle=settings.allow_pickle, pair=card.name, key=key))
