"""The contract between w2sd and a pair kind: a request in, denoisers (and then outputs) out.

This module stays import-light (no torch at import time) so the CLI can list kinds quickly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ValidationError

from w2sd_cli.cards import PairCard, format_validation_error
from w2sd_cli.errors import CardError

if TYPE_CHECKING:
    from torch import Tensor

    from w2sd_cli.sampling import Callback, Denoiser, Level, Schedule


@dataclass
class GenRequest:
    """Everything `w2sd gen` (or a bench item) asks of a pair; ``None`` means "the card's default"."""

    prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    lam: int | None = None
    rounds: int | None = None
    out: Path = Path("w2sd-out")
    device: str = "auto"
    dtype: str | None = None
    num_images: int = 1
    compare: bool = False
    width: int | None = None
    height: int | None = None
    cfg: float | None = None
    strong_prompt: str | None = None
    negative_prompt: str | None = None
    control_image: Path | None = None
    reference_interval: bool = False
    offline: bool = False
    allow_pickle: bool = False
    samples: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self, card: PairCard) -> GenRequest:
        """A copy with the card's defaults filled in where the user gave nothing."""
        d = card.defaults
        steps = self.steps if self.steps is not None else d.steps
        lam = self.lam if self.lam is not None else (d.lam if self.steps is None else None)
        lam = steps - 1 if lam is None else lam
        if lam > steps:
            from w2sd_cli.errors import InputError

            raise InputError(f"--lambda {lam} exceeds --steps {steps}: reflect on at most every step.")
        return _replace(self, steps=steps, lam=lam, seed=self.seed if self.seed is not None else d.seed,
                        rounds=self.rounds or d.rounds, width=self.width or d.width,
                        height=self.height or d.height, samples=self.samples or d.samples)


def _replace(request: GenRequest, **changes: Any) -> GenRequest:
    from dataclasses import replace

    return replace(request, **changes)


@dataclass
class PreparedPair:
    """A pair made ready to sample: what every method (w2sd, plain, controls) needs.

    Attributes:
        strong, weak: the reflection denoisers (card sides ``strong`` and ``weak``).
        final: the closing denoise step's denoiser; also the "plain strong" baseline.
        weak_plain: the weak model with the final side's knobs, the "plain weak" baseline.
        schedule, grid: the noise process and its ``steps + 1`` levels.
        make_grid: the grid for another step count (the equal-NFE control), same spacing.
        noise: the initial latent of one seed (an image depends only on its seed).
        info: provenance for metadata (model revisions, file hashes).
    """

    strong: Denoiser
    weak: Denoiser
    final: Denoiser
    weak_plain: Denoiser
    schedule: Schedule
    grid: list[Level]
    make_grid: Callable[[int], list[Level]]
    noise: Callable[[int], Tensor]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenResult:
    """What a generation produced: files written and a JSON-able summary (``--json`` prints it)."""

    files: list[Path] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


class PairKind:
    """Base class of a pair kind. Subclasses set ``name`` and ``summary`` and implement ``generate``.

    ``options_model`` (a strict pydantic model) validates the card's ``options``; ``check``
    runs when a card is shown or used, so a bad card fails early with its file named.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    options_model: ClassVar[type[BaseModel] | None] = None

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

    def check(self, card: PairCard) -> None:
        """Raise ``CardError`` when the card cannot work with this kind."""
        self.options(card)

    def model_keys(self, card: PairCard) -> list[str]:
        """The card's models this kind needs for a run (pulled before ``generate``)."""
        return list(card.models)

    def generate(self, card: PairCard, request: GenRequest, observer: Callback | None = None) -> GenResult:
        """Run the request and write its outputs under ``request.out``."""
        raise NotImplementedError

    def renderer(self, card: PairCard, request: GenRequest) -> Any:
        """The pair loaded once for `w2sd bench`: a ``w2sd_cli.bench.render.Renderer``, whose
        ``render(prompt, seed, method, observer)`` makes one image (or sample set) at a time.

        The default adapts w2sd's built-in kinds; a plugin kind overrides it to be benchmarked.
        """
        from w2sd_cli.bench.renderers import builtin_renderer

        return builtin_renderer(self, card, request)
