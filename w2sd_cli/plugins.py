"""Plugin loading that cannot brick the tool: each plugin is imported and called in isolation.

Built-in plugins go through the same hooks as third-party ones. Entry points in group ``w2sd`` are loaded
unless ``W2SD_LOAD_PLUGINS`` leaves them out: a comma list of entry-point names loads only those (empty:
none); ``-name`` entries exclude one and load the rest (``W2SD_LOAD_PLUGINS=-example``). Names that match no
installed plugin are reported as warnings. Built-in plugins always load.

Hook order: w2sd calls every hook itself, plugin by plugin, never through pluggy's own (newest-first) loop:
built-in plugins first in their fixed order, then every other plugin sorted by name. A plugin that raises
in a hook is marked failed and skipped from then on. ``wrapper``/``hookwrapper``/``tryfirst``/``trylast``
hookimpls would have no effect under that order, so a plugin using them is refused (marked failed).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy

from w2sd_cli import hookspecs
from w2sd_cli.errors import PluginError, W2SDError, suggest
from w2sd_cli.registries import BUILTIN_PREFIX, NamedRegistry

ENTRY_POINT_GROUP = "w2sd"
USER_PLUGIN = "user"
"""The pseudo-plugin that owns the user's cards in ``$W2SD_HOME/pairs``."""
HOOK_OPTIONS_REFUSED = ("wrapper", "hookwrapper", "tryfirst", "trylast")


@dataclass
class PluginRecord:
    """One plugin's name, origin, version, hooks and status (``ok`` or ``failed``) with the reason."""

    name: str
    origin: str
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    status: str = "ok"
    error: str | None = None
    builtin: bool = False

    def fail(self, where: str, err: BaseException) -> None:
        self.status = "failed"
        reason = f"{where}: {type(err).__name__}: {err}"
        self.error = reason if self.error is None else f"{self.error}; {reason}"
        if os.environ.get("W2SD_DEBUG"):
            traceback.print_exception(err)


def reserved(name: str) -> str | None:
    """Why a third-party plugin may not be called ``name`` (it would shadow a qualified prefix), or None."""
    if name in (BUILTIN_PREFIX, USER_PLUGIN) or name.startswith(f"{BUILTIN_PREFIX}."):
        return f"the plugin name {name!r} is reserved for w2sd's built-ins and the user's cards; rename the entry point"
    if not name or ":" in name:
        return f"the plugin name {name!r} cannot qualify names (empty or containing ':'); rename the entry point"
    return None


