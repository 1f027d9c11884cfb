"""HTTP downloads for the store: streamed to a partial file, resumed with ``Range``, fsynced, hashed, renamed.

Only the standard library's ``http.client`` is used, so w2sd decides every redirect itself: a token goes to
the exact origin (scheme, host, port) it is meant for, over https, and never after a redirect leaves that
origin. URL references land in the content-addressed store; ``hub`` uses ``download_to_part`` for Hub files.
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from w2sd_cli import __version__
from w2sd_cli.errors import DownloadError, ModelError
from w2sd_cli.files import fsync_dir
from w2sd_cli.store import contain
from w2sd_cli.store.checks import SourceMismatch
from w2sd_cli.store.layout import (
    CHUNK,
    blob_dir,
    blob_lock,
    find_blob,
    part_path,
    quarantine,
    record_verified,
    sha256_file,
)
from w2sd_cli.store.redact import redact_url, scrub
from w2sd_cli.store.resume import keep_validator, read_validator, refuse_encoding, validator_of, validator_path
from w2sd_cli.store.safety import sniff
from w2sd_cli.store.settings import download_timeout, insecure_loopback
from w2sd_cli.store.usable import broken_at_source, unusable_reason

Progress = Callable[[dict[str, Any]], None]
REDIRECTS = {301, 302, 303, 307, 308}
MAX_RESUMES = 5
TOKEN_HINT = "this file needs a civitai API token: set CIVITAI_TOKEN (made at https://civitai.com/user/account)"
Origin = tuple[str, str, int]

redact = redact_url  # the name older callers import
STOP = threading.Event()  # set by a parallel pull on Ctrl-C: every download keeps its part and stops


@dataclass(frozen=True)
class Auth:
    """A credential and the one origin it may be sent to."""

    origin: Origin
    header: str


class _Cut(Exception):
    """The body stopped early; ``progressed`` says whether this attempt wrote anything."""

    def __init__(self, progressed: bool) -> None:
        self.progressed = progressed


def origin(url: str) -> Origin:
    """``(scheme, host, port)`` of ``url``, with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def may_carry_token(url: str) -> bool:
    """Whether a token may be sent to ``url`` at all: https, or a loopback host under the test override."""
    scheme, host, _ = origin(url)
    return scheme == "https" or (scheme == "http" and is_loopback(host) and insecure_loopback())


def is_civitai(host: str) -> bool:
    """Whether ``host`` is civitai (``civitai.com`` and its subdomains, plus ``W2SD_CIVITAI_HOSTS``)."""
    host = host.lower()
    extra = {h.strip().lower() for h in os.environ.get("W2SD_CIVITAI_HOSTS", "").split(",") if h.strip()}
    return host in extra or host == "civitai.com" or host.endswith(".civitai.com")


def civitai_auth(url: str) -> Auth | None:
    """``CIVITAI_TOKEN`` for ``url``'s own origin when that is civitai and the scheme is safe; else ``None``."""
    token = os.environ.get("CIVITAI_TOKEN", "").strip()
    if token and is_civitai(origin(url)[1]) and may_carry_token(url):
        return Auth(origin(url), f"Bearer {token}")
    return None


def file_label(url: str, fallback: str) -> str:
    """A safe file name taken from ``url``'s last path segment (``fallback`` when there is none)."""
    segments = [unquote(s) for s in urlsplit(url).path.split("/")]
    name = next((s for s in reversed(segments) if s), "")
    if name in (".", "..") or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        return fallback
    return name[:200]


def fetch_url(url: str, sha256: str, *, size: int | None = None, progress: Progress | None = None) -> Path:
    """The stored file for ``sha256``, downloading it from ``url`` first if the store lacks it.

    Args:
        url: an http(s) URL; redirects are followed, the civitai token only goes to the card's origin.
        sha256: the hash the card pins; the file is accepted only if it matches.
        size: the expected size in bytes, if the card gives one.
        progress: called with ``{"file", "bytes_done", "bytes_total", "status"}`` dicts.

    Returns:
        The finished file, ``store/blobs/<sha256>/<name>``.
    """
    found = find_blob(sha256)
    if found is not None:
        return found
    with blob_lock(sha256):
        found = find_blob(sha256)
        if found is not None:
            return found
        part = part_path(sha256)
        part.parent.mkdir(parents=True, exist_ok=True)
        label = file_label(url, sha256[:12])
        download_to_part(url, part, size, progress, label, civitai_auth(url))
        return _finish(url, part, sha256, size, progress, label)


