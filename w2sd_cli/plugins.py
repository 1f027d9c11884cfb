"""Plugin loading that cannot brick the tool: each plugin is imported and called in isolation.

Built-in plugins go through the same hooks as third-party ones. Entry points in group ``w2sd`` are
loaded unless ``W2SD_LOAD_PLUGINS`` (comma list; empty = none) leaves them out.
"""

from __future__ import annotations

import functools
import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from w2sd_cli import hookspecs

ENTRY_POINT_GROUP = "w2sd"


@dataclass
class PluginRecord:
    """One plugin's name, origin, version, hooks and status (``ok`` or ``failed``) with the reason."""

    name: str
    origin: str
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    status: str = "ok"
    error: str | None = None

    def fail(self, where: str, err: BaseException) -> None:
        self.status = "failed"
        reason = f"{where}: {type(err).__name__}: {err}"
        self.error = reason if self.error is None else f"{self.error}; {reason}"
        if os.environ.get("W2SD_DEBUG"):
            traceback.print_exception(err)


class Host:
    """The plugin manager plus the record of every plugin that was tried."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("w2sd")
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}

    def add(self, plugin: object, name: str, origin: str, version: str | None = None) -> None:
        """Register an already-imported plugin object; a registration error is recorded, not raised."""
        record = self.records.setdefault(name, PluginRecord(name, origin, version))
        try:
            self.pm.register(plugin, name=name)
        except Exception as err:  # a bad hookimpl signature, a duplicate name...
            record.fail("register", err)
            return
        record.hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])

    def call(self, hook_name: str, **kwargs: Any) -> None:
        """Call one hook on every plugin separately; a plugin that raises is marked failed and skipped."""
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):  # registration order
            record = self.records.get(impl.plugin_name)
            if record is not None and record.status == "failed":
                continue
            try:
                impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            except Exception as err:
                if record is None:
                    raise
                record.fail(hook_name, err)

    def collect(self, hook_name: str) -> list[tuple[str, Any]]:
        """Call a ``register_*`` hook; return ``(plugin name, registered object)`` in registration order."""
        found: list[tuple[str, Any]] = []
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            record = self.records.get(impl.plugin_name)
            if record is not None and record.status == "failed":
                continue
            mine: list[Any] = []
            try:
                impl.function(register=mine.append)
            except Exception as err:
                if record is None:
                    raise
                record.fail(hook_name, err)
                continue
            found.extend((impl.plugin_name, obj) for obj in mine)
        return found


def allowed_plugins() -> set[str] | None:
    """Names allowed by ``W2SD_LOAD_PLUGINS`` (None = all)."""
    value = os.environ.get("W2SD_LOAD_PLUGINS")
    if value is None:
        return None
    return {n.strip() for n in value.split(",") if n.strip()}


def build_host(load_entry_points: bool = True) -> Host:
    """A fresh host with the built-in plugins and (unless disabled) the installed entry points."""
    from w2sd_cli import __version__, builtins

    host = Host()
    for name, plugin in builtins.plugins():
        host.add(plugin, name, "built-in", __version__)
    if not load_entry_points:
        return host
    allowed = allowed_plugins()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and ep.name not in allowed:
            continue
        dist = getattr(ep, "dist", None)
        version = dist.version if dist is not None else None
        origin = f"entry point {ep.value}" + (f" ({dist.name})" if dist is not None else "")
        record = host.records.setdefault(ep.name, PluginRecord(ep.name, origin, version))
        try:
            plugin = ep.load()
        except Exception as err:
            record.fail("import", err)
            continue
        host.add(plugin, ep.name, origin, version)
    return host


@functools.cache
def get_host() -> Host:
    """The process-wide host, built on first use (never at import time)."""
    return build_host()


def reset() -> None:
    """Forget the cached host and registries (tests build fresh ones)."""
    get_host.cache_clear()
    from w2sd_cli import pairs

    pairs.get_registry.cache_clear()
