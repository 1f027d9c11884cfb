"""One clash rule for every named thing plugins register: pairs, kinds, metrics, executors, methods.

- A built-in is never replaced: its plain name always means the built-in.
- A plugin name that clashes (with a built-in, or with another plugin's) is reported in ``problems`` and is
  reachable only as ``plugin:name``; two plugins claiming a name free of built-ins both lose the plain name,
  so installing a plugin can never silently change what a name means.
- Every entry is also reachable by its qualified name: ``plugin:name``, and ``w2sd:name`` for a built-in.
- An entry may be registered *invalid* (a card that does not validate): it keeps its name, and looking it up
  raises its own error instead of "not found".

The rule does not depend on the order things are added; the order only decides listings.
(Named ``registries`` because ``w2sd_cli/registry/`` is the shipped data folder inside the wheel.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from w2sd_cli.errors import PluginError, W2SDError, suggest

T = TypeVar("T")

BUILTIN_PREFIX = "w2sd"


@dataclass(frozen=True)
class Registered(Generic[T]):
    """One registration: the object (or, when invalid, the error it raises), its name and who registered it."""

    name: str
    plugin: str
    obj: T | None
    builtin: bool = False
    aliases: tuple[str, ...] = ()
    error: W2SDError | None = None

    @property
    def prefix(self) -> str:
        """What qualifies the name: ``w2sd`` for a built-in, else the plugin's name."""
        return BUILTIN_PREFIX if self.builtin else self.plugin

    @property
    def qualified_name(self) -> str:
        return f"{self.prefix}:{self.name}"

    @property
    def claims(self) -> tuple[str, ...]:
        """The plain names this entry asks for: its name, then its aliases."""
        return (self.name, *(a for a in self.aliases if a != self.name))


