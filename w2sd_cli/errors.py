"""The one error family: every message a user may see, each naming its fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class W2SDError(Exception):
    """Base of every error w2sd shows to a user; the text says what to do.

    ``exit_code`` is what the CLI exits with (1 unless a subclass says otherwise).
    """

    exit_code = 1


class PairNotFound(W2SDError):
    """A pair name or alias that no card defines."""


class KindNotFound(W2SDError):
    """A card whose ``kind`` no installed plugin provides."""


class CardError(W2SDError):
    """A pair card that does not parse or does not validate."""


class PluginError(W2SDError):
    """A plugin that clashes with another or breaks its contract."""


class ModelError(W2SDError):
    """A model that is missing, corrupt, unsafe or incompatible."""


class DownloadError(W2SDError):
    """A download that failed; what was already downloaded is kept for a resume."""


class OfflineError(W2SDError):
    """Something must be downloaded but w2sd is offline."""


class InputError(W2SDError):
    """A command-line value that cannot work (size, prompt, control image...)."""


class Interrupted(W2SDError):
    """Ctrl-C: the run stopped; nothing partial was kept."""

    exit_code = 130


def suggest(name: str, choices: Iterable[str]) -> str:
    """A 'did you mean' clause for a lookup miss, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
