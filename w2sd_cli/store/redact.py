"""Secrets stay out of every URL w2sd records or prints: one helper for the whole program.

``redact_url`` drops credentials (``user:password@``), replaces the values of secret-looking query parameters
(``token``, ``key``, signatures, ...) with ``***`` and masks the current values of the token environment
variables wherever they appear. ``scrub`` does the last part for any text.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

SECRET_ENV = ("CIVITAI_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
SECRET_PARAM = re.compile(r"token|key|sig|secret|pass|auth|cred|session|amz|goog|policy|expires|jwt", re.I)
MASK = "***"


def scrub(text: str) -> str:
    """``text`` with the values of the token environment variables replaced by ``***``."""
    for name in SECRET_ENV:
        value = os.environ.get(name, "").strip()
        if len(value) >= 4:
            text = text.replace(value, MASK)
    return text


def redact_url(url: str) -> str:
    """``url`` safe to record or print: no userinfo, secret query values masked, token values masked.

    Args:
        url: any URL (a value that does not parse is only scrubbed).

    Returns:
        The URL with ``user:pass@`` removed and e.g. ``?token=abc&type=Model`` turned into
        ``?token=***&type=Model``.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return scrub(re.sub(r"//[^/@]*@", "//", url))
    netloc = f"[{host}]" if ":" in host else host
    if port:
        netloc += f":{port}"
    query = "&".join(f"{k}={MASK if SECRET_PARAM.search(k) else v}"
                     for k, v in parse_qsl(parts.query, keep_blank_values=True))
    return scrub(urlunsplit((parts.scheme, netloc, parts.path, query, "")))


URL = re.compile(r"\bhttps?://[^\s\"'<>]+")


def redact_data(value: object) -> object:
    """A JSON-like structure with every URL inside its strings redacted (recipes, ``--json`` summaries)."""
    if isinstance(value, str):
        return scrub(URL.sub(lambda m: redact_url(m.group(0)), value)) if "://" in value else scrub(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value