def download_to_part(url: str, part: Path, size: int | None, progress: Progress | None, label: str,
                     auth: Auth | None, weights: bool = True) -> None:
    """Bring ``part`` to the whole body of ``url``, resuming from what it holds; cuts are retried a few times.

    Args:
        url: where the bytes come from.
        part: the partial file (kept on every failure so the next run resumes).
        size: the expected size, when known.
        progress: the ``{"file", "bytes_done", "bytes_total", "status"}`` observer.
        label: the file's name in events and messages.
        auth: a credential for its one origin, or ``None``.
        weights: refuse an HTML or JSON body (a login page) instead of saving it.

    The first answer's strong ETag (or Last-Modified) is kept beside the part (``<part>.if-range``) and every
    resume sends it as ``If-Range``, so a file that changed meanwhile comes back whole instead of spliced.
    """
    resumes = 0
    state = {"validator": read_validator(part)}
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset == size:
            contain.remove(validator_path(part))
            return
        if size is not None and offset > size:
            contain.remove(part)
            offset = 0
        try:
            _stream_once(url, part, offset, size, progress, label, auth, weights, state)
            contain.remove(validator_path(part))
            return
        except _Cut as cut:
            resumes += 1
            if not cut.progressed or resumes > MAX_RESUMES:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"The download of {label} from {redact_url(url)} keeps breaking off ({kept} bytes kept in "
                    f"{part}). Check your connection and run the same command again: it resumes where it stopped."
                ) from None


def _stream_once(url: str, part: Path, offset: int, size: int | None, progress: Progress | None, label: str,
                 auth: Auth | None, weights: bool, state: dict[str, str | None]) -> None:
    response, conn = _open(url, offset, auth, state["validator"] if offset else None)
    try:
        if response.status == 416 and offset:
            if _range_total(response) == offset:
                return  # the part was already complete
            contain.remove(part)
            raise _Cut(progressed=True)
        if response.status not in (200, 206):
            raise _http_error(url, response)
        refuse_encoding(url, response, label)
        if response.status == 200:
            state["validator"] = validator_of(response)
            keep_validator(part, state["validator"])
        if response.status == 200 and offset:
            offset = 0
        if response.status == 206 and _range_start(response) != offset:
            contain.remove(part)  # a range we did not ask for: start again rather than splice
            raise _Cut(progressed=True)
        length = response.getheader("Content-Length")
        total = offset + int(length) if length and length.isdigit() else size
        if length and length.isdigit():
            from w2sd_cli.store.plan import check_free

            check_free(part.parent, int(length) - (part.stat().st_size - offset if part.exists() else 0),
                       f"Downloading {label} from {redact_url(url)}")
        first = _read(response, url, part, offset)
        if offset == 0 and weights:
            _refuse_text(url, response, first)
        _write_body(response, first, part, offset, total, progress, label, url)
    finally:
        conn.close()


def _write_body(response: http.client.HTTPResponse, first: bytes, part: Path, offset: int, total: int | None,
                progress: Progress | None, label: str, url: str) -> None:
    done = offset
    mode = "r+b" if offset and part.exists() else "wb"
    with part.open(mode) as fh:
        fh.seek(offset)
        fh.truncate()
        chunk = first
        try:
            while chunk:
                if STOP.is_set():
                    _keep(fh)
                    raise KeyboardInterrupt
                write_chunk(fh, chunk)
                done += len(chunk)
                if progress:
                    progress({"file": label, "bytes_done": done, "bytes_total": total, "status": "downloading"})
                chunk = _read(response, url, part, done, progressed=done > offset, fh=fh)
            fh.flush()
            os.fsync(fh.fileno())
            if total is not None and done < total:
                raise _Cut(progressed=done > offset)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                _keep(fh)
                raise DownloadError(
                    f"The disk holding {part.parent} is full: {done} bytes of {label} are kept in {part}. Free "
                    f"some space (`w2sd cache prune --dry-run` shows what w2sd can delete) and run the same command "
                    "again: it resumes from there."
                ) from None
            if err.errno == errno.EFBIG:
                _keep(fh)
                raise DownloadError(
                    f"The filesystem holding {part.parent} cannot store a file as big as {label} (it stopped at "
                    f"{done} bytes: file too large). Point HF_HOME / W2SD_HOME at a filesystem without a small "
                    "file-size limit (not FAT32, no low `ulimit -f`) and run the same command again."
                ) from None
            raise


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """The first byte of a 206 body, from ``Content-Range: bytes START-END/TOTAL``."""
    value = (response.getheader("Content-Range") or "").removeprefix("bytes ").split("-")[0]
    return int(value) if value.isdigit() else None


