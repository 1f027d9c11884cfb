"""Hook specifications (project ``w2sd``, entry-point group ``w2sd``).

Every hook hands the plugin a ``register`` callback; the host owns clashes and error isolation. Hooks run
built-ins first, then plugins sorted by name; a name that clashes with a built-in (or another plugin's) is
reported and reachable only as ``plugin:name`` (see ``w2sd_cli.registries``). Use a plain ``@hookimpl``:
``wrapper``, ``hookwrapper``, ``tryfirst`` and ``trylast`` are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("w2sd")
hookimpl = pluggy.HookimplMarker("w2sd")


@hookspec
def register_pairs(register: Callable[[Any], None]) -> None:
    """Register pair cards: call ``register(card)`` with a ``PairCard``, a card mapping, or a YAML path."""


@hookspec
def register_pair_kinds(register: Callable[[Any], None]) -> None:
    """Register pair kinds: call ``register(kind)`` with a ``PairKind`` instance."""


@hookspec
def register_commands(app: Any) -> None:
    """Add commands to the ``w2sd`` Typer app."""


@hookspec
def register_metrics(register: Callable[[Any], None]) -> None:
    """Register metrics for `w2sd bench` / `w2sd eval`: call ``register(metric)``."""


@hookspec
def register_executors(register: Callable[[Any], None]) -> None:
    """Register bench executors (how work items are spread over processes or machines)."""


@hookspec
def register_methods(register: Callable[[Any], None]) -> None:
    """Register sampling methods: call ``register(method)`` with a ``w2sd_cli.plugin.Method``."""
