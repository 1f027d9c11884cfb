"""Every knob a caller gives, checked before anything loads: the CLI and the Python API call the same functions.

Numbers must be finite and in range, seeds non-negative, prompts non-empty where the pair reads one and at most
``MAX_PROMPT_CHARS`` long, and options the pair's kind does not read are refused (``PairKind.takes``) rather than
silently ignored and recorded. Import-light: no torch, no pydantic models beyond the card.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

from w2sd_cli.errors import InputError

if TYPE_CHECKING:
    from w2sd_cli.cards import PairCard
    from w2sd_cli.kinds.base import Condition, LoadSettings, PairKind

MAX_PROMPT_CHARS = 10_000
"""The longest prompt (and strong or negative prompt) accepted, in characters."""
MAX_SEED = 2**63 - 1
MAX_STEPS = 1000
MAX_ROUNDS = 10
MAX_CFG = 100.0
MAX_SIDE = 16384
MAX_SAMPLES = 10_000_000
MAX_BATCH = 4096
DTYPES = ("float32", "float16", "bfloat16")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

FLAGS = {"strong_prompt": "--strong-prompt", "negative_prompt": "--negative-prompt",
         "control_image": "--control-image", "class_label": "--class", "cfg": "--cfg", "width": "--width",
         "height": "--height", "samples": "--samples", "device": "--device", "dtype": "--dtype",
         "offload": "--offload"}
"""Knobs a kind may not read (``PairKind.takes`` names a subset), with the flag that sets each."""
ON_CPU = ("auto", "cpu")


def integer(flag: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``, or an ``InputError`` naming ``flag``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InputError(f"{flag} {value!r}: give a whole number from {low} to {high}.")
    if not low <= int(value) <= high:
        raise InputError(f"{flag} {value}: give a whole number from {low} to {high}.")
    return int(value)


def number(flag: str, value: Any, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a finite float in ``[low, high]``, or an ``InputError`` naming ``flag``."""
    span = _span(low, high)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InputError(f"{flag} {value!r}: give a finite number{span}.")
    result = float(value)
    if not math.isfinite(result):
        raise InputError(f"{flag} {value}: give a finite number{span} (not nan or inf).")
    if not low <= result <= high:
        raise InputError(f"{flag} {value:g}: give a finite number{span}.")
    return result


def _span(low: float, high: float) -> str:
    if math.isfinite(low) and math.isfinite(high):
        return f" from {low:g} to {high:g}"
    if math.isfinite(low):
        return f" of at least {low:g}"
    return f" of at most {high:g}" if math.isfinite(high) else ""


def check_knobs(*, steps: Any = None, lam: Any = None, rounds: Any = None, k: Any = None, cfg: Any = None,
                width: Any = None, height: Any = None, samples: Any = None, reference_interval: Any = False
                ) -> dict[str, Any]:
    """The sampler knobs a caller gave (``None``: the card's default), checked and normalised.

    Raises:
        InputError: a knob is not a number of its type, not finite, or out of range (``--lambda`` against
            ``--steps`` is checked once both are resolved: ``Settings.resolve``).
    """
    given = {"steps": (steps, 1, MAX_STEPS), "lam": (lam, 0, MAX_STEPS), "rounds": (rounds, 1, MAX_ROUNDS),
             "width": (width, 1, MAX_SIDE), "height": (height, 1, MAX_SIDE), "samples": (samples, 1, MAX_SAMPLES)}
    out: dict[str, Any] = {key: None if value is None else integer(_flag(key), value, low, high)
                           for key, (value, low, high) in given.items()}
    out["k"] = None if k is None else number("--k", k, -MAX_CFG, MAX_CFG)
    out["cfg"] = None if cfg is None else number("--cfg", cfg, 0.0, MAX_CFG)
    if not isinstance(reference_interval, bool):
        raise InputError(f"--reference-interval {reference_interval!r}: give True or False.")
    out["reference_interval"] = reference_interval
    return out


def _flag(key: str) -> str:
    return "--lambda" if key == "lam" else f"--{key}"


