"""Ordinary failures as one paragraph each: an ``OSError`` by errno, an HTTP protocol error, an invalid URL.

``errors.from_os_error`` and ``errors.from_exception`` are the public doors; the CLI edge sends everything
that is not a ``W2SDError`` through ``map_exception`` before calling it a bug. Every text names the path or
the URL (secrets masked) and the fix. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path

from w2sd_cli.errors import DownloadError, PathError, W2SDError

HTTP_LIBRARIES = ("httpx", "httpcore", "h11", "urllib3", "requests")
SPACE = ("Free some space (`w2sd cache prune --dry-run` shows what the model store can give back) or choose a "
         "folder on another disk; finished work is kept, so the same command resumes.")
ELSEWHERE = "Choose a folder you can write to (--out, or W2SD_HOME for the model store)"
PROBLEMS: dict[int, tuple[str, str]] = {
    errno.EACCES: ("permission denied", f"{ELSEWHERE}, or fix its permissions (`ls -ld`, chmod, chown)."),
    errno.EPERM: ("the operation is not permitted (the file or folder may be immutable or append-only, or "
                  "protected by a security policy)",
                  f"{ELSEWHERE}, or lift the flag (`lsattr -d`, then `chattr -i` / `chattr -a`)."),
    errno.EROFS: ("it is on a read-only file system", f"{ELSEWHERE} on a writable disk, or remount it read-write."),
    errno.ENOSPC: ("the disk is full", SPACE),
    errno.EDQUOT: ("your disk quota is used up", f"`quota -s` shows the limit. {SPACE}"),
    errno.EFBIG: ("the file is larger than this file system or `ulimit -f` allows (FAT32 stops at 4 GiB)",
                  "Use a folder on an ext4, XFS, APFS or NTFS disk, or raise `ulimit -f`."),
    errno.EISDIR: ("it is a folder where a file is needed", "Give a file path, or move the folder away."),
    errno.ELOOP: ("its symbolic links go round in a loop", "Fix the links (`ls -l` each part of the path)."),
    errno.EMFILE: ("too many files are open", "Raise the limit (`ulimit -n 4096`) and run the same command again."),
    errno.ENFILE: ("the system has too many files open", "Close other programs, then run the same command again."),
    errno.EIO: ("the disk reported an input/output error",
                "The disk or network file system is failing: check it (`dmesg`), then run the same command again."),
    errno.EBUSY: ("it is busy (used by another program, or a mount point)", "Close what uses it, or choose "
                  "another path."),
    errno.ETXTBSY: ("it is busy (a running program)", "Close what uses it, or choose another path."),
    errno.EXDEV: ("a file cannot be moved across disks here", "Keep the folder and its temporary files on one disk."),
    errno.EINVAL: ("the file system refused the name (FAT and NTFS disks refuse characters such as : * ? \" < > |)",
                   "Choose a plainer name, or a folder on another disk."),
    errno.ENOMEM: ("the system ran out of memory", "Close other programs (or use a smaller --batch-size) and run "
                   "the same command again."),
    errno.ESTALE: ("the network file system lost track of it (stale file handle)", "Remount it, then run the "
                   "same command again."),
}
SECRET_QUERY = re.compile(r"([?&;][^=&\s'\"#?;]*=)([^&\s'\"#;),]+)")


def os_error(err: OSError, path: str | os.PathLike[str] | None = None, url: str | None = None,
             action: str | None = None) -> W2SDError:
    """``errors.from_os_error``: a ``PathError`` for files, a ``DownloadError`` for the network."""
    if _is_network(err) or (url is not None and err.filename is None):
        return DownloadError(mask(_network(err, url)))
    shown = path if path is not None else (err.filename2 or err.filename)
    where = Path(os.fsdecode(shown)) if isinstance(shown, str | bytes | os.PathLike) else None
    code = err.errno or 0
    if code == errno.EPIPE:
        return PathError("The program reading w2sd's output closed the pipe before w2sd was done. Let it read "
                         "everything (or send the output to a file).")
    problem, fix = _problem(code, where, err, action)
    verb = "write" if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS) else "use"
    subject = f"Cannot {action or verb}" + (f" {_show(where)}" if where is not None else "")
    return PathError(mask(f"{subject}: {problem}. {fix}"))


def _problem(code: int, where: Path | None, err: OSError, action: str | None) -> tuple[str, str]:
    """What is wrong with ``where`` and how to fix it, for the errnos a path can give."""
    base = _existing_ancestor(where)
    if code in (errno.ENOENT, errno.EPERM, errno.EACCES) and base is not None and base != where \
            and base.is_dir() and _virtual(base):
        return (f"{_show(base)} is on a virtual file system where nothing can be made (as under /proc and /sys)",
                "Choose a folder on a real disk (--out).")
    if code in PROBLEMS:
        return PROBLEMS[code]
    if code == errno.ENAMETOOLONG:
        longest = max((len(os.fsencode(p)) for p in (where.parts if where else ())), default=0)
        return (f"a name in it is too long for the file system (the longest part has {longest} bytes, the path "
                f"{len(os.fsencode(str(where or '')))}; most disks allow 255 a name and 4096 a path)",
                "Use a shorter path (--out).")
    if code == errno.ENOTDIR:
        blocker = _file_on_the_way(where)
        problem = f"{_show(blocker)} is a file, not a folder" if blocker else "a part of the path is not a folder"
        return problem, "Choose another path, or move that file away."
    if code == errno.EEXIST and where is not None and where.exists() and not where.is_dir():
        return "it is a file, not a folder", "Give a folder path, or move the file away."
    if code == errno.EEXIST:
        return "it already exists", "Remove it, or choose another name."
    if code == errno.ENOENT:
        return _missing(where, action)
    name = errno.errorcode.get(code, "no errno")
    return (f"{err.strerror or err} ({name})", "Check the path and the disk, then run the same command again.")


def _missing(where: Path | None, action: str | None) -> tuple[str, str]:
    """ENOENT: a missing path, or a folder that cannot be made where it was asked for."""
    if action and action.startswith(("write", "create", "make")):
        return "the folder cannot be created there", "Choose a folder on a real disk (--out)."
    return "it does not exist (or a folder on the way to it does not)", "Check the path."


def _existing_ancestor(where: Path | None) -> Path | None:
    """``where`` or its deepest ancestor that exists."""
    if where is None:
        return None
    for candidate in (where, *where.parents):
        try:
            if os.path.lexists(candidate):
                return candidate
        except OSError:
            continue
    return None


def _file_on_the_way(where: Path | None) -> Path | None:
    """The deepest existing part of ``where`` when it is a file (what makes ENOTDIR)."""
    base = _existing_ancestor(where)
    return base if base is not None and not base.is_dir() else None


def _virtual(folder: Path) -> bool:
    """Whether ``folder`` is on a file system without blocks (procfs, sysfs), where nothing can be created."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_blocks == 0


