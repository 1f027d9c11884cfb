"""The pair registry: cards from plugins, from the shipped registry and from ``$W2SD_HOME/pairs``.

Lookups go by name, alias or ``plugin:name`` under the one clash rule of ``w2sd_cli.registries``: a built-in
card or kind keeps its plain name; a clashing plugin card or kind is reported and reachable only as
``plugin:name``. The user's own cards (``$W2SD_HOME/pairs/*.yaml``) count as the plugin ``user``: a user card
named like a built-in is reported and reachable as ``user:name``; one named like a plugin's card makes both
reachable only by their qualified names. A card that does not validate stays known by its name (the file
name when the card has none): asking for it raises the card's own error. A card's ``kind`` is looked up in
the card's own plugin first, so a plugin's cards reach the plugin's kind even when a built-in shares its name.

Cards are validated lazily: collecting reads each card file's YAML only for its name and aliases, and a card is
validated (``parse_card``) when a lookup reaches it, or when a listing (``entries``, ``problems``) needs them all.
Validation wins: a card that fails it becomes an invalid entry (known by its name, without aliases), as if it had
failed while collecting.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2sd_cli import cards
from w2sd_cli.cards import NAME_PATTERN, PairCard
from w2sd_cli.errors import CardError, KindNotFound, PairNotFound, W2SDError
from w2sd_cli.kinds.base import PairKind
from w2sd_cli.paths import user_pairs_dir
from w2sd_cli.plugins import USER_PLUGIN, Host, get_host
from w2sd_cli.registries import NamedRegistry, Registered

USER = USER_PLUGIN


class PairEntry:
    """A card with where it came from (a plugin name or ``user``, and a file or ``plugin``).

    ``card`` is the card itself or a function that reads and validates it, called the first time ``card`` is
    read (the registry does that when a lookup reaches the entry); its ``CardError`` is the card's own error.
    """

    def __init__(self, card: PairCard | Callable[[], PairCard], plugin: str, origin: str) -> None:
        self.plugin = plugin
        self.origin = origin
        self._load: Callable[[], PairCard] | None = None
        if isinstance(card, PairCard):
            self.__dict__["card"] = card
        else:
            self._load = card

    @functools.cached_property
    def card(self) -> PairCard:
        assert self._load is not None  # an entry built from a card has it cached already
        return self._load()

    @property
    def loaded(self) -> bool:
        """Whether the card has been read and validated."""
        return "card" in self.__dict__

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}:{self.card.name}"

    def __repr__(self) -> str:
        card = self.card.name if self.loaded else "(not read yet)"
        return f"PairEntry(card={card!r}, plugin={self.plugin!r}, origin={self.origin!r})"


class _PairTable(NamedRegistry[PairEntry]):
    """The pairs, under the clash rule, validating each lazily collected card when first needed.

    A lookup validates the card it finds and those claiming the name by an alias (an invalid card loses its
    aliases, which can change who owns a name); listings validate them all first.
    """

    def __init__(self) -> None:
        super().__init__("pair", PairNotFound,
                         f"Run `w2sd pairs list` to see the pairs installed, or add a card to {user_pairs_dir()}.")
        self.skipped: list[PairEntry] = []  # cards not registered: known by no name, or by a name taken

    def validate(self, names: Iterable[str] | None = None) -> None:
        """Validate the cards not validated yet: every one, or those claiming one of ``names`` by an alias (an
        invalid card keeps its name but loses its aliases, so only an alias claim can change who owns a name)."""
        wanted = None if names is None else set(names)
        for i, entry in enumerate(self._entries):
            if wanted is None or wanted & (set(entry.aliases) - {entry.name}):
                self._validate_at(i)
        if names is None:
            for skipped in self.skipped:
                try:
                    _ = skipped.card
                except W2SDError as err:  # as when collecting validated it: its error joins the problems
                    self._notes.append(str(err))
            self.skipped = []

    def _validate_at(self, i: int) -> None:
        entry = self._entries[i]
        if entry.obj is None or entry.obj.loaded:
            return
        try:
            card = entry.obj.card
        except W2SDError as err:
            self._entries[i] = Registered[PairEntry](entry.name, entry.plugin, None, entry.builtin, (), err)
            self._notes.append(str(err))
            return
        if (card.name, tuple(card.aliases)) != (entry.name, entry.aliases):  # validation wins
            self._entries[i] = dataclasses.replace(entry, name=card.name, aliases=tuple(card.aliases))

    def loaded(self) -> list[PairEntry]:
        """The valid entries already validated (no card is read)."""
        return [e.obj for e in self._entries if e.obj is not None and e.obj.loaded]

    def find(self, name: str, home: str | None = None) -> Registered[PairEntry]:
        self.validate([name.rpartition(":")[2]])
        found = super().find(name, home)
        if found.obj is not None and not found.obj.loaded:  # reached by its name, which validation keeps
            self._validate_at(next(i for i, e in enumerate(self._entries) if e is found))
            found = super().find(name, home)
        return found

    def entries(self, valid_only: bool = True) -> list[Registered[PairEntry]]:
        self.validate()
        return super().entries(valid_only)

    def invalid(self) -> list[Registered[PairEntry]]:
        self.validate()
        return super().invalid()

    def plain(self) -> dict[str, Registered[PairEntry]]:
        self.validate()
        return super().plain()

    def address(self, entry: Registered[PairEntry]) -> str:
        self.validate([entry.name])
        return super().address(entry)

    @property
    def problems(self) -> list[str]:
        self.validate()
        return super().problems


@dataclass
class PairRegistry:
    """Every known pair and kind, the problems met while collecting them, and the plugins that failed."""

    pairs: NamedRegistry[PairEntry] = field(default_factory=lambda: _PairTable())
    kinds: NamedRegistry[PairKind] = field(
        default_factory=lambda: NamedRegistry[PairKind]("kind", KindNotFound))
    plugin_warnings: list[str] = field(default_factory=list)

    @property
    def entries(self) -> list[PairEntry]:
        """Every valid card, built-ins first (validates every card)."""
        return [e.obj for e in self.pairs.entries() if e.obj is not None]

    @property
    def problems(self) -> list[str]:
        """Bad registrations, invalid cards and name clashes (failed plugins are in ``plugin_warnings``); validates
        every card."""
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
            entry = next((e for e in self._validated() if e.card is card), None)
        try:
            return self.kinds.get(card.kind, home=entry.plugin if entry is not None else None)
        except KindNotFound as err:
            raise KindNotFound(
                f"Pair {card.name!r} needs kind {card.kind!r}: {err} Installed kinds: "
                f"{', '.join(sorted(self.kinds)) or 'none'}; install the plugin that provides it "
                "(`w2sd plugins` lists what loaded).") from None

    def _validated(self) -> list[PairEntry]:
        """The valid entries whose cards are already read: a card object handed out comes from one of them."""
        if isinstance(self.pairs, _PairTable):
            return self.pairs.loaded()
        return [e for e in self.pairs.values() if e.loaded]


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
    """Register one card; a card file or mapping is read for its name and aliases only, validated later."""
    if isinstance(item, dict | str | Path) and isinstance(table, _PairTable):
        lazy = _lazy_entry(plugin, item)
        claims = _claims_of(item)
        if claims is None or table.add(plugin, claims[0], lazy, builtin, claims[1]) is None:
            table.skipped.append(lazy)  # known by no name, or a name registered twice: only its error can show
        return
    try:
        entry = _as_entry(plugin, item)
    except W2SDError as err:
        name = _name_of(item)
        if name is None or table.add_invalid(plugin, name, err, builtin) is None:
            table.note(str(err))
        return
    table.add(plugin, entry.card.name, entry, builtin, entry.card.aliases)


def _lazy_entry(plugin: str, item: dict[str, Any] | str | Path) -> PairEntry:
    if isinstance(item, dict):
        return PairEntry(lambda: cards.parse_card(item, f"plugin {plugin}"), plugin, f"plugin {plugin}")
    path = Path(item)
    return PairEntry(lambda: cards.load_card(path), plugin, str(item))


def _as_entry(plugin: str, item: Any) -> PairEntry:
    if isinstance(item, PairCard):
        return PairEntry(item, plugin, f"plugin {plugin}")
    if isinstance(item, str | Path):
        return PairEntry(cards.load_card(Path(item)), plugin, str(item))
    if isinstance(item, dict):
        return PairEntry(cards.parse_card(item, f"plugin {plugin}"), plugin, f"plugin {plugin}")
    raise CardError(f"plugin {plugin}: register_pairs gave a {type(item).__name__}; give a PairCard, dict or path.")


def _raw(item: Any) -> Any:
    """The mapping a card file or a plugin's dict holds, unvalidated (None when the file cannot be read)."""
    if isinstance(item, str | Path):
        import yaml

        try:
            return yaml.safe_load(Path(item).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None
    return item


def _usable(name: Any) -> bool:
    return isinstance(name, str) and re.match(NAME_PATTERN, name) is not None


def _claims_of(item: dict[str, Any] | str | Path) -> tuple[str, tuple[str, ...]] | None:
    """The name and aliases a card file or dict is registered under before it is validated: the name it would
    be known by even if invalid, and its aliases only when they are all usable names (else the card cannot
    validate, and an invalid card has no aliases). None for a card known by no name (it cannot validate)."""
    data = _raw(item)
    name = _name_of(item, data)
    if name is None:
        return None
    aliases = data.get("aliases", []) if isinstance(data, dict) else []
    usable = isinstance(aliases, list | tuple) and all(_usable(a) for a in aliases)
    return name, tuple(aliases) if usable else ()


def _name_of(item: Any, data: Any = None) -> str | None:
    """The name an invalid card is known by: its ``name`` field if usable, else its file name (``data``: the
    card's mapping when already read)."""
    data = _raw(item) if data is None else data
    name = data.get("name") if isinstance(data, dict) else None
    if not _usable(name) and isinstance(item, str | Path):
        name = Path(item).stem
    return name if isinstance(name, str) and _usable(name) else None


@functools.cache
def get_registry() -> PairRegistry:
    """The process-wide registry, built on first use."""
    return build_registry(get_host())