class Host:
    """The plugin manager, the record of every plugin that was tried, and the warnings met loading them."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("w2sd")
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.warnings: list[str] = []
        self._builtin_rank: dict[str, int] = {}

    def add(self, plugin: object, name: str, origin: str, version: str | None = None, builtin: bool = False) -> None:
        """Register an already-imported plugin object; a registration error is recorded, not raised."""
        record = self.records.setdefault(name, PluginRecord(name, origin, version, builtin=builtin))
        if builtin:
            self._builtin_rank.setdefault(name, len(self._builtin_rank))
        elif (why := reserved(name)) is not None:
            record.fail("register", PluginError(why))
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as err:  # a bad hookimpl signature, a duplicate name...
            if isinstance(err, pluggy.PluginValidationError):
                err = PluginError(f"{err}. A hook with a wrong signature refuses the whole plugin (none of its hooks "
                                  "run); fix its parameters (see docs/plugins.md, 'Hook signatures')")
            record.fail("register", err)
            return
        callers = self.pm.get_hookcallers(plugin) or []
        refused = [f"{caller.name} ({option}=True)" for caller in callers for impl in caller.get_hookimpls()
                   if impl.plugin is plugin for option in HOOK_OPTIONS_REFUSED if getattr(impl, option, False)]
        if refused:
            self.pm.unregister(plugin)
            record.fail("register", PluginError(
                f"hookimpl {', '.join(refused)}: w2sd calls each hook itself, built-ins first and then plugins "
                "by name, so wrappers and tryfirst/trylast would silently do nothing; use a plain @hookimpl."))
            return
        record.hooks = sorted(caller.name for caller in callers)

    def is_builtin(self, name: str) -> bool:
        return name in self._builtin_rank

    def _rank(self, name: str) -> tuple[int, int, str]:
        if name in self._builtin_rank:
            return (0, self._builtin_rank[name], "")
        return (1, 0, name)

    def _impls(self, hook_name: str) -> list[Any]:
        """The hook's live implementations in w2sd's order: built-ins as declared, then plugins by name."""
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        live = [i for i in impls if self.records.get(i.plugin_name, PluginRecord("", "")).status != "failed"]
        return sorted(live, key=lambda impl: self._rank(impl.plugin_name))

    def call(self, hook_name: str, **kwargs: Any) -> None:
        """Call one hook on every plugin separately; a plugin that raises is marked failed and skipped."""
        for impl in self._impls(hook_name):
            try:
                impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            except Exception as err:
                record = self.records.get(impl.plugin_name)
                if record is None:
                    raise
                record.fail(hook_name, err)

    def collect(self, hook_name: str) -> list[tuple[str, Any]]:
        """Call a ``register_*`` hook; return ``(plugin name, registered object)`` in hook order."""
        found: list[tuple[str, Any]] = []
        for impl in self._impls(hook_name):
            mine: list[Any] = []
            try:
                impl.function(register=mine.append)
            except Exception as err:
                record = self.records.get(impl.plugin_name)
                if record is None:
                    raise
                record.fail(hook_name, err)
                continue
            found.extend((impl.plugin_name, obj) for obj in mine)
        return found

    def registry(self, hook_name: str, what: str, *, builtins: Iterable[Any] = (),
                 check: Callable[[Any], bool] | None = None, not_found: type[W2SDError] = PluginError,
                 hint: str = "") -> NamedRegistry[Any]:
        """A ``NamedRegistry`` of objects with a ``name``: ``builtins`` first, then what the hook registers.

        Args:
            hook_name: the ``register_*`` hook to call.
            what: what the objects are, for messages.
            builtins: objects w2sd provides itself (registered as built-ins of plugin ``w2sd``).
            check: whether an object fulfils the contract (besides having a string ``name``).
            not_found: the error a lookup miss raises.
            hint: appended to a lookup miss.
        """
        found = NamedRegistry[Any](what, not_found, hint)
        collected = [(BUILTIN_PREFIX, obj, True) for obj in builtins]
        collected += [(plugin, obj, self.is_builtin(plugin)) for plugin, obj in self.collect(hook_name)]
        for plugin, obj, builtin in collected:
            name = getattr(obj, "name", None)
            if not isinstance(name, str) or (check is not None and not check(obj)):
                found.note(f"plugin {plugin}: {hook_name} gave {obj!r}, which is not a {what} (see docs/plugins.md).")
                continue
            found.add(plugin, name, obj, builtin)
        return found

    def failures(self) -> list[str]:
        """One warning per failed plugin, naming it and the reason."""
        return [f"plugin {r.name} failed ({r.error}); w2sd skips it, so pairs, kinds or metrics it provides may be "
                "missing. `w2sd plugins` lists every plugin; W2SD_DEBUG=1 shows the traceback."
                for r in self.records.values() if r.status == "failed"]


@dataclass(frozen=True)
class Selection:
    """What ``W2SD_LOAD_PLUGINS`` asks for: only some entry points (``only``), minus some (``excluded``)."""

    only: frozenset[str] | None = None
    excluded: frozenset[str] = frozenset()

    def allows(self, name: str) -> bool:
        return (self.only is None or name in self.only) and name not in self.excluded

    def named(self) -> list[str]:
        return sorted((self.only or frozenset()) | self.excluded)


def plugin_selection() -> Selection:
    """Parse ``W2SD_LOAD_PLUGINS``: unset = every plugin; ``a,b`` = only those; ``-a`` = all but a; empty = none."""
    value = os.environ.get("W2SD_LOAD_PLUGINS")
    if value is None:
        return Selection()
    names = [n.strip() for n in value.split(",") if n.strip()]
    excluded = frozenset(n[1:].strip() for n in names if n.startswith("-"))
    only = frozenset(n for n in names if not n.startswith("-"))
    return Selection(only if only or not excluded else None, excluded)


def build_host(load_entry_points: bool = True) -> Host:
    """A fresh host with the built-in plugins and (unless disabled) the installed entry points."""
    from w2sd_cli import __version__, builtins

    host = Host()
    for name, plugin in builtins.plugins():
        host.add(plugin, name, "built-in", __version__, builtin=True)
    if not load_entry_points:
        return host
    selection = plugin_selection()
    found = entry_points()
    for ep in found:
        if not selection.allows(ep.name):
            continue
        dist = getattr(ep, "dist", None)
        version = dist.version if dist is not None else None
        origin = f"entry point {ep.value}" + (f" ({dist.name})" if dist is not None else "")
        if ep.name in host.records:
            first = host.records[ep.name].origin
            if first == origin:  # the same distribution installed twice (say, editable and in site-packages)
                origin, first = f"{origin} at {_where(ep)}", f"{first} at {_where(_first_named(found, ep.name))}"
            host.warnings.append(f"entry point {ep.name!r} ({origin}) is ignored: a plugin of that name is already "
                                 f"loaded from {first}; uninstall one of them.")
            continue
        record = host.records.setdefault(ep.name, PluginRecord(ep.name, origin, version))
        try:
            plugin = ep.load()
        except Exception as err:
            record.fail("import", err)
            continue
        host.add(plugin, ep.name, origin, version)
    _check_selection(host, selection, sorted({ep.name for ep in found}))
    return host


def entry_points() -> list[metadata.EntryPoint]:
    """Every ``w2sd`` entry point of every distribution on ``sys.path``, by name (path order within a name).

    ``importlib.metadata.entry_points`` keeps one distribution per name, so a package installed twice (two
    folders, or an editable install beside a wheel) would lose its second copy silently; here the second copy
    is kept, so ``build_host`` warns about it.
    """
    found: list[metadata.EntryPoint] = []
    seen: set[str] = set()
    for dist in metadata.distributions():
        path = getattr(dist, "_path", None)
        where = os.path.realpath(str(path)) if path is not None else str(id(dist))
        if where in seen:  # one folder listed twice on sys.path
            continue
        seen.add(where)
        found.extend(ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP)
    return sorted(found, key=lambda ep: ep.name)


def _first_named(found: list[metadata.EntryPoint], name: str) -> metadata.EntryPoint:
    return next(ep for ep in found if ep.name == name)


def _where(ep: metadata.EntryPoint) -> str:
    """The folder a distribution's metadata lives in (tells two installs of one package apart)."""
    path = getattr(getattr(ep, "dist", None), "_path", None)
    return str(Path(str(path)).parent) if path is not None else "an unknown place"


