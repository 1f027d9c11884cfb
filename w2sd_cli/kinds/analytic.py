"""The ``analytic`` kind: Gaussian-mixture "models" with exact scores (METHOD.md §5).

Each side names a mixture; the card's options name the ideal one. ``generate`` samples every method
from the same noise and reports what W2SD did to precision and diversity against the ideal.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Literal

from w2sd_cli.cards import MixtureSpec, PairCard, Strict
from w2sd_cli.errors import CardError
from w2sd_cli.kinds.base import GenRequest, GenResult, PairKind, PreparedPair

if TYPE_CHECKING:
    from w2sd_cli.analytic import GaussianMixture
    from w2sd_cli.sampling import Callback

METHODS = ("weak", "strong", "w2sd", "extrapolate")


class AnalyticOptions(Strict):
    """Options of an analytic card: the ideal mixture and the noise process."""

    ideal: MixtureSpec
    process: Literal["vp", "flow"] = "vp"


class AnalyticKind(PairKind):
    """Exact Gaussian-mixture pairs: see when W2SD helps, and when it hurts."""

    name = "analytic"
    summary = "Gaussian mixtures with closed-form scores (exact oracle; METHOD.md §5)"
    options_model = AnalyticOptions

    def check(self, card: PairCard) -> None:
        options: AnalyticOptions = self.options(card)
        dims = {len(options.ideal.means[0])}
        for side in ("strong", "weak"):
            spec = getattr(card, side).mixture
            if spec is None:
                raise CardError(f"pair {card.name!r}: analytic pairs need `{side}.mixture`.")
            dims.add(len(spec.means[0]))
        if len(dims) != 1:
            raise CardError(f"pair {card.name!r}: the mixtures have different dimensions {sorted(dims)}.")

    def mixtures(self, card: PairCard) -> dict[str, GaussianMixture]:
        """The strong, weak, final and ideal mixtures of a card."""
        from w2sd_cli.analytic import GaussianMixture

        self.check(card)
        specs = {"strong": card.strong.mixture, "weak": card.weak.mixture,
                 "final": card.final.mixture or card.strong.mixture, "ideal": self.options(card).ideal}
        return {k: GaussianMixture.of(s.weights, s.means, s.stds) for k, s in specs.items() if s is not None}

    def prepare(self, card: PairCard, request: GenRequest) -> PreparedPair:
        """Exact denoisers for the card's mixtures, and seeded noise of ``request.samples`` rows."""
        import torch

        from w2sd_cli.analytic import MixtureEps, MixtureVelocity
        from w2sd_cli.sampling import FlowSchedule, VPSchedule
        from w2sd_cli.threads import limit_threads_for_small_work

        limit_threads_for_small_work("cpu")  # issue 11 item 10; the lead moves this to the engine's loading
        mixtures = self.mixtures(card)
        steps, samples, dim = request.steps or 50, request.samples or 20_000, mixtures["ideal"].dim
        schedule: Any
        if self.options(card).process == "flow":
            schedule = FlowSchedule()
            make: Any = MixtureVelocity
            denoisers = {k: make(m) for k, m in mixtures.items()}
        else:
            schedule = VPSchedule.linear()
            denoisers = {k: MixtureEps(m, schedule) for k, m in mixtures.items()}

        def noise(seed: int) -> torch.Tensor:
            return torch.randn(samples, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))

        return PreparedPair(strong=denoisers["strong"], weak=denoisers["weak"], final=denoisers["final"],
                            weak_plain=denoisers["weak"], schedule=schedule, grid=schedule.timesteps(steps),
                            make_grid=schedule.timesteps, noise=noise)

    def generate(self, card: PairCard, request: GenRequest, observer: Callback | None = None) -> GenResult:
        from w2sd_cli.analytic import kl_divergence, occupancy, spread_ratio
        from w2sd_cli.kinds.analytic_plot import save_plot
        from w2sd_cli.methods import run_method

        pair = self.prepare(card, request)
        ideal = self.mixtures(card)["ideal"]
        x = pair.noise(request.seed or 0)
        results: dict[str, Any] = {}
        points = {}
        for method in METHODS:
            started = time.perf_counter()
            sample = run_method(pair, method, x, lam=request.lam, rounds=request.rounds or 1,
                                reference_interval=request.reference_interval,
                                callback=_tagged(observer, method))
            points[method] = sample.x
            seconds = round(time.perf_counter() - started, 3)
            results[method] = {**_statistics(ideal, sample.x, kl_divergence, occupancy, spread_ratio),
                               "nfe": sample.nfe, "cost": sample.cost, "seconds": seconds}
        points["ideal"] = ideal.sample(x.shape[0], _generator(request.seed or 0))
        results["ideal"] = {**_statistics(ideal, points["ideal"], kl_divergence, occupancy, spread_ratio),
                            "nfe": 0, "seconds": 0.0}
        plot = request.out / f"{card.name}-seed{request.seed or 0}.png"
        save_plot(points, ideal, plot, title=f"{card.name}: {x.shape[0]} samples, {len(pair.grid) - 1} steps")
        summary = {"pair": card.name, "kind": self.name, "card_digest": card.digest(), "seed": request.seed,
                   "steps": len(pair.grid) - 1, "lam": request.lam, "samples": int(x.shape[0]),
                   "ideal_weights": [round(float(w), 4) for w in ideal.weights], "methods": results,
                   "plot": str(plot)}
        return GenResult(files=[plot], summary=summary)


def _generator(seed: int) -> Any:
    import torch

    return torch.Generator().manual_seed(seed + 1)


def _tagged(observer: Callback | None, method: str) -> Callback | None:
    if observer is None:
        return None
    return lambda info: observer({**info, "method": method})


def _statistics(ideal: GaussianMixture, x: Any, kl: Any, occupancy: Any, spread: Any) -> dict[str, Any]:
    """Occupancy per mode, KL to the ideal weights, mean log-likelihood, spread vs the ideal."""
    share = occupancy(ideal, x)
    ratios = [r for r in spread(ideal, x).tolist() if not math.isnan(r)]
    return {
        "occupancy": [round(float(s), 4) for s in share],
        "kl_to_ideal": round(kl(share, ideal.weights), 5),
        "mean_loglik": round(float(ideal.log_prob(x).mean()), 4),
        "spread_ratio": round(sum(ratios) / len(ratios), 4) if ratios else None,
    }