def _show(path: Path | None) -> str:
    """A path as shown in a message: long ones keep their beginning and their end."""
    text = str(path)
    return text if len(text) <= 160 else f"{text[:100]}…{text[-50:]}"


def _is_network(err: BaseException) -> bool:
    """A socket-level failure (not a file's): refused, reset, unreachable, a DNS miss, a timeout, TLS."""
    if isinstance(err, BrokenPipeError) and getattr(err, "filename", None) is None:
        return False  # a closed stdout, told apart in ``os_error``
    if isinstance(err, ConnectionError | TimeoutError):
        return True
    socket = sys.modules.get("socket")
    ssl = sys.modules.get("ssl")
    kinds = tuple(k for k in (getattr(socket, "gaierror", None), getattr(socket, "herror", None),
                              getattr(ssl, "SSLError", None)) if isinstance(k, type))
    return bool(kinds) and isinstance(err, kinds)


def _network(err: BaseException, url: str | None) -> str:
    target = url or "the server"
    socket = sys.modules.get("socket")
    ssl = sys.modules.get("ssl")
    detail = getattr(err, "strerror", None) or getattr(err, "reason", None) or str(err) or type(err).__name__
    if ssl is not None and isinstance(err, ssl.SSLCertVerificationError):
        return (f"Cannot download {target}: its TLS certificate could not be verified ({detail}). Check the URL "
                "and the system clock; behind a proxy that inspects TLS, point SSL_CERT_FILE at its certificate.")
    if socket is not None and isinstance(err, socket.gaierror):
        return (f"Cannot reach {target}: its host name does not resolve ({detail}). Check the URL and your network "
                "(DNS), or use --offline with models you have already pulled.")
    if isinstance(err, TimeoutError):
        return f"{target} did not answer in time. Check your connection, then run the same command again."
    if isinstance(err, ConnectionRefusedError):
        return (f"Cannot reach {target}: nothing answers there (connection refused). Check the URL and port, or "
                "whether the server is up, then run the same command again.")
    return (f"Cannot reach {target} ({detail}). Check your connection (and any proxy), then run the same command "
            "again.")