def _check_selection(host: Host, selection: Selection, installed: list[str]) -> None:
    for name in selection.named():
        if host.is_builtin(name):
            host.warnings.append(f"W2SD_LOAD_PLUGINS names the built-in plugin {name!r}; built-ins always load.")
        elif name not in installed:
            host.warnings.append(
                f"W2SD_LOAD_PLUGINS names {name!r}, which no installed plugin provides.{suggest(name, installed)} "
                f"Installed entry points: {', '.join(installed) or 'none'}.")


_host: Host | None = None


def get_host() -> Host:
    """The process-wide host, built on first use (never at import time)."""
    global _host
    if _host is None:
        _host = build_host()
    return _host


def use_host(host: Host) -> None:
    """Make ``host`` the process-wide one (``w2sd_cli.testing`` installs test plugins this way)."""
    global _host
    reset()
    _host = host


def reset() -> None:
    """Forget the cached host and registries (tests build fresh ones)."""
    global _host
    _host = None
    from w2sd_cli import pairs

    pairs.get_registry.cache_clear()


def method_registry(builtins: Iterable[Any] = ()) -> NamedRegistry[Any]:
    """Sampling methods: ``builtins`` (w2sd's own table) first, then every plugin's ``register_methods``."""
    return get_host().registry(
        "register_methods", "method", builtins=builtins,
        hint="`w2sd plugins` lists the installed plugins and their hooks.")
