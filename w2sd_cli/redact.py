"""Secrets never reach a recipe, a log or a terminal: URLs lose their credentials and token parameters."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_PARAMS = re.compile(r"(token|key|secret|signature|sig|auth|password|passwd|credential)", re.IGNORECASE)
URL = re.compile(r"\bhttps?://[^\s\"'<>]+")
REDACTED = "REDACTED"


def redact_url(url: str) -> str:
    """``url`` with userinfo and secret-looking query values replaced by ``REDACTED``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if SECRET_PARAMS.search(k) else v) for k, v in pairs], safe=REDACTED)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL inside ``text`` redacted."""
    return URL.sub(lambda m: redact_url(m.group(0)), text)


def redact_data(value: Any) -> Any:
    """A JSON-like structure with every string's URLs redacted (for recipes and ``--json`` output)."""
    if isinstance(value, str):
        return redact_text(value) if "://" in value else value
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value
