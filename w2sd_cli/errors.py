"""The one error family: every message a user may see, each naming its fix."""

from __future__ import annotations

import difflib
import os
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


class PathError(W2SDError):
    """A file or folder w2sd cannot create, write or read: permissions, a read-only or full disk, a bad name."""


class BusyError(W2SDError):
    """Another w2sd process holds what this one needs (a bench run folder's share); try again when it ends."""

    exit_code = 75  # EX_TEMPFAIL: the same command works once the other process is done


class MetricFailed(W2SDError):
    """``w2sd eval`` scored the run but a metric failed on some items; the other scores are kept."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """A 'did you mean' clause for a lookup miss, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def from_exception(err: BaseException) -> W2SDError | None:
    """The user-facing error for an ordinary failure that reached the CLI edge untranslated, else ``None``.

    Ordinary means: an ``OSError`` (a disk, a permission, a name, a network), an HTTP protocol error of the
    standard library, httpx, urllib3 or requests, or an invalid URL. Anything else is a bug and stays one.
    """
    from w2sd_cli.oserrors import map_exception

    return map_exception(err)


def from_os_error(err: OSError, path: str | os.PathLike[str] | None = None, url: str | None = None,
                  action: str | None = None) -> W2SDError:
    """One paragraph for an ``OSError``, by errno: what failed, on which path or URL, and the fix.

    Args:
        err: the error (its ``filename`` is used when ``path`` is not given).
        path: the file or folder concerned.
        url: the URL concerned (network errors); secrets in it are masked.
        action: what w2sd was doing, e.g. ``"write the bench run folder"``.

    Returns:
        A ``PathError`` (files) or ``DownloadError`` (network), never raised here.
    """
    from w2sd_cli.oserrors import os_error

    return os_error(err, path, url, action)
