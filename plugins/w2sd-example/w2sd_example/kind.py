"""The ``tempered`` kind: the weak side is the strong mixture with weights raised to a power."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from w2sd_cli.cards import PairCard
from w2sd_cli.errors import CardError
from w2sd_cli.kinds.analytic import AnalyticKind, AnalyticOptions

if TYPE_CHECKING:
    from w2sd_cli.analytic import GaussianMixture


class TemperedOptions(AnalyticOptions):
    """The analytic options plus ``temperature``: τ of the weak side's weights π^τ."""

    temperature: float = Field(2.0, gt=0)


class TemperedKind(AnalyticKind):
    """Analytic pairs whose weak model is the strong one, tempered."""

    name = "tempered"
    summary = "analytic mixture; weak = strong with weights^temperature (example plugin)"
    options_model = TemperedOptions

    def check(self, card: PairCard) -> None:
        self.options(card)
        if card.strong.mixture is None:
            raise CardError(f"pair {card.name!r}: the tempered kind needs `strong.mixture`.")

    def mixtures(self, card: PairCard) -> dict[str, GaussianMixture]:
        from w2sd_cli.analytic import GaussianMixture

        self.check(card)
        options: TemperedOptions = self.options(card)
        strong = card.strong.mixture
        assert strong is not None  # checked above
        weak_weights = [w**options.temperature for w in strong.weights]
        ideal = options.ideal
        made = {
            "strong": GaussianMixture.of(strong.weights, strong.means, strong.stds),
            "weak": GaussianMixture.of(weak_weights, strong.means, strong.stds),
            "ideal": GaussianMixture.of(ideal.weights, ideal.means, ideal.stds),
        }
        made["final"] = made["strong"]
        return made
