"""The one driver: (conditions × seeds × methods) of a loaded pair into outputs with their recipes.

`w2sd gen`, `w2sd bench`, `w2sd pairs check` and the Python API all go through ``Engine``; kinds only build
what it consumes (``w2sd_cli.kinds.base``). Seeds are batched: each seed's noise is drawn on its own
generator and the batch is stacked, so an output depends only on its seed whatever the batch size.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from w2sd_cli.cards import PairCard
from w2sd_cli.errors import InputError, Interrupted, ModelError
from w2sd_cli.kinds.base import Condition, LoadedPair, LoadSettings, PairKind, PreparedPair, Settings
from w2sd_cli.methods import BUILTIN, Plan, canonical, get_method
from w2sd_cli.threads import small_work_threads

if TYPE_CHECKING:
    from torch import Tensor

    from w2sd_cli.sampling import Callback

Observer = Callable[[dict[str, Any]], None]
KEPT = 256
"""Outputs the engine keeps for coinciding methods of one condition; past that, a coinciding method renders again."""


@dataclass
class Sample:
    """One output of one method from one seed, with everything needed to make it again.

    Attributes:
        method, seed, condition: what was sampled.
        output: a PIL image (``kind == "image"``) or an ``(N, dim)`` float array (``"samples"``).
        nfe: network predictions; ``cost``: batch-1 forward units (batched CFG counts 2).
        seconds: wall time of this output's share of its batch (sampling and decoding).
        recipe: the full recipe (pair, card digest, method, condition, seed, settings, sides, grid, versions).
        verdicts: scores of the metrics the card names (e.g. the shapes checker), by metric name.
        same_as: the method this one coincided with for this pair (rendered once), if any.
    """

    method: str
    seed: int
    condition: Condition
    output: Any
    kind: str
    nfe: int
    cost: float
    seconds: float
    recipe: dict[str, Any]
    verdicts: dict[str, dict[str, float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    same_as: str | None = None

    @property
    def image(self) -> Any:
        """The PIL image (image pairs)."""
        if self.kind != "image":
            raise AttributeError(f"this pair makes sample sets, not images: use .samples ({self.method})")
        return self.output

    @property
    def samples(self) -> Any:
        """The ``(N, dim)`` sample array (sample-set pairs such as the analytic mixtures)."""
        if self.kind != "samples":
            raise AttributeError(f"this pair makes images, not sample sets: use .image ({self.method})")
        return self.output

    def save(self, path: str | Path) -> Path:
        """Write the output atomically in the format the suffix names: an image as ``.png`` (carrying the recipe),
        ``.jpg`` or ``.webp``; a sample set as ``.npy`` or ``.npz``; the recipe beside non-PNG files as ``PATH.json``.

        Raises:
            InputError: the suffix does not fit the output (``.png`` for a sample set, ``.npy`` for an image).
        """
        from w2sd_cli.outputs import save_output

        return save_output(self.output, self.kind, Path(path), self.recipe)


class Engine:
    """A loaded pair with its settings: renders batches of seeds for one condition and one method at a time.

    Args:
        card: the pair card (recorded in every recipe).
        kind: the card's kind (what it outputs and is conditioned on).
        loaded: the kind's loaded pair.
        settings: sampler settings (resolved against the card).
        load: how the pair was loaded (recorded).
        metrics: names of metrics to score each output with (default: the card's ``metrics``).
    """

    def __init__(self, card: PairCard, kind: PairKind, loaded: LoadedPair, settings: Settings, load: LoadSettings,
                 metrics: Sequence[str] | None = None) -> None:
        self.card, self.kind, self.loaded, self.settings, self.load = card, kind, loaded, settings, load
        self.metric_names = list(card.metrics if metrics is None else metrics)
        self.asked = load
        """The load settings as the caller gave them (what recipes record; ``load`` is what was used)."""
        self.pair_id: str | None = None
        """How the pair was reached (``plugin:name`` when the plain name means another pair), for recipes."""
        self._prepared: tuple[Condition, Settings, PreparedPair] | None = None
        self._metrics: dict[str, Any] = {}
        self._recent: dict[tuple[str, Settings], dict[int, Sample]] = {}
        """What each rendered method made for the current condition, by seed: a method that coincides with one
        rendered already is copied, not rendered again (cleared when the condition changes)."""
        self._plan_cache: dict[Settings, dict[str, Plan | None]] = {}

    @property
    def output(self) -> str:
        return str(self.kind.output)

    def prepare(self, condition: Condition, settings: Settings | None = None) -> PreparedPair:
        """The prepared pair of ``condition`` (the last one is kept, so a grid walks prompts in order)."""
        settings = settings or self.settings
        if self._prepared is not None and self._prepared[:2] == (condition, settings):
            return self._prepared[2]
        check_condition(self.card, self.kind, condition)
        prepared = self.loaded.prepare(condition, settings)
        self._prepared = (condition, settings, prepared)
        self._recent, self._plan_cache = {}, {}
        return prepared

    def render(self, condition: Condition, seeds: Sequence[int], method: str, *,
               settings: Settings | None = None, observer: Observer | None = None,
               noise: Sequence[Tensor] | None = None) -> list[Sample]:
        """Sample ``method`` from each seed's noise (or ``noise``, one latent per seed, shaped like the seed's
        own) in one batch; decode; score with the card's metrics.

        A method whose plan equals another's (``w2sd_cli.methods.canonical``) is the copy of that one's render,
        made once per seed whatever the order of the methods asked for or the number of seeds.
        """
        settings = settings or self.settings
        prepared = self.prepare(condition, settings)
        get_method(method)
        rendered = canonical(method, self._plans(prepared, settings, method))
        if noise is not None:  # the caller's latents: rendered for this call, shared with no seeded render
            fresh = self._render(condition, seeds, rendered, prepared, settings, observer, noise)
            return fresh if rendered == method else [self._copy(f, method, prepared, settings) for f in fresh]
        done = self._recent.setdefault((rendered, settings), {})
        missing = [seed for seed in seeds if seed not in done]
        made = {s.seed: s for s in self._render(condition, missing, rendered, prepared, settings, observer, None)} \
            if missing else {}
        kept = {**{seed: done[seed] for seed in seeds if seed in done}, **made}
        self._keep(done, made)
        if rendered == method:
            return [kept[seed] for seed in seeds]
        return [self._copy(kept[seed], method, prepared, settings) for seed in seeds]

    def _keep(self, done: dict[int, Sample], made: dict[int, Sample]) -> None:
        """Remember ``made`` for methods that coincide with it, at most ``KEPT`` outputs in all (oldest go first)."""
        done.update(made)
        while sum(len(d) for d in self._recent.values()) > KEPT:
            oldest = next(d for d in self._recent.values() if d)
            oldest.pop(next(iter(oldest)))

    def _plans(self, prepared: PreparedPair, settings: Settings, method: str) -> dict[str, Plan | None]:
        """Every built-in method's plan and ``method``'s, for this prepared pair and settings (kept per settings)."""
        plans = self._plan_cache.setdefault(settings, {})
        for name in dict.fromkeys([*BUILTIN, method]):
            if name not in plans:
                make = get_method(name).plan
                plans[name] = make(prepared, settings) if make is not None else None
        return plans

    def _render(self, condition: Condition, seeds: Sequence[int], method: str, prepared: PreparedPair,
                settings: Settings, observer: Observer | None, noise: Sequence[Tensor] | None) -> list[Sample]:
        import torch

        runner = get_method(method)
        started = time.perf_counter()
        x = torch.cat(initial_noise(prepared, seeds, noise))
        threads = small_work_threads("cpu") if self.kind.small else contextlib.nullcontext()
        try:
            with threads, torch.inference_mode():
                result = runner.run(prepared, x, settings, _tagged(observer, method, seeds))
                if not bool(torch.isfinite(result.x).all()):
                    raise ModelError(f"{method} seed {_seeds_text(seeds)}: the sample became NaN/inf. In float16 try "
                                     "--dtype float32 (or bfloat16); otherwise a model or LoRA is broken or its "
                                     "scale is too large.")
                outputs = self.loaded.decode(result.x, len(seeds))
        except KeyboardInterrupt:
            raise Interrupted("Interrupted: nothing partial was kept. Run the same command again.") from None
        seconds = (time.perf_counter() - started) / len(seeds)
        samples = []
        for seed, output in zip(seeds, outputs, strict=True):
            recipe = self.recipe(condition, seed, method, prepared, settings)
            recipe.update(nfe=result.nfe, calls=result.calls,
                          cost=result.cost, seconds=round(seconds, 4), same_as=None)
            samples.append(Sample(method, seed, condition, output, self.output, result.nfe, result.cost,
                                  round(seconds, 4), recipe, warnings=list(prepared.warnings)))
        if noise is not None:
            for sample, latent in zip(samples, noise, strict=True):
                sample.recipe["initial_noise"] = _digest(latent)
        self.score(samples)
        return samples

    def _copy(self, source: Sample, method: str, prepared: PreparedPair, settings: Settings) -> Sample:
        """``method``'s sample when it coincides with ``source``'s method for this pair: same pixels, its own recipe."""
        recipe = self.recipe(source.condition, source.seed, method, prepared, settings)
        recipe.update({k: source.recipe[k] for k in ("nfe", "calls", "cost", "initial_noise") if k in source.recipe},
                      seconds=0.0, same_as=source.method)
        return Sample(method, source.seed, source.condition, source.output, source.kind, source.nfe, source.cost, 0.0,
                      recipe, dict(source.verdicts), list(source.warnings), same_as=source.method)

    def run(self, conditions: Sequence[Condition], seeds: Sequence[int], methods: Sequence[str], *,
            batch_size: int = 1, observer: Observer | None = None) -> Iterator[Sample]:
        """Every (condition, seed, method), condition-major, ``batch_size`` seeds per network call."""
        if batch_size < 1:
            raise InputError(f"--batch-size {batch_size}: use 1 or more.")
        for method in methods:
            get_method(method)
        for condition in conditions:
            for start in range(0, len(seeds), batch_size):
                chunk = list(seeds[start:start + batch_size])
                for method in methods:
                    yield from self.render(condition, chunk, method, observer=observer)

    def reference(self, condition: Condition, seed: int) -> Sample | None:
        """The truth sampled for ``seed`` when the pair knows it (``loaded.reference``), scored like the rest."""
        make = getattr(self.loaded, "reference", None)
        if make is None:
            return None
        output = make(seed, self.settings)
        recipe = {**self.recipe(condition, seed, "ideal", None, self.settings), "nfe": 0}
        sample = Sample("ideal", seed, condition, output, self.output, 0, 0.0, 0.0, recipe)
        self.score([sample])
        return sample

    def recipe(self, condition: Condition, seed: int, method: str, prepared: PreparedPair | None,
               settings: Settings) -> dict[str, Any]:
        """Everything needed to make an output again (what ``--from-image`` and ``Pair.generate`` read back)."""
        from w2sd_cli.images import versions
        from w2sd_cli.store.redact import redact_data

        prompt = condition.prompt
        recipe: dict[str, Any] = {
            "pair": self.card.name, "kind": self.card.kind, "card_digest": self.card.digest(), "method": method,
            "seed": seed, "prompt": prompt, "condition": _without(condition.as_recipe(), prompt),
            "settings": settings.as_recipe(), "load": {"device": self.asked.device, "dtype": self.asked.dtype},
            "provenance": self.loaded.provenance(), "versions": versions(),
        }
        if self.pair_id is not None and self.pair_id != self.card.name:
            recipe["pair_id"] = self.pair_id
        if prepared is not None:
            plan = self._plans(prepared, settings, method).get(method)
            grid = plan.grid if plan is not None else prepared.grid
            sides = {role: _without(side, prompt) if isinstance(side, dict) else side
                     for role, side in prepared.sides.items()}
            recipe.update(sides=sides, grid=[float(t) for t in grid], warnings=prepared.warnings)
        return redact_data(recipe)  # type: ignore[return-value]

    def score(self, samples: list[Sample]) -> None:
        """Attach the verdicts of the engine's metrics to ``samples``."""
        for name in self.metric_names:
            metric = self._metric(name)
            if str(getattr(metric, "inputs", "image")) != self.output:
                continue
            outputs = [s.output for s in samples]
            prompts = [s.condition.prompt for s in samples]
            rows = metric.score(outputs, prompts, card=self.card) if self.output == "samples" else \
                metric.score(outputs, prompts)
            for sample, row in zip(samples, rows, strict=True):
                sample.verdicts[name] = row

    def _metric(self, name: str) -> Any:
        if name not in self._metrics:
            from w2sd_cli.bench.metrics.base import MetricLoad, get_metric

            metric = get_metric(name)
            loader = getattr(metric, "load", None)
            if loader is not None:
                loader(MetricLoad(self.load.device, self.load.dtype, self.load.offline, self.load.allow_pickle))
            self._metrics[name] = metric
        return self._metrics[name]


