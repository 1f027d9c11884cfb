"""The Python API: load a pair once, generate as often as you like.

    >>> import w2sd_cli
    >>> pair = w2sd_cli.load_pair("shapes")
    >>> [sample] = pair.generate("a blue square at the top", seeds=[0])
    >>> sample.image.save("square.png"); sample.nfe
    73

Everything goes through the same engine as `w2sd gen` and `w2sd bench`, so a sample's recipe reproduces it
on the command line (``w2sd gen --from-image``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from w2sd_cli.cards import PairCard
from w2sd_cli.engine import Engine, Observer, Sample, open_engine
from w2sd_cli.kinds.base import Condition, LoadSettings, PairKind, Settings

if TYPE_CHECKING:
    from torch import Tensor

    from w2sd_cli.pairs import PairRegistry

DEFAULT_PAIR = "shapes"


@dataclass
class Comparison:
    """Several methods from the same seeds: ``samples[method]`` is one ``Sample`` per seed."""

    samples: dict[str, list[Sample]]
    seeds: list[int]
    reference: dict[int, Sample] = field(default_factory=dict)

    def panel(self, seed: int | None = None) -> Any:
        """A side-by-side picture of every method for one seed (images, or sample-set plots)."""
        from w2sd_cli.outputs import panel

        seed = self.seeds[0] if seed is None else seed
        shown = [(m, rows[self.seeds.index(seed)].output) for m, rows in self.samples.items()]
        if seed in self.reference:
            shown.append(("ideal", self.reference[seed].output))
        first = next(iter(self.samples.values()))[0]
        return panel(first.kind, shown, f"{first.recipe['pair']} seed {seed}")

    def save(self, out: str | Path) -> list[Path]:
        """Write every image, and a panel per seed when several methods were sampled (sample sets: the panel).

        ``out`` is a folder, or a ``.png`` path for the first output (the rest add suffixes to its stem);
        see ``w2sd_cli.outputs.OutputNames``. Every PNG carries its recipe.
        """
        from w2sd_cli.images import save_png
        from w2sd_cli.outputs import OutputNames

        methods = list(self.samples)
        first = self.samples[methods[0]]
        main = "w2sd" if "w2sd" in self.samples else methods[0]
        kind = first[0].kind
        named = main if Path(out).suffix.lower() in (".png", ".npy") else "w2sd"  # the file OUT names
        names = OutputNames(Path(out), str(first[0].recipe["pair"]), "compare" if kind == "samples" else named,
                            first[0].seed)
        planned: list[tuple[Path, str]] = []
        for index, seed in enumerate(self.seeds):
            prompt = first[index].condition.prompt
            if kind == "image":
                planned += [(names.path(prompt, seed, m), m) for m in methods]
            if len(methods) > 1 or kind == "samples":
                planned.append((names.path(prompt, seed, "compare"), "compare"))
        for path, method in planned:  # before writing anything
            refuse_overwrite(path, method)
        files: list[Path] = []
        for index, seed in enumerate(self.seeds):
            prompt = first[index].condition.prompt
            if kind == "image":
                files += [self.samples[m][index].save(names.path(prompt, seed, m)) for m in methods]
            if len(methods) > 1 or kind == "samples":
                recipe = {**self.samples[main][index].recipe, "panel": methods}
                files.append(save_png(self.panel(seed), names.path(prompt, seed, "compare"), recipe))
        return files

    def summary(self, files: Sequence[Path] = ()) -> dict[str, Any]:
        """A JSON-able summary: the first seed's figures per method, every output, warnings, ``files``."""
        first = next(iter(self.samples.values()))[0]
        rows: dict[str, dict[str, Any]] = {}
        for method, samples in self.samples.items():
            s = samples[0]
            rows[method] = {"nfe": s.nfe, "cost": s.cost, "seconds": s.seconds, **_flat(s.verdicts)}
            if s.same_as:
                rows[method]["same_as"] = s.same_as
        if first.seed in self.reference:
            rows["ideal"] = {"nfe": 0, **_flat(self.reference[first.seed].verdicts)}
        warnings = list(dict.fromkeys(w for samples in self.samples.values() for s in samples for w in s.warnings))
        main = (self.samples.get("w2sd") or next(iter(self.samples.values())))[0]
        recipe = first.recipe
        return {"pair": recipe["pair"], "kind": recipe["kind"], "card_digest": recipe["card_digest"],
                "prompt": first.condition.prompt, "seed": first.seed, "steps": recipe["settings"]["steps"],
                "lam": recipe["settings"]["lam"], "device": recipe["provenance"].get("device"), "methods": rows,
                "verdicts": main.verdicts,
                "images": [{"seed": s.seed, "method": s.method, "nfe": s.nfe, "cost": s.cost, "seconds": s.seconds,
                            "verdicts": s.verdicts, **({"same_as": s.same_as} if s.same_as else {})}
                           for samples in self.samples.values() for s in samples],
                "warnings": warnings, "files": [str(f) for f in files]}


