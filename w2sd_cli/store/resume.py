"""Resuming a partial download safely: the ``If-Range`` validator kept beside it, and re-encoded bodies refused."""

from __future__ import annotations

import http.client
from pathlib import Path

from w2sd_cli.errors import DownloadError
from w2sd_cli.store import contain
from w2sd_cli.store.redact import redact_url, scrub


def refuse_encoding(url: str, response: http.client.HTTPResponse, label: str) -> None:
    """Refuse a body sent with a ``Content-Encoding`` (gzip...) although w2sd asked for ``identity``."""
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise DownloadError(f"{redact_url(url)} sent {label} with Content-Encoding {scrub(encoding)[:40]!r} although "
                            "w2sd asked for the file's own bytes (identity), so nothing of it was saved. A proxy or "
                            "the server is re-encoding files; run the command again later, or give the model a "
                            "mirror.")


def validator_path(part: Path) -> Path:
    """Where the ``If-Range`` validator of a partial download is kept."""
    return part.with_name(part.name + ".if-range")


def read_validator(part: Path) -> str | None:
    """The validator kept for ``part`` (only while ``part`` itself exists)."""
    try:
        text = validator_path(part).read_text(encoding="ascii").strip() if part.exists() else ""
    except (OSError, UnicodeDecodeError):
        return None
    return text if text and text.isprintable() and len(text) <= 200 else None


def keep_validator(part: Path, validator: str | None) -> None:
    """Remember (or forget) the validator of the bytes ``part`` is receiving."""
    from w2sd_cli.files import write_text_atomic

    path = validator_path(part)
    if validator and validator.isprintable() and len(validator) <= 200:
        part.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, validator)
    elif path.is_symlink() or path.exists():
        contain.remove(path)


def validator_of(response: http.client.HTTPResponse) -> str | None:
    """What ``If-Range`` may carry for this body: a strong ETag, else its Last-Modified date."""
    etag = (response.getheader("ETag") or "").strip()
    if etag.startswith('"') and etag.endswith('"') and len(etag) > 2:
        return etag
    return (response.getheader("Last-Modified") or "").strip() or None
