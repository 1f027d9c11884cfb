"""ImageNet-1k class names, so class-conditional pairs can take "golden retriever" as the prompt.

The table lives in ``registry/imagenet-classes.txt`` (one class per line, synonyms comma-separated).
A name matches case-insensitively, ignoring extra spaces and ``_``; a class's first name wins over
another class's synonym, and a name two classes share as their first name is reported as ambiguous.
"""

from __future__ import annotations

import functools
import re

from w2sd_cli.errors import InputError, suggest
from w2sd_cli.paths import registry_dir

NUM_CLASSES = 1000
TABLE = "imagenet-classes.txt"


@functools.cache
def class_names() -> tuple[tuple[str, ...], ...]:
    """Every class's names (first = the usual one), indexed by label."""
    path = registry_dir() / TABLE
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    rows = tuple(tuple(n.strip() for n in line.split(",")) for line in lines if line and not line.startswith("#"))
    if len(rows) != NUM_CLASSES:
        raise RuntimeError(f"{path}: expected {NUM_CLASSES} classes, found {len(rows)}")
    return rows


def class_name(label: int) -> str:
    """The usual name of a class label."""
    return class_names()[label][0]


def normalize(name: str) -> str:
    """The form names are compared in: case-folded, ``_`` as space, single spaces."""
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip().casefold()


@functools.cache
def _index() -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Normalized first names and all names, each to the labels that use them."""
    first: dict[str, list[int]] = {}
    every: dict[str, list[int]] = {}
    for label, names in enumerate(class_names()):
        first.setdefault(normalize(names[0]), []).append(label)
        for name in names:
            labels = every.setdefault(normalize(name), [])
            if label not in labels:
                labels.append(label)
    return first, every


def lookup(text: str, num_classes: int = NUM_CLASSES) -> int:
    """The class label a user means: a number (``"207"``) or a name (``"Golden Retriever"``).

    Raises:
        InputError: unknown or ambiguous names, out-of-range numbers; the text suggests close names.
    """
    key = normalize(text)
    if re.fullmatch(r"\d+", key):
        label = int(key)
        if label >= num_classes:
            raise InputError(f"Class {label} is out of range: this model knows classes 0..{num_classes - 1}.")
        return label
    first, every = _index()
    labels = first.get(key) or every.get(key)
    if not labels:
        raise InputError(
            f"No ImageNet class called {text!r}.{suggest(key, every)} Give a class name "
            f"(e.g. 'golden retriever') or a number 0..{num_classes - 1} with --class."
        )
    if len(labels) > 1:
        options = "; ".join(f"{label} = {', '.join(class_names()[label])}" for label in labels)
        raise InputError(f"{text!r} names several ImageNet classes ({options}); pass the number with --class.")
    if labels[0] >= num_classes:
        raise InputError(f"Class {text!r} is {labels[0]}, beyond this model's {num_classes} classes.")
    return labels[0]
