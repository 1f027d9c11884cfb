"""Where w2sd keeps things: ``W2SD_HOME`` (user cards, the download store, locks) and the shipped registry."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$W2SD_HOME``, or the platform's user data folder for w2sd."""
    value = os.environ.get("W2SD_HOME")
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("w2sd", appauthor=False))


def user_pairs_dir() -> Path:
    """Folder of the user's own pair cards (``*.yaml``)."""
    return home() / "pairs"


def registry_dir() -> Path:
    """The shipped registry data (pair cards, model entries, the embedded default's weights).

    Inside the wheel it is ``w2sd_cli/registry``; in a source checkout it is ``registry/`` beside the package.
    """
    package = Path(__file__).resolve().parent
    for candidate in (package / "registry", package.parent / "registry"):
        if (candidate / "pairs").is_dir():
            return candidate
    return package / "registry"
