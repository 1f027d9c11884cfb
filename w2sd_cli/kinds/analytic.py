"""The ``analytic`` kind: Gaussian-mixture "models" with exact scores (docs/method.md).

Each side names a mixture; the card's options name the ideal one. Outputs are sample sets; the card's
``mixture-stats`` metric reports what W2SD did to precision and diversity against the ideal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from w2sd_cli.cards import MixtureSpec, PairCard, Strict
from w2sd_cli.errors import CardError
from w2sd_cli.kinds.base import Condition, LoadSettings, PairKind, PreparedPair, Settings

if TYPE_CHECKING:
    from w2sd_cli.analytic import GaussianMixture

DEFAULT_SAMPLES = 20_000


class AnalyticOptions(Strict):
    """Options of an analytic card: the ideal mixture and the noise process."""

    ideal: MixtureSpec
    process: Literal["vp", "flow"] = "vp"


class MixtureSide(Strict):
    """One side of an analytic card: its Gaussian mixture."""

    mixture: MixtureSpec | None = None


class AnalyticKind(PairKind):
    """Exact Gaussian-mixture pairs: see when W2SD helps, and when it hurts."""

    name = "analytic"
    summary = "Gaussian mixtures with closed-form scores (exact oracle; docs/method.md)"
    options_model = AnalyticOptions
    side_model = MixtureSide
    output = "samples"
    conditioning = "none"
    small = True
    takes = frozenset({"samples"})
    gen_methods = ("weak", "strong", "w2sd", "extrapolate")
    compare_methods = gen_methods

    def check(self, card: PairCard) -> None:
        options: AnalyticOptions = self.options(card)
        sides = self.sides(card)
        dims = {len(options.ideal.means[0])}
        for side in ("strong", "weak"):
            spec = sides[side].mixture
            if spec is None:
                raise CardError(f"pair {card.name!r}: analytic pairs need `{side}.mixture`.")
            dims.add(len(spec.means[0]))
        if len(dims) != 1:
            raise CardError(f"pair {card.name!r}: the mixtures have different dimensions {sorted(dims)}.")

    def mixtures(self, card: PairCard) -> dict[str, GaussianMixture]:
        """The strong, weak, final and ideal mixtures of a card."""
        from w2sd_cli.analytic import GaussianMixture

        self.check(card)
        sides = self.sides(card)
        specs = {"strong": sides["strong"].mixture, "weak": sides["weak"].mixture,
                 "final": sides["final"].mixture or sides["strong"].mixture, "ideal": self.options(card).ideal}
        return {k: GaussianMixture.of(s.weights, s.means, s.stds) for k, s in specs.items() if s is not None}

    def load(self, card: PairCard, settings: LoadSettings) -> AnalyticPair:
        """The card's mixtures as exact denoisers (no models to load)."""
        return AnalyticPair(self.mixtures(card), self.options(card).process)


class AnalyticPair:
    """Loaded analytic pair: exact denoisers, seeded noise of ``settings.samples`` rows per seed."""

    def __init__(self, mixtures: dict[str, GaussianMixture], process: str) -> None:
        self.mixtures, self.process = mixtures, process

    def prepare(self, condition: Condition, settings: Settings) -> PreparedPair:
        import torch

        from w2sd_cli.analytic import MixtureEps, MixtureVelocity
        from w2sd_cli.sampling import FlowSchedule, VPSchedule

        samples, dim = settings.samples or DEFAULT_SAMPLES, self.mixtures["ideal"].dim
        schedule: Any = FlowSchedule() if self.process == "flow" else VPSchedule.linear()
        denoisers = {k: MixtureVelocity(m) if self.process == "flow" else MixtureEps(m, schedule)
                     for k, m in self.mixtures.items()}

        def noise(seed: int) -> torch.Tensor:
            return torch.randn(samples, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))

        sides = {role: _describe(self.mixtures[source]) for role, source in
                 (("strong", "strong"), ("weak", "weak"), ("final", "final"), ("weak_plain", "weak"))}
        return PreparedPair(strong=denoisers["strong"], weak=denoisers["weak"], final=denoisers["final"],
                            weak_plain=denoisers["weak"], schedule=schedule, grid=schedule.timesteps(settings.steps),
                            make_grid=schedule.timesteps, noise=noise, sides=sides)

    def decode(self, x: Any, count: int) -> list[Any]:
        return [part.double().cpu().numpy() for part in x.chunk(count)]

    def reference(self, seed: int, settings: Settings) -> Any:
        """Samples of the ideal mixture for ``seed`` (the truth W2SD should move toward)."""
        import torch

        generator = torch.Generator().manual_seed(seed + 1)
        return self.mixtures["ideal"].sample(settings.samples or DEFAULT_SAMPLES, generator).double().numpy()

    def provenance(self) -> dict[str, Any]:
        return {"device": "cpu", "dtype": "float64", "process": self.process}


def _describe(mixture: GaussianMixture) -> dict[str, Any]:
    return {"weights": [round(float(w), 6) for w in mixture.weights]}