def open_engine(card: PairCard, kind: PairKind, settings: Settings, load: LoadSettings, *,
                metrics: Sequence[str] | None = None, observer: Observer | None = None) -> Engine:
    """Check the card, fetch its missing models (progress to ``observer``), load the pair once."""
    kind.check(card)
    fetch_models(card, kind.model_keys(card), load, observer)
    try:
        loaded = kind.load(card, load)
    except KeyboardInterrupt:
        raise Interrupted("Interrupted while loading: nothing was written. Run the same command again.") from None
    return Engine(card, kind, loaded, settings, load, metrics)


def fetch_models(card: PairCard, keys: list[str], load: LoadSettings, observer: Observer | None) -> None:
    """Download what ``keys`` name and is not cached yet (nothing for local ``path`` models)."""
    remote = [k for k in keys if card.models[k].path is None]
    if not remote:
        return
    from w2sd_cli import store

    ensure = getattr(store, "ensure_models", None)
    if ensure is not None:
        ensure(card, remote, offline=load.offline, allow_pickle=load.allow_pickle, observer=observer)
        return
    for key in remote:
        store.locate(card.models[key], offline=load.offline, allow_pickle=load.allow_pickle, pair=card.name, key=key)


def check_condition(card: PairCard, kind: PairKind, condition: Condition) -> None:
    """Refuse conditions the pair cannot use (``w2sd_cli.validate.check_condition``)."""
    from w2sd_cli.validate import check_condition as check

    check(card, kind, condition)


