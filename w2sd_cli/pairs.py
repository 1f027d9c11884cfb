"""The pair registry: cards from plugins, from the shipped registry and from ``$W2SD_HOME/pairs``.

Lookups go by name, alias or ``plugin:name``. Clashes are reported and never silently resolved: a
clashing name must be asked for with its plugin prefix.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2sd_cli.cards import PairCard, load_card, parse_card
from w2sd_cli.errors import CardError, KindNotFound, PairNotFound, W2SDError, suggest
from w2sd_cli.kinds.base import PairKind
from w2sd_cli.paths import user_pairs_dir
from w2sd_cli.plugins import Host, get_host

USER = "user"


@dataclass(frozen=True)
class PairEntry:
    """A card with where it came from (a plugin name or ``user``, and a file or ``plugin``)."""

    card: PairCard
    plugin: str
    origin: str

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}:{self.card.name}"


@dataclass
class PairRegistry:
    """Every known pair and kind, plus the problems met while collecting them."""

    entries: list[PairEntry] = field(default_factory=list)
    kinds: dict[str, PairKind] = field(default_factory=dict)
    kind_plugins: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def names(self) -> dict[str, list[PairEntry]]:
        """Every name and alias, with the entries that claim it."""
        table: dict[str, list[PairEntry]] = {}
        for entry in self.entries:
            for name in (entry.card.name, *entry.card.aliases, entry.qualified_name):
                claims = table.setdefault(name, [])
                if entry not in claims:
                    claims.append(entry)
        return table

    def get(self, name: str) -> PairEntry:
        """The pair called ``name`` (a name, an alias or ``plugin:name``)."""
        table = self.names()
        claims = table.get(name, [])
        if len(claims) == 1:
            return claims[0]
        if len(claims) > 1:
            options = ", ".join(e.qualified_name for e in claims)
            raise PairNotFound(f"Pair name {name!r} is claimed by several cards ({options}); name one of them.")
        listed = sorted(e.card.name for e in self.entries)
        raise PairNotFound(
            f"No pair called {name!r}.{suggest(name, table)} Run `w2sd pairs list` to see the "
            f"{len(listed)} pairs installed, or add a card to {user_pairs_dir()}."
        )

    def kind(self, card: PairCard) -> PairKind:
        """The kind that runs ``card``."""
        try:
            return self.kinds[card.kind]
        except KeyError:
            raise KindNotFound(
                f"Pair {card.name!r} needs kind {card.kind!r}, which no installed plugin provides."
                f"{suggest(card.kind, self.kinds)} Installed kinds: {', '.join(sorted(self.kinds)) or 'none'}; "
                "install the plugin that provides it (`w2sd plugins` lists what loaded)."
            ) from None


def build_registry(host: Host, user_dir: Path | None = None) -> PairRegistry:
    """Collect kinds and cards from every plugin and the user's card folder."""
    registry = PairRegistry()
    for plugin, kind in host.collect("register_pair_kinds"):
        name = getattr(kind, "name", None)
        if not isinstance(kind, PairKind) or not name:
            registry.problems.append(f"plugin {plugin}: register_pair_kinds gave {kind!r}, not a named PairKind")
        elif name in registry.kinds:
            registry.problems.append(
                f"kind {name!r} is registered by both {registry.kind_plugins[name]} and {plugin}; "
                f"keeping {registry.kind_plugins[name]}'s (uninstall one, or limit W2SD_LOAD_PLUGINS)"
            )
        else:
            registry.kinds[name] = kind
            registry.kind_plugins[name] = plugin
    for plugin, item in host.collect("register_pairs"):
        try:
            registry.entries.append(_as_entry(plugin, item))
        except W2SDError as err:
            registry.problems.append(str(err))
    folder = user_pairs_dir() if user_dir is None else user_dir
    for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
        try:
            registry.entries.append(PairEntry(load_card(path), USER, str(path)))
        except W2SDError as err:
            registry.problems.append(str(err))
    _report_clashes(registry)
    return registry


def _as_entry(plugin: str, item: Any) -> PairEntry:
    if isinstance(item, PairCard):
        return PairEntry(item, plugin, f"plugin {plugin}")
    if isinstance(item, str | Path):
        return PairEntry(load_card(Path(item)), plugin, str(item))
    if isinstance(item, dict):
        return PairEntry(parse_card(item, f"plugin {plugin}"), plugin, f"plugin {plugin}")
    raise CardError(f"plugin {plugin}: register_pairs gave a {type(item).__name__}; give a PairCard, dict or path.")


def _report_clashes(registry: PairRegistry) -> None:
    for name, claims in registry.names().items():
        plugins = sorted({e.plugin for e in claims})
        if len(claims) > 1 and ":" not in name:
            registry.problems.append(
                f"pair name {name!r} is claimed by {', '.join(e.qualified_name for e in claims)}"
                f" (from {', '.join(plugins)}); use the qualified name"
            )


@functools.cache
def get_registry() -> PairRegistry:
    """The process-wide registry, built on first use."""
    return build_registry(get_host())
