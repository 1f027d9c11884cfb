"""The sampling methods every comparison needs, in one table: W2SD, its two baselines and its controls.

A method is a function of (prepared pair, initial noise, settings, callback). Plugins add rows through the
``register_methods`` hook; a plugin method never replaces a built-in (see ``w2sd_cli.registry``).
Imports torch only when a method runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from w2sd_cli.errors import InputError, suggest

if TYPE_CHECKING:
    from torch import Tensor

    from w2sd_cli.kinds.base import PreparedPair, Settings
    from w2sd_cli.registries import NamedRegistry
    from w2sd_cli.sampling import Callback, SampleResult

Runner = Callable[["PreparedPair", "Tensor", "Settings", "Callback | None"], "SampleResult"]


@dataclass(frozen=True)
class Method:
    """One row of the method table.

    Attributes:
        name: what ``--methods`` and recipes call it.
        summary: one line for help texts and reports.
        run: ``run(prepared, x, settings, callback) -> SampleResult``, through ``w2sd_cli.sampling`` only.
        same_as: ``same_as(prepared, settings)``: for that prepared pair at those settings, the name of another
            method this one then equals exactly (rendered once, reported as such), or ``None``.
    """

    name: str
    summary: str
    run: Runner
    same_as: Callable[[PreparedPair, Settings], str | None] | None = None


def _weak(p: PreparedPair, x: Tensor, s: Settings, cb: Callback | None) -> SampleResult:
    from w2sd_cli.sampling import sample_plain

    return sample_plain(p.weak_plain, x, p.schedule, p.grid, callback=cb)


def _strong(p: PreparedPair, x: Tensor, s: Settings, cb: Callback | None) -> SampleResult:
    from w2sd_cli.sampling import sample_plain

    return sample_plain(p.final, x, p.schedule, p.grid, callback=cb)


def _w2sd(p: PreparedPair, x: Tensor, s: Settings, cb: Callback | None) -> SampleResult:
    from w2sd_cli.sampling import sample_w2sd

    return sample_w2sd(p.strong, p.weak, p.final, x, p.schedule, p.grid, lam=s.lam, rounds=s.rounds,
                       reference_interval=s.reference_interval, callback=cb)


def _first_order(p: PreparedPair, x: Tensor, s: Settings, cb: Callback | None) -> SampleResult:
    from w2sd_cli.sampling import extrapolate, sample_plain

    return sample_plain(extrapolate(p.strong, p.weak, s.k, base=p.final), x, p.schedule, p.grid, callback=cb)


def _extrapolate(p: PreparedPair, x: Tensor, s: Settings, cb: Callback | None) -> SampleResult:
    from w2sd_cli.sampling import extrapolate, sample_plain

    return sample_plain(extrapolate(p.final, p.weak_plain, s.k), x, p.schedule, p.grid, callback=cb)


def _equal_nfe(p: PreparedPair, x: Tensor, s: Settings, cb: Callback | None) -> SampleResult:
    from w2sd_cli.sampling import equal_nfe_steps, sample_plain

    steps = equal_nfe_steps(len(p.grid) - 1, s.lam, s.rounds)
    return sample_plain(p.final, x, p.schedule, p.make_grid(steps), callback=cb)


def _first_order_is_extrapolate(p: PreparedPair, s: Settings) -> str | None:
    """With reflection sides equal to the final ones, eps_f + k(eps_s - eps_w) is the extrapolation control."""
    return "extrapolate" if (p.strong is p.final and p.weak is p.weak_plain) else None


BUILTIN: dict[str, Method] = {m.name: m for m in (
    Method("weak", "plain sampling with the weak model at the final side's knobs", _weak),
    Method("strong", "plain sampling with the final (strong) side: the baseline W2SD must beat", _strong),
    Method("w2sd", "weak-to-strong diffusion with reflection (paper Algorithm 1)", _w2sd),
    Method("first-order", "eps_final + k (eps_strong - eps_weak) at one point per step: what W2SD equals to "
           "first order (a guidance pair: CFG at w_f + k (w_s - w_w))", _first_order, _first_order_is_extrapolate),
    Method("extrapolate", "eps_final + k (eps_final - eps_weak_plain): autoguidance at w = 1 + k", _extrapolate),
    Method("equal-nfe", "plain strong sampling with as many network evaluations as W2SD (T + 2 λ r steps)",
           _equal_nfe),
)}
METHODS = tuple(BUILTIN)
"""Built-in method names, in display order."""


def all_methods() -> NamedRegistry[Method]:
    """Built-in methods, then every plugin's (``register_methods``); a clashing plugin name is ``plugin:name``."""
    from w2sd_cli.plugins import method_registry

    return method_registry(builtins=BUILTIN.values())


def get_method(name: str) -> Method:
    """The method called ``name`` (or ``plugin:name``), or an ``InputError`` listing the known ones."""
    if name in BUILTIN:
        return BUILTIN[name]
    table = all_methods()
    if name not in table:
        raise InputError(f"Unknown method {name!r}.{suggest(name, table)} Choose from {', '.join(table)}.")
    method = table.get(name)
    if not callable(getattr(method, "run", None)):
        raise InputError(f"Method {name!r} (from a plugin) has no run(prepared, x, settings, callback); "
                         "fix or uninstall that plugin.")
    return method