def _range_total(response: http.client.HTTPResponse) -> int | None:
    """The full size a 416 reports in ``Content-Range: bytes */TOTAL``."""
    value = (response.getheader("Content-Range") or "").rpartition("/")[2]
    return int(value) if value.isdigit() else None


def write_chunk(fh: Any, chunk: bytes) -> None:
    """Write one chunk of a download (a seam the ENOSPC test replaces)."""
    fh.write(chunk)


def _keep(fh: Any) -> None:
    try:
        fh.flush()
        os.fsync(fh.fileno())
    except OSError:
        pass


def _read(response: http.client.HTTPResponse, url: str, part: Path, done: int, progressed: bool = False,
          fh: Any = None) -> bytes:
    try:
        return response.read1(CHUNK) if hasattr(response, "read1") else response.read(CHUNK)
    except TimeoutError:
        if fh is not None:
            _keep(fh)
        raise DownloadError(
            f"The server at {redact_url(url)} sent nothing for {download_timeout():g} s ({done} bytes kept in "
            f"{part}). Run the same command again to resume; raise W2SD_DOWNLOAD_TIMEOUT on a slow connection."
        ) from None
    except (http.client.IncompleteRead, ConnectionError, http.client.HTTPException):
        if fh is not None:
            _keep(fh)
        raise _Cut(progressed) from None


class FinalResponse(http.client.HTTPResponse):
    """An HTTP response that skips every interim 1xx answer (``103 Early Hints``...), not only ``100 Continue``."""

    def _read_status(self) -> tuple[str, int, str]:
        while True:
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not 100 < status < 200 or status == 101:
                return version, status, reason
            http.client.parse_headers(self.fp)  # the interim answer's headers, e.g. Link: preload hints


def _open(url: str, offset: int, auth: Auth | None,
          validator: str | None = None) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
    """GET ``url`` from ``offset``, following redirects; ``auth`` goes to its origin only, until we leave it.

    A resume sends ``Range`` with ``If-Range: validator`` (when known): a server whose file changed answers
    200 with the whole new body, which replaces the partial bytes.
    """
    current = url
    trusted = auth is not None
    for _ in range(10):
        parts = urlsplit(current)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DownloadError(f"{redact_url(url)} redirected to {redact_url(current)}, which w2sd cannot "
                                "download from (only http and https). Check the card's url.")
        headers = {"User-Agent": f"w2sd/{__version__}", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if validator:
                headers["If-Range"] = validator
        trusted = trusted and auth is not None and origin(current) == auth.origin and may_carry_token(current)
        if trusted and auth is not None:
            headers["Authorization"] = auth.header
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=download_timeout())
        conn.response_class = FinalResponse
        try:
            conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers=headers)
            response = conn.getresponse()
        except TimeoutError:
            conn.close()
            raise DownloadError(f"{redact_url(current)} did not answer within {download_timeout():g} s. Check your "
                                "connection and run the same command again.") from None
        except OSError as err:
            conn.close()
            raise DownloadError(f"Cannot reach {redact_url(current)} ({scrub(str(err.strerror or err))}). Check "
                                "your connection (and any proxy), then run the same command again.") from None
        if response.status in REDIRECTS and response.getheader("Location"):
            current = urljoin(current, response.getheader("Location", ""))
            response.read()
            conn.close()
            continue
        return response, conn
    raise DownloadError(f"{redact_url(url)} redirected more than 10 times; the link is probably broken.")


