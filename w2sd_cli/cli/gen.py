"""`w2sd gen`: sample a pair (W2SD, and with --compare its weak and strong sides too)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from w2sd_cli.cli.complete import pair_names
from w2sd_cli.cli.options import Device, JsonFlag, Lambda, Offline, Out, Seed, Steps


def register(app: typer.Typer) -> None:
    app.command("gen")(gen)


def gen(
    prompt: Annotated[str | None, typer.Argument(help="What to generate (image pairs).")] = None,
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
    compare: Annotated[bool, typer.Option("--compare", help="Also weak and strong, same seed, in a panel.")] = False,
    width: Annotated[int | None, typer.Option("--width", min=8)] = None,
    height: Annotated[int | None, typer.Option("--height", min=8)] = None,
    cfg: Annotated[float | None, typer.Option("--cfg", min=0.0, help="Final denoise CFG scale.")] = None,
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
        "--from-image", help="Reproduce a PNG written by w2sd gen from the recipe it carries.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Generate with a pair: W2SD sampling, plus the weak and strong baselines with --compare."""
    from w2sd_cli.cli.output import err_console, print_json
    from w2sd_cli.cli.progress import PhaseProgress
    from w2sd_cli.generate import DEFAULT_PAIR, generate
    from w2sd_cli.kinds.base import GenRequest

    extra: dict[str, Any] = {}
    if class_label is not None:
        extra["class_label"] = class_label
    if offload:
        extra["offload"] = True
    request = GenRequest(
        prompt=prompt, seed=seed, steps=steps, lam=lam, rounds=rounds, out=out, device=device, dtype=dtype,
        num_images=num_images, compare=compare, width=width, height=height, cfg=cfg, strong_prompt=strong_prompt,
        negative_prompt=negative_prompt, control_image=control_image, reference_interval=reference_interval,
        offline=offline, allow_pickle=allow_pickle, samples=samples, extra=extra,
    )
    expected_digest = None
    if from_image is not None:
        pair, request, expected_digest = _from_image(from_image, request)
    with PhaseProgress(quiet=json_output) as progress:
        entry, result = generate(pair or DEFAULT_PAIR, request, progress.observe)
    if expected_digest is not None and expected_digest != entry.card.digest():
        err_console.print(f"[yellow]warning:[/yellow] pair {entry.card.name!r} has changed since {from_image} was "
                          "made (card digest differs); the result may differ.", markup=True)
    if json_output:
        print_json({**result.summary, "files": [str(f) for f in result.files]})
        return
    _render_summary(result.summary)
    for path in result.files:
        err_console.print(f"wrote {path}")
    del entry


def _from_image(path: Path, request: Any) -> tuple[str, Any, str | None]:
    """The pair and request a w2sd PNG was made with; output, device and offline flags stay the user's."""
    from w2sd_cli.images import read_recipe, request_from_recipe

    recipe = read_recipe(path)
    pair, replay = request_from_recipe(recipe, out=request.out, device=request.device, offline=request.offline,
                                       allow_pickle=request.allow_pickle)
    digest = recipe.get("card_digest")
    return pair, replay, digest if isinstance(digest, str) else None


def _render_summary(summary: dict[str, Any]) -> None:
    from w2sd_cli.cli.output import err_console, table

    methods = summary.get("methods")
    if isinstance(methods, dict) and methods:
        keys: list[str] = []
        for stats in methods.values():
            keys += [k for k in stats if k not in keys]
        rows = [[name, *(stats.get(k) for k in keys)] for name, stats in methods.items()]
        err_console.print(table(f"pair {summary.get('pair')}", ["method", *keys], rows))
    scalars = [[k, v] for k, v in summary.items() if k != "methods" and not isinstance(v, dict | list)]
    if scalars:
        err_console.print(table(None, ["", "value"], scalars))