def check_text(flag: str, value: Any) -> str | None:
    """A prompt-like text: a string of at most ``MAX_PROMPT_CHARS`` characters (``None`` passes)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{flag}: give text, not {type(value).__name__}.")
    if len(value) > MAX_PROMPT_CHARS:
        raise InputError(f"{flag} is {len(value):,} characters long; w2sd takes at most {MAX_PROMPT_CHARS:,} "
                         "(models read far fewer tokens: CLIP 77, T5 256 or 512). Shorten it.")
    return value


def check_condition(card: PairCard, kind: PairKind, condition: Condition) -> None:
    """Refuse a condition the pair cannot use: an empty prompt for a text pair, a prompt that is too long, a
    negative class, a control image that is not a file."""
    for flag, value in (("the prompt", condition.prompt), ("--strong-prompt", condition.strong_prompt),
                        ("--negative-prompt", condition.negative_prompt)):
        check_text(flag, value)
    if condition.class_label is not None:
        integer("--class", condition.class_label, 0, 2**31 - 1)
    if condition.control_image is not None and not Path(condition.control_image).expanduser().is_file():
        raise InputError(f"--control-image {condition.control_image}: no such file.")
    if kind.conditioning == "text" and not condition.prompt.strip():
        raise InputError(f"Pair {card.name} is text-to-image: give a prompt, e.g. w2sd gen --pair {card.name} "
                         "\"a photo of a cat\".")
    if kind.conditioning == "class" and condition.class_label is None and not condition.prompt.strip():
        raise InputError(f"Pair {card.name} is class-conditional: give a class name as the prompt (e.g. "
                         "\"golden retriever\") or a class number with --class 207.")


def check_seeds(seeds: Iterable[Any]) -> list[int]:
    """Seeds as a list of ints in ``0 .. 2**63 - 1`` (at least one)."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise InputError(f"seeds {seeds!r}: give a list of whole numbers, e.g. seeds=[0, 1].")
    listed = [integer("seed", s, 0, MAX_SEED) for s in seeds]
    if not listed:
        raise InputError("seeds is empty: give at least one seed, e.g. seeds=[0].")
    return listed


def check_batch_size(batch_size: Any) -> int:
    """Seeds per network call: a whole number from 1 to ``MAX_BATCH``."""
    return integer("--batch-size", batch_size, 1, MAX_BATCH)


def check_load(card: PairCard, kind: PairKind, load: LoadSettings) -> None:
    """Refuse a device or dtype w2sd does not know, or one the pair's kind cannot use (before anything loads)."""
    if not isinstance(load.device, str) or DEVICE.fullmatch(load.device) is None:
        raise InputError(f"--device {load.device!r}: use auto, cpu, cuda, cuda:N or mps.")
    if load.dtype is not None and load.dtype not in DTYPES:
        raise InputError(f"--dtype {load.dtype!r}: use {', '.join(DTYPES)}.")
    unused = []
    if load.device not in ON_CPU and not kind_takes(kind, "device"):
        unused.append("device")
    if load.dtype is not None and not kind_takes(kind, "dtype"):
        unused.append("dtype")
    if load.offload and not kind_takes(kind, "offload"):
        unused.append("offload")
    if unused:
        refuse_unused(card, kind, unused)


def kind_takes(kind: PairKind, knob: str) -> bool:
    """Whether ``kind`` reads ``knob`` (a key of ``FLAGS``); a kind that does not say reads them all."""
    takes = getattr(kind, "takes", None)
    return takes is None or knob in takes


def check_unused(card: PairCard, kind: PairKind, given: Mapping[str, Any]) -> None:
    """Refuse knobs the caller set (not ``None``/``False``) that the pair's kind does not read."""
    unused = [key for key, value in given.items()
              if key in FLAGS and value not in (None, False, "") and not kind_takes(kind, key)]
    if unused:
        refuse_unused(card, kind, unused)


def refuse_unused(card: PairCard, kind: PairKind, unused: Sequence[str]) -> None:
    """The one error for options a pair ignores: what was given, and what the pair reads instead."""
    takes = sorted(FLAGS[k] for k in FLAGS if kind_takes(kind, k))
    cpu = "" if kind_takes(kind, "device") else " It runs on the CPU only (--device auto or cpu)."
    given = ", ".join(FLAGS[k] for k in unused)
    reads = ", ".join(takes) if takes else "none of them"
    raise InputError(f"Pair {card.name} (kind {kind.name}) does not use {given}: drop it. Of the pair-specific "
                     f"options it reads {reads}, besides --steps, --lambda, --rounds, --k and --seed.{cpu}")


def check_request(card: PairCard, kind: PairKind, condition: Condition | None, knobs: Mapping[str, Any],
                  load: LoadSettings | None = None) -> None:
    """Everything `w2sd gen`, `w2sd bench` and ``Pair.generate`` check before sampling: unused options, the
    condition and the load settings (the sampler knobs are checked by ``Settings.resolve``)."""
    given = dict(knobs)
    if condition is not None:
        if kind.conditioning == "none" and condition.prompt.strip():
            raise InputError(f"Pair {card.name} (kind {kind.name}) takes no prompt: it is not conditioned on "
                             "anything; drop the prompt.")
        given.update(strong_prompt=condition.strong_prompt, negative_prompt=condition.negative_prompt,
                     control_image=condition.control_image, class_label=condition.class_label)
    check_unused(card, kind, given)
    if condition is not None:
        check_condition(card, kind, condition)
    if load is not None:
        check_load(card, kind, load)
