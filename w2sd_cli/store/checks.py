"""What a downloaded file must be before it is stored: the card's pin, the Hub's listing, and agreement between them.

A Hub listing gives every file's size, plus its sha256 for LFS files or its git blob id (the sha1 of
``blob <size>\\0`` + bytes) for plain files. The card's ``sha256`` pin outranks the listing: a listing that
disagrees with the pin is refused before any byte is fetched, and the bytes are checked against the pin after.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from w2sd_cli.errors import ModelError
from w2sd_cli.store.layout import sha256_file

BLOB_ID_MAX = 64 * 1024 * 1024  # plain (non-LFS) Hub files are capped at 10 MB; anything bigger is read in chunks


class SourceMismatch(ModelError):
    """One source listed or served bytes other than the card pins (or than its own listing says).

    The bytes (if any) were moved to quarantine. ``retry`` says whether fetching from the same source again
    could help (a damaged transfer) or not (the source itself lists other content). Another source (a mirror)
    is tried next either way.
    """

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class Expected:
    """What one file must be: any of its sha256, git blob id and size that are known."""

    sha256: str | None = None
    blob_id: str | None = None
    size: int | None = None


def git_blob_id(path: Path) -> str:
    """The git blob id of a file, as the Hub lists it for plain (non-LFS) files."""
    size = path.stat().st_size
    if size <= BLOB_ID_MAX:
        from huggingface_hub.utils.sha import git_hash

        return git_hash(path.read_bytes())
    import hashlib  # huggingface_hub's git_hash takes bytes in memory only; stream a (never seen) big one

    digest = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def mismatch(path: Path, want: Expected, sha256: str | None = None) -> str | None:
    """How ``path`` differs from ``want`` (size first, then sha256, then blob id), or ``None`` when it matches.

    ``sha256`` is the file's hash when the caller has it already (it is computed otherwise, if needed).
    """
    size = path.stat().st_size
    if want.size is not None and size != want.size:
        return f"{size} bytes where {want.size} were listed"
    if want.sha256:
        got = sha256 or sha256_file(path)
        if got != want.sha256:
            return f"sha256 {got} where {want.sha256} was expected"
    if want.blob_id and not want.sha256:
        got = git_blob_id(path)
        if got != want.blob_id:
            return f"git blob id {got} where the Hub lists {want.blob_id}"
    return None