class NamedRegistry(Generic[T]):
    """Named objects from built-ins and plugins, resolved by the one clash rule (see the module docstring).

    Args:
        what: what is registered, for messages ("pair", "kind", "metric", ...).
        not_found: the error raised for a miss or an ambiguous name.
        hint: a sentence appended to a miss (where to look, what to install).
    """

    def __init__(self, what: str, not_found: type[W2SDError] = PluginError, hint: str = "") -> None:
        self.what = what
        self.not_found = not_found
        self.hint = hint
        self._entries: list[Registered[T]] = []
        self._notes: list[str] = []

    # -- registering -------------------------------------------------------------------------------------

    def add(self, plugin: str, name: str, obj: T, builtin: bool = False,
            aliases: Iterable[str] = ()) -> Registered[T] | None:
        """Register ``obj`` as ``name`` from ``plugin``; a bad name or a repeat is reported and returns None."""
        return self._add(Registered(name, plugin, obj, builtin, tuple(aliases)))

    def add_invalid(self, plugin: str, name: str, error: W2SDError, builtin: bool = False) -> Registered[T] | None:
        """Keep a broken registration known by ``name``: looking it up raises ``error``; it is reported."""
        entry = self._add(Registered[T](name, plugin, None, builtin, (), error))
        if entry is not None:
            self._notes.append(str(error))
        return entry

    def note(self, problem: str) -> None:
        """Record a problem met while collecting (a plugin registered something that is not a ``what``)."""
        self._notes.append(problem)

    def _add(self, entry: Registered[T]) -> Registered[T] | None:
        bad = [n for n in entry.claims if not n or ":" in n]
        if bad:
            self._notes.append(f"plugin {entry.plugin}: {self.what} name {bad[0]!r} is not usable (empty or "
                               "containing ':'); it was skipped.")
            return None
        if any(e.qualified_name == entry.qualified_name for e in self._entries):
            self._notes.append(f"plugin {entry.plugin} registered {self.what} {entry.name!r} twice; "
                               "the first registration is kept.")
            return None
        self._entries.append(entry)
        return entry

    # -- resolving ---------------------------------------------------------------------------------------

    def _claimants(self) -> dict[str, list[Registered[T]]]:
        table: dict[str, list[Registered[T]]] = {}
        for entry in self._entries:
            for name in entry.claims:
                table.setdefault(name, []).append(entry)
        return table

    def _qualified(self) -> dict[str, Registered[T]]:
        table: dict[str, Registered[T]] = {}
        for entry in self._entries:
            for name in entry.claims:
                table.setdefault(f"{entry.prefix}:{name}", entry)
                table.setdefault(f"{entry.plugin}:{name}", entry)
        return table

    @staticmethod
    def _owner(claims: list[Registered[T]]) -> Registered[T] | None:
        """Who gets a plain name: the first built-in claiming it, else the only claimant, else nobody."""
        builtins = [e for e in claims if e.builtin]
        if builtins:
            return builtins[0]
        return claims[0] if len(claims) == 1 else None

    def plain(self) -> dict[str, Registered[T]]:
        """Every plain name (and alias) that resolves, with its entry."""
        owners = {name: self._owner(claims) for name, claims in self._claimants().items()}
        return {name: owner for name, owner in owners.items() if owner is not None}

    def find(self, name: str, home: str | None = None) -> Registered[T]:
        """The entry for ``name`` (plain, alias or ``plugin:name``), valid or not.

        ``home``: a plugin whose own registration of a plain ``name`` is preferred (a plugin's card naming
        the plugin's own kind). Raises ``not_found`` for a miss or a name several plugins claim.
        """
        qualified = self._qualified()
        if ":" in name:
            if name in qualified:
                return qualified[name]
        else:
            if home is not None and f"{home}:{name}" in qualified:
                return qualified[f"{home}:{name}"]
            claims = self._claimants().get(name, [])
            owner = self._owner(claims)
            if owner is not None:
                return owner
            if claims:
                options = ", ".join(sorted(e.qualified_name for e in claims))
                raise self.not_found(f"{self.what.capitalize()} name {name!r} is claimed by several plugins' "
                                     f"{self.what}s ({options}); name one of them.")
        known = [*self.plain(), *qualified]
        raise self.not_found(f"No {self.what} called {name!r}.{suggest(name, known)} {self.hint}".rstrip())

    def get(self, name: str, home: str | None = None) -> T:
        """The object called ``name``; an invalid entry raises its own error."""
        entry = self.find(name, home)
        if entry.error is not None:
            raise entry.error
        assert entry.obj is not None  # an entry without an error always holds its object
        return entry.obj

    # -- reading -----------------------------------------------------------------------------------------

    def entries(self, valid_only: bool = True) -> list[Registered[T]]:
        """Every entry in registration order (built-ins first when the host calls them first)."""
        return [e for e in self._entries if e.error is None or not valid_only]

    def invalid(self) -> list[Registered[T]]:
        return [e for e in self._entries if e.error is not None]

    def address(self, entry: Registered[T]) -> str:
        """The shortest name that reaches ``entry``: its plain name if it owns it, else ``plugin:name``."""
        owner = self._owner(self._claimants().get(entry.name, []))
        return entry.name if owner is entry else entry.qualified_name

    def values(self) -> list[T]:
        """Every valid object, in registration order."""
        return [e.obj for e in self.entries() if e.obj is not None]

    @property
    def problems(self) -> list[str]:
        """What went wrong while registering, then every clash with who keeps the name."""
        problems = list(self._notes)
        for name, claims in self._claimants().items():
            if len(claims) < 2:
                continue
            owner = self._owner(claims)
            others = [e for e in claims if e is not owner]
            reach = ", ".join(sorted(repr(e.qualified_name) for e in others))
            if owner is not None and owner.builtin:
                problems.append(f"{self.what} {name!r} from {_plugins(others)} clashes with the built-in one, "
                                f"which keeps the name; use {reach} for the plugin's.")
            else:
                problems.append(f"{self.what} {name!r} is claimed by {_plugins(others)}; none gets the plain "
                                f"name: use {reach}.")
        return problems

    def __contains__(self, name: object) -> bool:
        """Whether ``get(name)`` would return an object."""
        if not isinstance(name, str):
            return False
        try:
            return self.find(name).error is None
        except W2SDError:
            return False

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        """Each valid entry's address (plain name when it owns it, else ``plugin:name``)."""
        return iter([self.address(e) for e in self.entries()])

    def __len__(self) -> int:
        return len(self.entries())


def _plugins(entries: list[Registered[T]]) -> str:
    names = sorted({"built-in" if e.builtin else f"plugin {e.plugin}" for e in entries})
    return " and ".join(names)
