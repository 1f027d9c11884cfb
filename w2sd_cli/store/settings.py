"""The store's environment settings, read when used; a bad value is one clear ``InputError``."""

from __future__ import annotations

import os
import re

from w2sd_cli.errors import InputError

UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def env_seconds(name: str, default: float) -> float:
    """A duration from ``name``: ``90``, ``2.5``, ``30s``, ``5m`` or ``1h``; ``default`` when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*(s|m|min|h)?", raw.lower())
    if match is None or float(match[1]) <= 0:
        raise InputError(f"{name}={raw!r} is not a duration w2sd understands. Give a positive number of seconds "
                         f"(e.g. {name}=120) or add a unit: 30s, 5m, 1h. Unset it for the default ({default:g} s).")
    return float(match[1]) * UNITS[match[2] or ""]


def env_megabytes(name: str, default: float) -> float:
    """A size in MB from ``name`` (a number, 0 or more); ``default`` when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise InputError(f"{name}={raw!r} is not a size in MB. Give a number such as {name}=512 (0 turns the "
                         f"spare-space reserve off), or unset it for the default ({default:g} MB).")
    return value


def download_timeout() -> float:
    """Seconds a connection may stay silent before a download stops (``W2SD_DOWNLOAD_TIMEOUT``, default 60)."""
    return env_seconds("W2SD_DOWNLOAD_TIMEOUT", 60.0)


def lock_timeout() -> float:
    """Seconds to wait for another w2sd holding a download lock (``W2SD_LOCK_TIMEOUT``, default 1 h)."""
    return env_seconds("W2SD_LOCK_TIMEOUT", 3600.0)


def min_free_bytes() -> int:
    """Spare space every download leaves on its disk (``W2SD_MIN_FREE_MB``, default 256)."""
    return int(env_megabytes("W2SD_MIN_FREE_MB", 256.0) * 2**20)


def insecure_loopback() -> bool:
    """Whether tokens may go to a loopback host over plain http (``W2SD_TOKEN_OVER_HTTP_LOOPBACK=1``, tests)."""
    return os.environ.get("W2SD_TOKEN_OVER_HTTP_LOOPBACK", "").strip().lower() in {"1", "true", "yes", "on"}