def _flat(verdicts: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Metric rows side by side (``metric.key``; a single metric's keys stay bare), at full precision (tables
    round when they print)."""
    if len(verdicts) == 1:
        return dict(next(iter(verdicts.values())))
    return {f"{m}.{k}": v for m, row in verdicts.items() for k, v in row.items()}


def refuse_overwrite(path: Path, method: str) -> None:
    """Refuse to replace a w2sd output that another method made (its recipe says which); others are replaced."""
    if not path.is_file() or path.suffix.lower() != ".png":
        return
    from w2sd_cli.errors import InputError, W2SDError
    from w2sd_cli.images import read_recipe

    try:
        recipe = read_recipe(path)
    except W2SDError:
        return
    made = "compare" if recipe.get("panel") else recipe.get("method")
    if made is not None and made != method:
        raise InputError(f"{path} holds the {made} output of an earlier run; writing {method} there would replace "
                         "it. Give another --out (a folder names every file by its method).")


class Pair:
    """A pair with its models loaded once; ``generate`` and ``compare`` reuse them.

    Make one with ``load_pair(name)`` or ``from_pipelines(strong, weak)``.
    """

    def __init__(self, card: PairCard, kind: PairKind, engine: Engine) -> None:
        self.card, self.kind, self.engine = card, kind, engine

    @property
    def name(self) -> str:
        return self.card.name

    def settings(self, *, steps: int | None = None, lam: int | None = None, rounds: int | None = None,
                 k: float | None = None, cfg: float | None = None, width: int | None = None,
                 height: int | None = None, samples: int | None = None,
                 reference_interval: bool = False) -> Settings:
        """Sampler settings: the card's defaults where an argument is ``None`` (checked: finite, in range).

        Raises:
            InputError: a knob that is not a number of its type, not finite or out of range.
        """
        return Settings.resolve(self.card, steps=steps, lam=lam, rounds=rounds, k=k, cfg=cfg, width=width,
                                height=height, samples=samples, reference_interval=reference_interval)

    def generate(self, prompt: str | None = None, *, seeds: Sequence[int] = (0,), method: str = "w2sd",
                 steps: int | None = None, lam: int | None = None, rounds: int | None = None, k: float | None = None,
                 cfg: float | None = None, width: int | None = None, height: int | None = None,
                 samples: int | None = None, reference_interval: bool = False, strong_prompt: str | None = None,
                 negative_prompt: str | None = None, control_image: str | Path | None = None,
                 class_label: int | None = None, batch_size: int = 1, noise: Sequence[Tensor] | None = None,
                 observer: Observer | None = None) -> list[Sample]:
        """Sample one method from each seed.

        Args:
            prompt: the prompt (text pairs), a class name (class-conditional pairs), or ``None`` (analytic pairs).
            seeds: one output per seed; each depends only on its seed.
            method: ``w2sd``, ``strong``, ``weak``, ``first-order``, ``extrapolate``, ``equal-nfe`` or a plugin's.
            steps, lam, rounds, k, cfg, width, height, samples, reference_interval: sampler knobs (``None``: the
                card's default; see `w2sd gen --help`).
            strong_prompt, negative_prompt, control_image, class_label: the rest of the condition.
            batch_size: seeds per network call.
            noise: one initial latent per seed instead of the seed's own draw (oracles, img2img-style starts),
                each shaped like the pair's (``pair.noise(seed)``); the recipe records its shape and sha256.
            observer: progress callback (a dict per sampler phase).

        Returns:
            One ``Sample`` per seed (``.image`` or ``.samples``, ``.nfe``, ``.cost``, ``.seconds``, ``.recipe``).

        Raises:
            InputError: a knob out of range or not finite, a negative seed, ``batch_size < 1``, an empty or
                over-long prompt (``w2sd_cli.validate.MAX_PROMPT_CHARS``), or an option the pair does not use;
                all before anything is sampled.
        """
        condition = self.condition(prompt, strong_prompt=strong_prompt, negative_prompt=negative_prompt,
                                   control_image=control_image, class_label=class_label)
        knobs = {"steps": steps, "lam": lam, "rounds": rounds, "k": k, "cfg": cfg, "width": width,
                 "height": height, "samples": samples, "reference_interval": reference_interval}
        seeds, batch_size, settings = check_generate(self.card, self.kind, condition, seeds, batch_size, knobs,
                                                     methods=[method])
        latents = list(noise) if noise is not None else None
        if latents is not None and len(latents) != len(seeds):
            from w2sd_cli.errors import InputError

            raise InputError(f"noise: give one initial latent per seed ({len(seeds)}), not {len(latents)}.")
        out: list[Sample] = []
        for start in range(0, len(seeds), batch_size):
            chunk = slice(start, start + batch_size)
            out += self.engine.render(condition, seeds[chunk], method, settings=settings, observer=observer,
                                      noise=latents[chunk] if latents is not None else None)
        return out

    def noise(self, seed: int, prompt: str | None = None, **condition: Any) -> Tensor:
        """The initial latent the pair draws for ``seed`` (a starting point to edit and pass as ``noise``)."""
        from w2sd_cli.validate import check_seeds

        [seed] = check_seeds([seed])
        return self.engine.prepare(self.condition(prompt, **condition)).noise(seed)

    def compare(self, prompt: str | None = None, *, seeds: Sequence[int] = (0,),
                methods: Sequence[str] | None = None, **knobs: Any) -> Comparison:
        """Several methods from the same seeds (default: the kind's weak | strong | W2SD), plus the truth when
        the pair knows it; ``knobs`` are ``generate``'s keyword arguments."""
        chosen = list(methods or self.kind.compare_methods)
        samples = {m: self.generate(prompt, seeds=seeds, method=m, **knobs) for m in chosen}
        condition = next(iter(samples.values()))[0].condition
        reference = {seed: ref for seed in seeds if (ref := self.engine.reference(condition, seed)) is not None}
        return Comparison(samples, list(seeds), reference)

    def condition(self, prompt: str | None, *, strong_prompt: str | None = None, negative_prompt: str | None = None,
                  control_image: str | Path | None = None, class_label: int | None = None) -> Condition:
        """The condition of one call."""
        return make_condition(prompt, strong_prompt=strong_prompt, negative_prompt=negative_prompt,
                              control_image=control_image, class_label=class_label)


def make_condition(prompt: str | None, *, strong_prompt: str | None = None, negative_prompt: str | None = None,
                   control_image: str | Path | None = None, class_label: int | None = None) -> Condition:
    """The condition of one call (the prompt checked to be text of a bounded length)."""
    from w2sd_cli.validate import check_text

    check_text("the prompt", prompt)
    return Condition(prompt=prompt or "", strong_prompt=strong_prompt, negative_prompt=negative_prompt,
                     control_image=Path(control_image) if control_image is not None else None,
                     class_label=class_label)


def check_generate(card: PairCard, kind: PairKind, condition: Condition, seeds: Sequence[int], batch_size: int,
                   knobs: dict[str, Any], *, methods: Sequence[str] = (), load: LoadSettings | None = None
                   ) -> tuple[list[int], int, Settings]:
    """Every check of a generate call, before anything loads or samples (`w2sd gen` runs it before loading).

    Returns:
        The seeds, the batch size and the resolved settings.

    Raises:
        InputError: see ``Pair.generate``.
    """
    from w2sd_cli.methods import get_method
    from w2sd_cli.validate import check_batch_size, check_request, check_seeds

    listed = check_seeds(seeds)
    size = check_batch_size(batch_size)
    check_request(card, kind, condition, {k: knobs.get(k) for k in ("cfg", "width", "height", "samples")}, load)
    settings = Settings.resolve(card, **knobs)
    for method in methods:
        get_method(method)
    return listed, size, settings


def load_pair(name: str | None = None, *, device: str | None = None, dtype: str | None = None,
              offline: bool | None = None, allow_pickle: bool = False, offload: bool = False,
              observer: Observer | None = None, registry: PairRegistry | None = None) -> Pair:
    """Load a named pair (downloading its models first unless offline).

    Args:
        name: a pair name, alias or ``plugin:name`` (default: the embedded ``shapes`` pair).
        device: ``auto`` (default), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        dtype: ``float32``, ``float16`` or ``bfloat16`` (default: float16 on GPUs, float32 on the CPU).
        offline: never touch the network (default: ``HF_HUB_OFFLINE``).
        allow_pickle: accept pickle checkpoints (loaded with ``weights_only=True``).
        offload: keep idle models on the CPU (CUDA only).
        observer: download progress callback.
        registry: the pair registry (default: the installed plugins' and your cards).

    Returns:
        A ``Pair`` whose models stay loaded.
    """
    from w2sd_cli.pairs import get_registry

    registry = registry or get_registry()
    entry = registry.get(name or DEFAULT_PAIR)
    pair = pair_from_card(entry.card, device=device, dtype=dtype, offline=offline, allow_pickle=allow_pickle,
                          offload=offload, observer=observer, kind=registry.kind(entry))
    pair.engine.pair_id = reached_as(registry, entry)
    return pair


def reached_as(registry: PairRegistry, entry: Any) -> str:
    """The name that finds ``entry`` again: its own, or ``plugin:name`` when the plain name means another pair."""
    from w2sd_cli.errors import W2SDError

    try:
        if registry.get(entry.card.name) is entry:
            return str(entry.card.name)
    except W2SDError:
        pass
    return str(entry.qualified_name)


def pair_from_card(card: PairCard, *, device: str | None = None, dtype: str | None = None,
                   offline: bool | None = None, allow_pickle: bool = False, offload: bool = False,
                   observer: Observer | None = None, kind: PairKind | None = None) -> Pair:
    """Load a pair from a card object (one you built or read with ``w2sd_cli.plugin.load_card``).

    Arguments as for ``load_pair``; ``kind`` defaults to the installed kind the card names.
    """
    import os

    from w2sd_cli.pairs import get_registry

    kind = kind or get_registry().kind(card)
    offline = offline if offline is not None else os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    load = LoadSettings(device=device or "auto", dtype=dtype, offline=offline, allow_pickle=allow_pickle,
                        offload=offload)
    from w2sd_cli.validate import check_load

    check_load(card, kind, load)
    engine = open_engine(card, kind, Settings.resolve(card), load, observer=observer)
    return Pair(card, kind, engine)
