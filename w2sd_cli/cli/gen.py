"""`w2sd gen`: sample a pair (W2SD, and with --compare its weak and strong sides too) and write the outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from w2sd_cli.cli.complete import pair_names
from w2sd_cli.cli.options import Device, JsonFlag, Lambda, Offline, Out, Seed, Steps


def register(app: typer.Typer) -> None:
    app.command("gen")(gen)


def gen(
    prompt: Annotated[str | None, typer.Argument(help="What to generate (a class name for class pairs).")] = None,
    pair: Annotated[str | None, typer.Option("--pair", "-p", help="Pair name or alias (default: shapes).",
                                             autocompletion=pair_names)] = None,
    seed: Seed = None,
    steps: Steps = None,
    lam: Lambda = None,
    rounds: Annotated[int | None, typer.Option("--rounds", min=1, max=10, help="Reflections per step.")] = None,
    out: Out = Path("w2sd-out"),
    device: Device = "auto",
    dtype: Annotated[str | None, typer.Option("--dtype", help="float32, float16 or bfloat16.")] = None,
    num_images: Annotated[int, typer.Option("--num-images", "-n", min=1, help="Images (seed, seed+1, ...).")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Seeds per network call.")] = 1,
    compare: Annotated[bool, typer.Option("--compare", help="Also weak and strong, same seed, in a panel.")] = False,
    methods: Annotated[str | None, typer.Option(
        "--methods", help="Comma list of methods instead (weak, strong, w2sd, first-order, extrapolate, "
        "equal-nfe, or a plugin's).")] = None,
    width: Annotated[int | None, typer.Option("--width", min=8)] = None,
    height: Annotated[int | None, typer.Option("--height", min=8)] = None,
    cfg: Annotated[float | None, typer.Option("--cfg", help="Final denoise CFG scale (0 to 100).")] = None,
    k: Annotated[float | None, typer.Option("--k", help="Weight of the first-order/extrapolate controls.")] = None,
    strong_prompt: Annotated[str | None, typer.Option("--strong-prompt", help="Prompt pairs: refined prompt.")] = None,
    negative_prompt: Annotated[str | None, typer.Option("--negative-prompt")] = None,
    control_image: Annotated[Path | None, typer.Option("--control-image", help="Pipeline pairs: edge map or photo.")]
    = None,
    class_label: Annotated[int | None, typer.Option("--class", min=0, help="Class-conditional pairs.")] = None,
    samples: Annotated[int | None, typer.Option("--samples", min=1, help="Analytic pairs: sample count.")] = None,
    reference_interval: Annotated[bool, typer.Option(
        "--reference-interval", help="Reproduce the reference code's off-by-one inversion interval.")] = False,
    offline: Offline = False,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Allow pickle checkpoints.")] = False,
    offload: Annotated[bool, typer.Option("--offload", help="Small GPUs: keep idle models on the CPU.")] = False,
    from_image: Annotated[Path | None, typer.Option(
        "--from-image", help="Make a PNG written by w2sd again from the recipe it carries (same method).")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Generate with a pair: W2SD sampling, plus the weak and strong baselines with --compare."""
    from w2sd_cli.api import load_pair
    from w2sd_cli.cli.output import err_console, print_json, warn
    from w2sd_cli.cli.progress import DownloadProgress, PhaseProgress
    from w2sd_cli.kinds.base import LoadSettings
    from w2sd_cli.outputs import check_out

    knobs: dict[str, Any] = dict(steps=steps, lam=lam, rounds=rounds, k=k, cfg=cfg, width=width, height=height,
                                 samples=samples, reference_interval=reference_interval,
                                 strong_prompt=strong_prompt, negative_prompt=negative_prompt,
                                 control_image=control_image, class_label=class_label)
    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    expected_digest = None
    if from_image is not None:
        pair, prompt, seed, chosen, knobs, expected_digest = _from_image(from_image)
        num_images = 1
    check_out(out)  # a read-only, full or misnamed --out is reported before any model loads
    _check_before_loading(pair, prompt, seed, num_images, batch_size, chosen, knobs,
                          LoadSettings(device=device, dtype=dtype, offload=offload))
    with DownloadProgress(quiet=json_output) as downloads:
        loaded = load_pair(pair, device=device, dtype=dtype, offline=offline or None, allow_pickle=allow_pickle,
                           offload=offload, observer=downloads.observe)
    if expected_digest is not None and expected_digest != loaded.card.digest():
        warn(f"pair {loaded.name!r} has changed since {from_image} was made (card digest differs); "
             "the result may differ.")
    if chosen is None:
        chosen = list(loaded.kind.compare_methods if compare else loaded.kind.gen_methods)
    first = seed if seed is not None else loaded.card.defaults.seed
    with PhaseProgress(quiet=json_output) as progress:
        made = loaded.compare(prompt, seeds=range(first, first + num_images), methods=chosen, batch_size=batch_size,
                              observer=progress.observe, **knobs)
    files = made.save(out)
    summary = made.summary(files)
    if json_output:
        print_json(summary)
        return
    for message in summary["warnings"]:
        warn(message)
    _render_summary(summary)
    for path in files:
        err_console.print(f"wrote {path}", markup=False)


