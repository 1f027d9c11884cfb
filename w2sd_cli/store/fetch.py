"""URL downloads into the content-addressed store: streamed to a ``.part``, resumed, fsynced, hashed, renamed.

Only the standard library's ``http.client`` is used, so w2sd decides every redirect itself: the civitai token
goes to the civitai host the card names and never to the storage host a download is redirected to.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from w2sd_cli import __version__
from w2sd_cli.errors import DownloadError, ModelError
from w2sd_cli.files import fsync_dir
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
from w2sd_cli.store.safety import sniff

Progress = Callable[[dict[str, Any]], None]
REDIRECTS = {301, 302, 303, 307, 308}
MAX_RESUMES = 5
TOKEN_HINT = "this file needs a civitai API token: set CIVITAI_TOKEN (made at https://civitai.com/user/account)"


class _Cut(Exception):
    """The body stopped early; ``progressed`` says whether this attempt wrote anything."""

    def __init__(self, progressed: bool) -> None:
        self.progressed = progressed


def download_timeout() -> float:
    """Seconds a connection may stay silent before the download is stopped (``W2SD_DOWNLOAD_TIMEOUT``)."""
    return float(os.environ.get("W2SD_DOWNLOAD_TIMEOUT", "60"))


def is_civitai(host: str) -> bool:
    """Whether ``host`` is civitai (``civitai.com`` and its subdomains, plus ``W2SD_CIVITAI_HOSTS``)."""
    host = host.lower()
    extra = {h.strip().lower() for h in os.environ.get("W2SD_CIVITAI_HOSTS", "").split(",") if h.strip()}
    return host in extra or host == "civitai.com" or host.endswith(".civitai.com")


def redact(url: str) -> str:
    """``url`` without credentials or query string (signed URLs and ``?token=`` stay out of messages)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def fetch_url(url: str, sha256: str, *, size: int | None = None, progress: Progress | None = None) -> Path:
    """The stored file for ``sha256``, downloading it from ``url`` first if the store lacks it.

    Args:
        url: an http(s) URL; redirects are followed, the civitai token only goes to the first host.
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
        label = Path(urlsplit(url).path).name or sha256[:12]
        _download_to_part(url, part, size, progress, label)
        return _finish(url, part, sha256, size, progress, label)


def _download_to_part(url: str, part: Path, size: int | None, progress: Progress | None, label: str) -> None:
    resumes = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset == size:
            return
        if size is not None and offset > size:
            part.unlink()
            offset = 0
        try:
            _stream_once(url, part, offset, size, progress, label)
            return
        except _Cut as cut:
            resumes += 1
            if not cut.progressed or resumes > MAX_RESUMES:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"The download of {label} from {redact(url)} keeps breaking off ({kept} bytes kept in {part}). "
                    "Check your connection and run the same command again: it resumes where it stopped."
                ) from None


def _stream_once(url: str, part: Path, offset: int, size: int | None, progress: Progress | None, label: str) -> None:
    response, conn = _open(url, offset)
    try:
        if response.status == 416 and offset:
            if _range_total(response) == offset:
                return  # the .part was already complete
            part.unlink()
            raise _Cut(progressed=True)
        if response.status not in (200, 206):
            raise _http_error(url, response)
        if response.status == 200 and offset:
            offset = 0
        if response.status == 206 and _range_start(response) != offset:
            part.unlink()  # a range we did not ask for: start again rather than splice
            raise _Cut(progressed=True)
        length = response.getheader("Content-Length")
        total = offset + int(length) if length and length.isdigit() else size
        first = _read(response, url, part, offset)
        if offset == 0:
            _refuse_text(url, response, first)
        _write_body(response, first, part, offset, total, progress, label, url)
    finally:
        conn.close()


def _write_body(response: http.client.HTTPResponse, first: bytes, part: Path, offset: int, total: int | None,
                progress: Progress | None, label: str, url: str) -> None:
    done = offset
    mode = "r+b" if offset else "wb"
    if not part.exists():
        mode = "wb"
    with part.open(mode) as fh:
        fh.seek(offset)
        fh.truncate()
        chunk = first
        try:
            while chunk:
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
            f"The server at {redact(url)} sent nothing for {download_timeout():.0f} s ({done} bytes kept in {part}). "
            "Run the same command again to resume; raise W2SD_DOWNLOAD_TIMEOUT on a slow connection."
        ) from None
    except (http.client.IncompleteRead, ConnectionError, http.client.HTTPException):
        if fh is not None:
            _keep(fh)
        raise _Cut(progressed) from None


def _open(url: str, offset: int) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
    """GET ``url`` from ``offset``, following redirects; the token is sent to the first host only."""
    first_host = urlsplit(url).hostname or ""
    current = url
    for _ in range(10):
        parts = urlsplit(current)
        host = parts.hostname or ""
        headers = {"User-Agent": f"w2sd/{__version__}", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        token = os.environ.get("CIVITAI_TOKEN")
        if token and host == first_host and is_civitai(host):
            headers["Authorization"] = f"Bearer {token}"
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(host, parts.port, timeout=download_timeout())
        try:
            conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers=headers)
            response = conn.getresponse()
        except TimeoutError:
            conn.close()
            raise DownloadError(f"{redact(current)} did not answer within {download_timeout():.0f} s. Check your "
                                "connection and run the same command again.") from None
        except OSError as err:
            conn.close()
            raise DownloadError(f"Cannot reach {redact(current)} ({err.strerror or err}). Check your connection "
                                "(and any proxy), then run the same command again.") from None
        if response.status in REDIRECTS and response.getheader("Location"):
            current = urljoin(current, response.getheader("Location", ""))
            response.read()
            conn.close()
            continue
        return response, conn
    raise DownloadError(f"{redact(url)} redirected more than 10 times; the link is probably broken.")


def _http_error(url: str, response: http.client.HTTPResponse) -> DownloadError:
    host = urlsplit(url).hostname or ""
    status = response.status
    detail = _server_message(response.read(4096))
    if status in (401, 403) and is_civitai(host):
        why = (f"civitai refused the token in CIVITAI_TOKEN (HTTP {status}); check that it is valid and that your "
               "account may download this model" if os.environ.get("CIVITAI_TOKEN")
               else f"HTTP {status}: {TOKEN_HINT}")
    elif status in (401, 403):
        why = f"HTTP {status}: the server refused access (w2sd sends credentials only to civitai)"
    elif status == 404:
        why = "HTTP 404: the file is not there; the card's url may be out of date"
    else:
        why = f"HTTP {status} {response.reason}"
    suffix = f" The server said: {detail}." if detail else ""
    return DownloadError(f"Cannot download {redact(url)}: {why}.{suffix} Nothing was saved.")


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
        raise DownloadError(f"{redact(url)} answered with {what}, not a weights file, so nothing was saved.{said}"
                            f"{hint} Check the card's url.")


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
    token = os.environ.get("CIVITAI_TOKEN")
    if token:
        text = text.replace(token, "***")
    return " ".join(text.split())[:200]


def _finish(url: str, part: Path, sha256: str, size: int | None, progress: Progress | None, label: str) -> Path:
    """Hash the complete ``.part``; quarantine it on a mismatch, else rename it into the store."""
    got_size = part.stat().st_size
    total = got_size

    def hashing(done: int) -> None:
        if progress:
            progress({"file": label, "bytes_done": done, "bytes_total": total, "status": "verifying"})

    digest = sha256_file(part, hashing)
    if digest != sha256 or (size is not None and got_size != size):
        bad = quarantine(part, "mismatch")
        raise ModelError(
            f"{label} from {redact(url)} does not match the card: expected sha256 {sha256}"
            f"{f' and {size} bytes' if size else ''}, got {digest} and {got_size} bytes. The download was moved to "
            f"{bad}; nothing else was touched. If the file changed upstream, update the card's sha256."
        )
    with part.open("rb") as fh:
        kind = sniff(fh.read(64))
    name = {"safetensors": "model.safetensors", "pickle": "model.ckpt"}.get(kind, label)
    final_dir = blob_dir(sha256)
    staging = final_dir.with_name(f".{sha256}.staging")
    staging.mkdir(parents=True, exist_ok=True)
    os.replace(part, staging / name)
    fsync_dir(staging)
    os.replace(staging, final_dir)
    fsync_dir(final_dir.parent)
    record_verified(final_dir / name, sha256)
    if progress:
        progress({"file": label, "bytes_done": got_size, "bytes_total": got_size, "status": "done"})
    return final_dir / name
