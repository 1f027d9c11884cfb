"""The pair registry: cards from plugins, from the shipped registry and from ``$W2SD_HOME/pairs``.

Lookups go by name, alias or ``plugin:name`` under the one clash rule of ``w2sd_cli.registries``: a built-in
card or kind keeps its plain name; a clashing plugin card or kind is reported and reachable only as
``plugin:name``. The user's own cards (``$W2SD_HOME/pairs/*.yaml``) count as the plugin ``user``: a user card
named like a built-in is reported and reachable as ``user:name``; one named like a plugin's card makes both
reachable only by their qualified names. A card that does not validate stays known by its name (the file
name when the card has none): asking for it raises the card's own error. A card's ``kind`` is looked up in
the card's own plugin first, so a plugin's cards reach the plugin's kind even when a built-in shares its name.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2sd_cli.cards import NAME_PATTERN, PairCard, load_card, parse_card
from w2sd_cli.errors import CardError, KindNotFound, PairNotFound, W2SDError
from w2sd_cli.kinds.base import PairKind
from w2sd_cli.paths import user_pairs_dir
from w2sd_cli.plugins import USER_PLUGIN, Host, get_host
from w2sd_cli.registries import NamedRegistry

USER = USER_PLUGIN


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
    """Every known pair and kind, the problems met while collecting them, and the plugins that failed."""

    pairs: NamedRegistry[PairEntry] = field(default_factory=lambda: _pair_table())
    kinds: NamedRegistry[PairKind] = field(
        default_factory=lambda: NamedRegistry[PairKind]("kind", KindNotFound))
    plugin_warnings: list[str] = field(default_factory=list)

    @property
    def entries(self) -> list[PairEntry]:
        """Every valid card, built-ins first."""
        return [e.obj for e in self.pairs.entries() if e.obj is not None]

    @property
    def problems(self) -> list[str]:
        """Bad registrations, invalid cards and name clashes (failed plugins are in ``plugin_warnings``)."""
        return [*self.kinds.problems, *self.pairs.problems]

    def get(self, name: str) -> PairEntry:
        """The pair called ``name`` (a name, an alias or ``plugin:name``); an invalid card raises its error,
        and so does a card whose sides its kind (when installed) refuses."""
        entry = self.pairs.get(name)
        try:
            kind = self.kind(entry)
        except KindNotFound:
            return entry
        kind.sides(entry.card)
        return entry

    def kind(self, card: PairCard | PairEntry) -> PairKind:
        """The kind that runs a card (give the entry to look in the card's own plugin first)."""
        if isinstance(card, PairEntry):
            entry: PairEntry | None = card
            card = card.card
        else:
            entry = next((e for e in self.entries if e.card is card), None)
        try:
            return self.kinds.get(card.kind, home=entry.plugin if entry is not None else None)
        except KindNotFound as err:
            raise KindNotFound(
                f"Pair {card.name!r} needs kind {card.kind!r}: {err} Installed kinds: "
                f"{', '.join(sorted(self.kinds)) or 'none'}; install the plugin that provides it "
                "(`w2sd plugins` lists what loaded).") from None


def _pair_table() -> NamedRegistry[PairEntry]:
    return NamedRegistry[PairEntry](
        "pair", PairNotFound, f"Run `w2sd pairs list` to see the pairs installed, or add a card to {user_pairs_dir()}.")


def build_registry(host: Host, user_dir: Path | None = None) -> PairRegistry:
    """Collect kinds and cards from every plugin (built-ins first) and the user's card folder."""
    registry = PairRegistry()
    for plugin, kind in host.collect("register_pair_kinds"):
        name = getattr(kind, "name", None)
        if not isinstance(kind, PairKind) or not isinstance(name, str) or not name:
            registry.kinds.note(f"plugin {plugin}: register_pair_kinds gave {kind!r}, not a named PairKind.")
        else:
            registry.kinds.add(plugin, name, kind, host.is_builtin(plugin))
    for plugin, item in host.collect("register_pairs"):
        _add_card(registry.pairs, plugin, item, host.is_builtin(plugin))
    folder = user_pairs_dir() if user_dir is None else user_dir
    for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
        _add_card(registry.pairs, USER, path, False)
    registry.plugin_warnings = [*host.warnings, *host.failures()]
    return registry


def _add_card(table: NamedRegistry[PairEntry], plugin: str, item: Any, builtin: bool) -> None:
    try:
        entry = _as_entry(plugin, item)
    except W2SDError as err:
        name = _name_of(item)
        if name is None or table.add_invalid(plugin, name, err, builtin) is None:
            table.note(str(err))
        return
    table.add(plugin, entry.card.name, entry, builtin, entry.card.aliases)


def _as_entry(plugin: str, item: Any) -> PairEntry:
    if isinstance(item, PairCard):
        return PairEntry(item, plugin, f"plugin {plugin}")
    if isinstance(item, str | Path):
        return PairEntry(load_card(Path(item)), plugin, str(item))
    if isinstance(item, dict):
        return PairEntry(parse_card(item, f"plugin {plugin}"), plugin, f"plugin {plugin}")
    raise CardError(f"plugin {plugin}: register_pairs gave a {type(item).__name__}; give a PairCard, dict or path.")


def _name_of(item: Any) -> str | None:
    """The name an invalid card is known by: its ``name`` field if usable, else its file name."""
    data: Any = item
    if isinstance(item, str | Path):
        import yaml

        try:
            data = yaml.safe_load(Path(item).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            data = None
    name = data.get("name") if isinstance(data, dict) else None
    if not (isinstance(name, str) and re.match(NAME_PATTERN, name)) and isinstance(item, str | Path):
        name = Path(item).stem
    return name if isinstance(name, str) and re.match(NAME_PATTERN, name) else None


@functools.cache
def get_registry() -> PairRegistry:
    """The process-wide registry, built on first use."""
    return build_registry(get_host())