def _check_before_loading(pair: str | None, prompt: str | None, seed: int | None, count: int, batch_size: int,
                          methods: list[str] | None, knobs: dict[str, Any], load: Any) -> None:
    """Every knob, the prompt, the methods and the device checked as ``Pair.generate`` checks them, before loading."""
    from w2sd_cli.api import DEFAULT_PAIR, check_generate, make_condition
    from w2sd_cli.pairs import get_registry

    registry = get_registry()
    entry = registry.get(pair or DEFAULT_PAIR)
    kind = registry.kind(entry)
    kind.check(entry.card)
    condition_keys = ("strong_prompt", "negative_prompt", "control_image", "class_label")
    condition = make_condition(prompt, **{key: knobs.get(key) for key in condition_keys})
    first = seed if seed is not None else entry.card.defaults.seed
    settings = {key: value for key, value in knobs.items() if key not in condition_keys}
    check_generate(entry.card, kind, condition, range(first, first + count), batch_size, settings,
                   methods=methods or [], load=load)


def _from_image(path: Path) -> tuple[str, str, int, list[str], dict[str, Any], str | None]:
    """The pair, prompt, seed, method(s) and knobs a w2sd PNG was made with."""
    from w2sd_cli.errors import InputError
    from w2sd_cli.images import read_recipe

    recipe = read_recipe(path)
    try:
        condition, settings = dict(recipe["condition"]), dict(recipe["settings"])
        pair, seed, method = str(recipe.get("pair_id") or recipe["pair"]), int(recipe["seed"]), str(recipe["method"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: its recipe is from an older w2sd and lacks the condition or settings; "
                         "make the image again with `w2sd gen`.") from None
    methods = [str(m) for m in recipe.get("panel") or [method]]
    knobs = {key: settings.get(key) for key in ("steps", "lam", "rounds", "k", "cfg", "width", "height", "samples")}
    knobs.update(reference_interval=bool(settings.get("reference_interval")),
                 strong_prompt=condition.get("strong_prompt"), negative_prompt=condition.get("negative_prompt"),
                 control_image=condition.get("control_image"), class_label=condition.get("class_label"))
    digest = recipe.get("card_digest")
    prompt = recipe.get("prompt", condition.get("prompt"))  # the prompt is stored once, at the top
    return pair, str(prompt or ""), seed, methods, knobs, digest if isinstance(digest, str) else None


def _render_summary(summary: dict[str, Any]) -> None:
    from w2sd_cli.cli.output import err_console, table

    methods = summary["methods"]
    keys: list[str] = []
    for stats in methods.values():
        keys += [k for k in stats if k not in keys]
    rows = [[name, *(stats.get(k) for k in keys)] for name, stats in methods.items()]
    title = f"pair {summary['pair']}, seed {summary['seed']}" + (f": {summary['prompt']}" if summary["prompt"] else "")
    err_console.print(table(title, ["method", *keys], rows))
