"""What a downloaded file really is, decided from its bytes: safetensors, a pickle checkpoint, or junk.

Extensions lie (civitai serves a login page as ``model.safetensors``; a ``.ckpt`` may be safetensors),
so every decision here reads the file's first bytes and, for safetensors, parses the header.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Any, Literal

from w2sd_cli.errors import ModelError

Format = Literal["safetensors", "pickle", "html", "json", "unknown"]

WEIGHT_SUFFIXES = frozenset({".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin"})
MAX_HEADER = 100 * 1024 * 1024  # the safetensors reference implementation's own limit
SNIFF_BYTES = 64


class NotWeightsError(ModelError):
    """A file that cannot be loaded as weights; ``why`` says what it is instead."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(_not_weights(path, why))
        self.path = path
        self.why = why


def sniff(head: bytes) -> Format:
    """The format a file (or response body) starting with ``head`` claims to be.

    Args:
        head: at least the first 9 bytes when available; fewer bytes give ``unknown`` or a text format.

    Returns:
        ``safetensors`` (a plausible header length followed by ``{``), ``pickle`` (pickle protocol 2+ or a
        zip archive, torch's format), ``html``, ``json`` or ``unknown``.
    """
    if len(head) >= 9:
        (length,) = struct.unpack("<Q", head[:8])
        if 2 <= length <= MAX_HEADER and head[8:9] == b"{":
            return "safetensors"
    if (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or head[:4] == b"PK\x03\x04":
        return "pickle"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"<")):
        return "html"
    if text.startswith((b"{", b"[")):
        return "json"
    return "unknown"


def safetensors_header(path: Path) -> dict[str, Any]:
    """The parsed JSON header of a safetensors file, checked as the safetensors loader checks it.

    ``NotWeightsError`` when it does not parse, overruns the file, or contradicts itself (an unknown dtype,
    non-integer or reversed offsets, overlapping tensors or gaps, shape × dtype size ≠ its byte range, bytes
    the tensors do not cover): files the loader refuses are never called usable.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise NotWeightsError(path, "it is shorter than a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > min(MAX_HEADER, size - 8):
            raise NotWeightsError(path, f"its header claims {length} bytes in a {size}-byte file")
        try:
            header = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise NotWeightsError(path, f"its safetensors header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise NotWeightsError(path, "its safetensors header is not a JSON object")
    end = 8 + length + max((_end(v) for k, v in header.items() if k != "__metadata__"), default=0)
    if end > size:
        raise NotWeightsError(path, f"its tensors need {end} bytes but the file has {size} (truncated?)")
    _loader_check(path)
    return header


def _end(entry: Any) -> int:
    """A tensor entry's end offset when it is a plain integer (the loader check judges the rest)."""
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets):
        return max(int(offsets[1]), 0)
    return 0


def _loader_check(path: Path) -> None:
    """Open the file with the safetensors library itself (header only, nothing is read into memory)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except SafetensorError as err:
        text = str(err).removeprefix("Error while deserializing header: ")
        text = "".join(c if c.isprintable() else " " for c in text)[:300]
        raise NotWeightsError(path, f"the safetensors loader refuses its header ({text})") from None


def check_weights_file(path: Path, allow_pickle: bool = False) -> Literal["safetensors", "pickle"]:
    """Refuse a weights file that is not safetensors (or, with ``allow_pickle``, a pickle checkpoint).

    Args:
        path: the file to check; its name is only used in messages.
        allow_pickle: accept a pickle checkpoint (to be loaded with ``load_pickle_checkpoint``).

    Returns:
        The file's real format.
    """
    with path.open("rb") as fh:
        kind = sniff(fh.read(SNIFF_BYTES))
    if kind == "safetensors":
        safetensors_header(path)
        return "safetensors"
    if kind == "pickle":
        if not allow_pickle:
            raise ModelError(
                f"{path} is a pickle checkpoint, which can run arbitrary code when loaded. w2sd loads only "
                "safetensors by default; if you trust its source, pass --allow-pickle (it is then loaded with "
                "torch.load(weights_only=True)), or convert it to safetensors."
            )
        return "pickle"
    reasons = {"html": "it is an HTML page (a login or error page?)", "json": "it is a JSON document (an error "
               "message from the server?)", "unknown": "it is neither safetensors nor a pickle checkpoint"}
    raise NotWeightsError(path, reasons[kind])


def load_pickle_checkpoint(path: Path) -> Any:
    """Load a pickle checkpoint the only way w2sd allows: ``torch.load(weights_only=True)`` on the CPU."""
    import pickle

    import torch

    try:
        with path.open("rb") as fh:  # a file object: torch must not pick a loader from the extension
            return torch.load(fh, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"{path} could not be loaded as plain weights ({first}). It may contain code objects; w2sd will not "
            "unpickle those. Ask the author for a safetensors file."
        ) from None


def _not_weights(path: Path, why: str) -> str:
    return (f"{path} is not a usable weights file: {why}. w2sd will not load it. If it was downloaded, run "
            "`w2sd pull` for its pair: a damaged copy is moved aside and fetched again, and a file that is broken "
            "at its source is named as such (then point the card at another source or mirror). If it came from "
            "civitai, check that the model needs no login (set CIVITAI_TOKEN).")