def initial_noise(prepared: PreparedPair, seeds: Sequence[int], noise: Sequence[Tensor] | None) -> list[Tensor]:
    """Each seed's initial latent: drawn from its seed, or the caller's (checked against the drawn shape)."""
    drawn = [prepared.noise(seed) for seed in seeds]
    if noise is None:
        return drawn
    if len(noise) != len(seeds):
        raise InputError(f"noise: give one initial latent per seed ({len(seeds)}), not {len(noise)}.")
    given = []
    for seed, mine, theirs in zip(seeds, drawn, noise, strict=True):
        shape = tuple(getattr(theirs, "shape", ()))
        if shape != tuple(mine.shape):
            raise InputError(f"noise for seed {seed}: shape {shape}, but this pair starts from {tuple(mine.shape)}.")
        value = theirs.to(device=mine.device, dtype=mine.dtype)
        if not bool(value.isfinite().all()):
            raise InputError(f"noise for seed {seed}: it holds NaN or inf values.")
        given.append(value)
    return given


def _digest(tensor: Tensor) -> dict[str, Any]:
    """What a recipe records of a caller's initial latent: its shape and a hash (it cannot be remade)."""
    import hashlib

    data = tensor.detach().to("cpu").contiguous().float().numpy().tobytes()
    return {"shape": list(tensor.shape), "sha256": hashlib.sha256(data).hexdigest()}


def _without(data: dict[str, Any], prompt: str) -> dict[str, Any]:
    """``data`` without a ``prompt`` entry equal to the recipe's own, spaces aside (the prompt is stored once)."""
    return {k: v for k, v in data.items()
            if not (k == "prompt" and isinstance(v, str) and v.strip() == prompt.strip())}


def _seeds_text(seeds: Sequence[int]) -> str:
    return str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}..{seeds[-1]}"


def _tagged(observer: Observer | None, method: str, seeds: Sequence[int]) -> Callback | None:
    if observer is None:
        return None
    label = f"{method} seed {_seeds_text(seeds)}"

    def tagged(info: dict[str, Any]) -> None:
        observer({**info, "method": method, "seeds": list(seeds), "label": label})

    return tagged