def _http_error(url: str, response: http.client.HTTPResponse) -> DownloadError:
    host = urlsplit(url).hostname or ""
    status = response.status
    detail = _server_message(response.read(4096))
    if status in (401, 403) and is_civitai(host):
        if os.environ.get("CIVITAI_TOKEN") and not may_carry_token(url):
            why = (f"HTTP {status}: CIVITAI_TOKEN is set but w2sd sends it only over https, and this url is "
                   f"{urlsplit(url).scheme}; use the https address")
        elif os.environ.get("CIVITAI_TOKEN"):
            why = (f"civitai refused the token in CIVITAI_TOKEN (HTTP {status}); check that it is valid and that "
                   "your account may download this model")
        else:
            why = f"HTTP {status}: {TOKEN_HINT}"
    elif status in (401, 403):
        why = f"HTTP {status}: the server refused access (w2sd sends credentials only to the origin they are for)"
    elif status == 404:
        why = "HTTP 404: the file is not there; the card's url may be out of date"
    else:
        why = f"HTTP {status} {scrub(response.reason or '')}".rstrip()
    suffix = f" The server said: {detail}." if detail else ""
    return DownloadError(f"Cannot download {redact_url(url)}: {why}.{suffix} Nothing was saved.")


def _refuse_text(url: str, response: http.client.HTTPResponse, first: bytes) -> None:
    """Refuse an HTML or JSON body where a weights file was expected; nothing of it is written."""
    ctype = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    kind = sniff(first[:64])
    if kind in ("safetensors", "pickle"):
        return
    if kind in ("html", "json") or ctype in ("text/html", "application/json"):
        host = urlsplit(url).hostname or ""
        what = "a JSON message" if kind == "json" or ctype == "application/json" else "an HTML page"
        detail = _server_message(first)
        hint = f" Most likely {TOKEN_HINT}." if is_civitai(host) and not os.environ.get("CIVITAI_TOKEN") else ""
        said = f" It said: {detail}." if detail else ""
        raise DownloadError(f"{redact_url(url)} answered with {what}, not a weights file, so nothing was saved."
                            f"{said}{hint} Check the card's source (or give the model a mirror).")


def _server_message(body: bytes) -> str:
    """A short, single-line version of an error body (the ``error``/``message`` field of JSON if any)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            text = str(data.get("error") or data.get("message") or data.get("detail") or text)
    except ValueError:
        if text.lstrip().startswith("<"):
            return ""
    text = "".join(c if c.isprintable() else " " for c in scrub(text))
    return " ".join(text.split())[:200]


def _finish(url: str, part: Path, sha256: str, size: int | None, progress: Progress | None, label: str) -> Path:
    """Hash the complete part; quarantine it on a mismatch or when it is not usable weights, else store it."""
    got_size = part.stat().st_size
    total = got_size

    def hashing(done: int) -> None:
        if progress:
            progress({"file": label, "bytes_done": done, "bytes_total": total, "status": "verifying"})

    digest = sha256_file(part, hashing)
    if digest != sha256 or (size is not None and got_size != size):
        bad = quarantine(part, "mismatch")
        raise SourceMismatch(
            f"{label} from {redact_url(url)} does not match the card: expected sha256 {sha256}"
            f"{f' and {size} bytes' if size else ''}, got {digest} and {got_size} bytes. The download was moved to "
            f"{bad}; nothing else was touched. If the file changed upstream, update the card's sha256.",
            retry=True)
    unusable = unusable_reason(part)  # a card that pins a truncated file: never stored as verified
    if unusable is not None:
        bad = quarantine(part, "unusable")
        raise ModelError(broken_at_source(label, redact_url(url), unusable, bad))
    with part.open("rb") as fh:
        kind = sniff(fh.read(64))
    name = {"safetensors": "model.safetensors", "pickle": "model.ckpt"}.get(kind, label)
    final_dir = blob_dir(sha256)
    staging = final_dir.with_name(f".{sha256}.staging")
    try:
        staging.mkdir(parents=True, exist_ok=True)
        contain.move(part, staging / name)
        fsync_dir(staging)
        contain.move(staging, final_dir)
        fsync_dir(final_dir.parent)
    finally:
        if staging.exists():
            contain.remove(staging)
    record_verified(final_dir / name, sha256)
    if progress:
        progress({"file": label, "bytes_done": got_size, "bytes_total": got_size, "status": "done"})
    return final_dir / name