def map_exception(err: BaseException) -> W2SDError | None:
    """``errors.from_exception``: an ordinary failure as a ``W2SDError``; ``None`` for a bug."""
    if isinstance(err, W2SDError):
        return err
    url = _url_of(err)
    library = _http_library(err)
    if isinstance(err, OSError) and library is None:
        if err.errno is None and err.filename is None and not _is_network(err):
            return None  # a bare OSError("...") from some library: no errno to go by
        if _is_network(err):
            return os_error(err, None, url)
        return os_error(err, None if err.filename is not None else _path_of(err))
    http_client = sys.modules.get("http.client")
    if library is not None or (http_client is not None and isinstance(err, http_client.HTTPException)):
        return DownloadError(mask(_protocol(err, url, library)))
    if isinstance(err, ValueError) and _raised_in(err, ("urllib/parse.py", "encodings/idna.py", "ipaddress.py")):
        return DownloadError(mask(f"{url or 'A URL'} is not a valid URL ({err}). Check the address (the card's "
                                   "url, or where its server redirects to)."))
    return None


def _protocol(err: BaseException, url: str | None, library: str | None) -> str:
    """An HTTP answer that could not be read, a URL that could not be sent, or a failed request."""
    target = url or "The server"
    name = type(err).__name__
    detail = " ".join(str(err).split())[:300] or name
    if "InvalidURL" in name or "UnsupportedProtocol" in name or "MissingSchema" in name or "LocationParse" in name \
            or "InvalidSchema" in name:
        return (f"{url or 'A URL'} is not a URL w2sd can request ({detail}). Check the address (the card's url, "
                "or where its server redirects to).")
    if library is not None and "Timeout" in name:
        return f"{target} did not answer in time ({name}). Check your connection, then run the same command again."
    if library is not None and ("Connect" in name or "Proxy" in name) and "Protocol" not in name:
        return (f"Cannot reach {target} ({name}: {detail}). Check your connection (and any proxy), then run the "
                "same command again.")
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(status, int):
        return f"{target} answered HTTP {status} ({detail}). Check the address and your access to it."
    if name == "LineTooLong":
        why = f"a line longer than the 64 KiB HTTP allows here ({detail})"
    elif name == "RemoteDisconnected":
        why = "nothing: it closed the connection without an answer"
    else:
        why = f"an answer that is not valid HTTP ({name}: {detail})"
    return (f"{target} sent {why}. It may not be a web server (or not on that port), or a proxy or firewall is "
            "in the way: check the address and any proxy settings, then run the same command again.")


def _http_library(err: BaseException) -> str | None:
    """The HTTP library (httpx, urllib3, requests...) that raised ``err``, if any."""
    root = type(err).__module__.split(".")[0]
    return root if root in HTTP_LIBRARIES else None


def _raised_in(err: BaseException, files: tuple[str, ...]) -> bool:
    """Whether the innermost frame of ``err``'s traceback is in one of ``files`` (path endings)."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.replace("\\", "/").endswith(files)


def _url_of(err: BaseException) -> str | None:
    """The URL a failure concerns: the request's, or the innermost w2sd frame's ``url`` variable (with the
    ``current`` one it was redirected to, if any)."""
    try:
        request_url = getattr(getattr(err, "request", None), "url", None)
    except Exception:  # httpx raises when an error has no request attached
        request_url = None
    if request_url is not None and "://" in str(request_url):
        return str(request_url)
    found = None
    tb = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if str(frame.f_globals.get("__name__", "")).startswith("w2sd_cli"):
            value, current = frame.f_locals.get("url"), frame.f_locals.get("current")
            if isinstance(value, str) and "://" in value:
                found = value
                if isinstance(current, str) and current != value:  # a redirect loop's target
                    found = f"{value} (redirected to {current})"
        tb = tb.tb_next
    return found


def _path_of(err: BaseException) -> Path | None:
    """For an error that names no file (a write or fsync that hit a full disk): the file the innermost w2sd
    frame was writing (its ``target``, ``path``, ``tmp`` or ``self.path``)."""
    found = None
    tb = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if str(frame.f_globals.get("__name__", "")).startswith("w2sd_cli"):
            values = frame.f_locals
            owner = getattr(values.get("self"), "path", None)
            for value in (values.get("target"), values.get("path"), values.get("tmp"), owner):
                if isinstance(value, Path):
                    found = value
                    break
        tb = tb.tb_next
    return found


def mask(text: str) -> str:
    """``text`` with every URL redacted and secret-looking ``?key=value`` pairs masked, even outside a URL."""
    from w2sd_cli.store.redact import MASK, SECRET_PARAM, URL, redact_url, scrub

    def url(match: re.Match[str]) -> str:
        found = match.group(0)
        bare = found.rstrip(").,;:")  # the sentence's punctuation, not the URL's
        return redact_url(bare) + found[len(bare):]

    text = URL.sub(url, text)

    def query(match: re.Match[str]) -> str:
        key = match.group(1)
        return key + MASK if SECRET_PARAM.search(key) and match.group(2) != MASK else match.group(0)

    return scrub(SECRET_QUERY.sub(query, text))
