"""The sampling methods every comparison needs, in one table: W2SD, its two baselines and its controls.

A method is a function of (prepared pair, initial noise, settings, callback). Plugins add rows through the
``register_methods`` hook; a plugin method never replaces a built-in (see ``w2sd_cli.registry``).
Imports torch only when a method runs.

The rules of the method live here, once, for every kind:

- **The plain weak baseline** (``plain_weak``): the weak side at the final side's guidance knobs, unless that
  is the final side itself (a guidance pair, whose sides differ only in those knobs): then the card's weak side.
- **Coincidence** (``Plan``, ``canonical``): each built-in method says what it computes for a prepared pair and
  settings (which denoisers, on which grid, with which weights). Methods with equal plans give the same output;
  the engine renders the first of them in ``CANONICAL`` order once and copies it to the others, whatever the
  order of ``--methods`` and however many seeds.
- **Each method's grid** (``Plan.grid``) is what its recipe records (the equal-NFE control runs a longer one).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from w2sd_cli.errors import InputError, suggest

if TYPE_CHECKING:
    from torch import Tensor

    from w2sd_cli.kinds.base import PreparedPair, Settings
    from w2sd_cli.registries import NamedRegistry
    from w2sd_cli.sampling import Callback, SampleResult

Runner = Callable[["PreparedPair", "Tensor", "Settings", "Callback | None"], "SampleResult"]


@dataclass(frozen=True)
class Plan:
    """What a method computes for one prepared pair and settings; equal plans give identical outputs.

    Attributes:
        sampler: ``plain``, ``guided`` (``eps_base + k (eps_plus - eps_minus)`` at one point) or ``w2sd``.
        roles: the identities of the denoisers it calls (``PreparedPair.identity``), in the sampler's order.
        grid: the levels it samples on.
        params: the sampler's other numbers (``k``; ``lam``, ``rounds``, the inversion interval).
    """

    sampler: str
    roles: tuple[Hashable, ...]
    grid: tuple[float, ...]
    params: tuple[Any, ...] = ()


def plain(denoiser: Hashable, grid: Sequence[float]) -> Plan:
    return Plan("plain", (denoiser,), tuple(float(t) for t in grid))


def guided(base: Hashable, plus: Hashable, minus: Hashable, k: float, grid: Sequence[float]) -> Plan:
    """``eps_base + k (eps_plus - eps_minus)``: plain ``base`` sampling when ``k = 0`` or ``plus`` is ``minus``."""
    if k == 0.0 or plus == minus:
        return plain(base, grid)
    return Plan("guided", (base, plus, minus), tuple(float(t) for t in grid), (float(k),))


def w2sd(strong: Hashable, weak: Hashable, final: Hashable, grid: Sequence[float], s: Settings) -> Plan:
    """W2SD; with no reflected step it is plain sampling with the final side."""
    if s.lam == 0 or len(grid) < 2:
        return plain(final, grid)
    return Plan("w2sd", (strong, weak, final), tuple(float(t) for t in grid),
                (s.lam, s.rounds, s.reference_interval))


def plain_weak(sides: Mapping[str, Any], knobs: Sequence[str]) -> Any:
    """The plain weak baseline's side: ``weak`` at ``final``'s ``knobs``, unless that equals ``final``.

    Args:
        sides: ``strong``, ``weak`` and ``final`` side specs (frozen dataclasses).
        knobs: the guidance knobs the final side lends (``cfg``; ``guidance`` on distilled models).
    """
    weak, final = sides["weak"], sides["final"]
    at_final = replace(weak, **{k: getattr(final, k) for k in knobs}) if knobs else weak
    return weak if at_final == final else at_final


@dataclass(frozen=True)
class Method:
    """One row of the method table.

    Attributes:
        name: what ``--methods`` and recipes call it.
        summary: one line for help texts and reports.
        run: ``run(prepared, x, settings, callback) -> SampleResult``, through ``w2sd_cli.sampling`` only.
        plan: ``plan(prepared, settings) -> Plan``: what it computes, for coincidence detection and its recipe's
            grid (``None``: never coincides; the recipe records the prepared grid).
    """

    name: str
    summary: str
    run: Runner
    plan: Callable[[PreparedPair, Settings], Plan] | None = None


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
    from w2sd_cli.sampling import sample_plain

    return sample_plain(p.final, x, p.schedule, equal_nfe_grid(p, s), callback=cb)


def equal_nfe_grid(p: PreparedPair, s: Settings) -> list[Any]:
    """The equal-NFE control's grid: ``T + 2 λ r`` steps, the prepared grid's spacing."""
    from w2sd_cli.sampling import equal_nfe_steps

    steps = equal_nfe_steps(len(p.grid) - 1, s.lam, s.rounds)
    return list(p.grid) if steps == len(p.grid) - 1 else p.make_grid(steps)


BUILTIN: dict[str, Method] = {m.name: m for m in (
    Method("weak", "plain sampling with the weak model at the final side's knobs", _weak,
           lambda p, s: plain(p.identity("weak_plain"), p.grid)),
    Method("strong", "plain sampling with the final (strong) side: the baseline W2SD must beat", _strong,
           lambda p, s: plain(p.identity("final"), p.grid)),
    Method("w2sd", "weak-to-strong diffusion with reflection (paper Algorithm 1)", _w2sd,
           lambda p, s: w2sd(p.identity("strong"), p.identity("weak"), p.identity("final"), p.grid, s)),
    Method("first-order", "eps_final + k (eps_strong - eps_weak) at one point per step: what W2SD equals to "
           "first order (a guidance pair: CFG at w_f + k (w_s - w_w))", _first_order,
           lambda p, s: guided(p.identity("final"), p.identity("strong"), p.identity("weak"), s.k, p.grid)),
    Method("extrapolate", "eps_final + k (eps_final - eps_weak_plain): autoguidance at w = 1 + k", _extrapolate,
           lambda p, s: guided(p.identity("final"), p.identity("final"), p.identity("weak_plain"), s.k, p.grid)),
    Method("equal-nfe", "plain strong sampling with as many network evaluations as W2SD (T + 2 λ r steps)",
           _equal_nfe, lambda p, s: plain(p.identity("final"), equal_nfe_grid(p, s))),
)}
METHODS = tuple(BUILTIN)
"""Built-in method names, in display order."""
CANONICAL = ("strong", "weak", "extrapolate", "first-order", "equal-nfe", "w2sd")
"""Which of several coinciding methods is rendered (the others are copies that say ``same_as`` it)."""


def canonical(method: str, plans: Mapping[str, Plan | None]) -> str:
    """The method rendered for ``method``: the first in ``CANONICAL`` order (then by name) with an equal plan."""
    mine = plans.get(method)
    if mine is None:
        return method
    equal = [name for name, plan in plans.items() if plan == mine]
    return min(equal, key=lambda n: (CANONICAL.index(n) if n in CANONICAL else len(CANONICAL), n))


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

