"""A local HTTP server for the store tests: enough Hub API for huggingface_hub, a civitai-like endpoint, faults.

One threading server listens on 127.0.0.1; requests that arrive as ``localhost`` play the second host (the
Hub's LFS storage, or a foreign storage host a civitai download is redirected to).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt")


def safetensors_bytes(n_floats: int, seed: int = 0) -> bytes:
    """A valid safetensors file with one float32 tensor of ``n_floats`` values."""
    data = b"".join(struct.pack("<f", float((i * 7 + seed) % 97)) for i in range(n_floats))
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_id(data: bytes) -> str:
    """The git blob id the Hub lists (and answers as ETag) for a plain, non-LFS file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Fault:
    """What to do to the next ``times`` requests for one path."""

    cut_after: int | None = None  # send a full Content-Length, then only this many bytes, then close
    status: int | None = None  # answer with this status (and ``body``/``content_type``)
    body: bytes = b""
    content_type: str = "application/octet-stream"
    drip_s: float = 0.0  # pause before each 1 kB chunk
    ignore_range: bool = False
    redirect: str | None = None  # absolute URL to 302 to
    need_token: str | None = None  # 401 unless ``Authorization: Bearer <need_token>``
    hide_length: bool = False  # no Content-Length: the body ends when the connection closes
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)  # sent with a ``status`` answer (e.g. X-Error-Code)


@dataclass
class Seen:
    method: str
    host: str
    path: str
    headers: dict[str, str]


@dataclass
class Repo:
    repo_id: str
    commit: str
    files: dict[str, bytes]


@dataclass
class FakeServer:
    """The server's state: files by URL path, Hub repos, faults and a log of every request."""

    files: dict[str, bytes] = field(default_factory=dict)
    repos: dict[str, Repo] = field(default_factory=dict)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    log: list[Seen] = field(default_factory=list)
    port: int = 0
    httpd: ThreadingHTTPServer | None = None
    active: int = 0  # file bodies being sent right now
    peak: int = 0  # the most sent at once
    counter: threading.Lock = field(default_factory=threading.Lock)
    etags: dict[str, str] = field(default_factory=dict)  # repo path -> the ETag HEAD answers (a lying Hub)

    def start(self, port: int = 0) -> FakeServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def add_repo(self, repo_id: str, files: dict[str, bytes], commit: str | None = None) -> Repo:
        commit = commit or hashlib.sha1(repo_id.encode() + str(len(self.repos)).encode()).hexdigest()
        repo = Repo(repo_id, commit, files)
        self.repos[repo_id] = repo
        for data in files.values():
            self.files[f"/lfs/{sha256(data)}"] = data
        return repo

    def fault(self, path: str, fault: Fault) -> None:
        self.faults.setdefault(path, []).append(fault)

    def take_fault(self, path: str) -> Fault | None:
        queue = self.faults.get(path)
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.pop(0)
        return fault

    def requests(self, path_part: str, method: str = "GET") -> list[Seen]:
        return [s for s in self.log if path_part in s.path and s.method == method]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        host = (self.headers.get("Host") or "").split(":")[0]
        path = unquote(self.path.split("?")[0])
        self.fake.log.append(Seen(self.command, host, path, {k.lower(): v for k, v in self.headers.items()}))
        try:
            if path.startswith("/api/models/"):
                return self._api(path)
            match = re.match(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", path)
            if match:
                return self._resolve(match["repo"], match["rev"], match["file"], head)
            if path in self.fake.files:
                data = self.fake.files[path]
                return self._file(path, data, head, {"ETag": f'"{sha256(data)}"'})
            self._send(404, b'{"error": "not found"}', "application/json", head=head)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _api(self, path: str) -> None:
        m = re.match(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<what>revision|tree)/(?P<rev>[^/]+)(?:/(?P<sub>.*))?$",
                     path)
        repo = self.fake.repos.get(m["repo"]) if m else None
        if m is None or repo is None:
            return self._send(404, b'{"error": "Repository not found"}', "application/json",
                              {"X-Error-Code": "RepoNotFound"})
        if m["rev"] not in ("main", repo.commit):
            return self._send(404, b'{"error": "Invalid rev id"}', "application/json",
                              {"X-Error-Code": "RevisionNotFound"})
        if m["what"] == "revision":
            body: Any = {"id": repo.repo_id, "sha": repo.commit, "private": False,
                         "siblings": [{"rfilename": p} for p in repo.files]}
        else:
            sub = (m["sub"] or "").strip("/")
            body = [_tree_entry(p, d) for p, d in sorted(repo.files.items()) if not sub or p.startswith(sub + "/")]
        self._send(200, json.dumps(body).encode(), "application/json")

    def _resolve(self, repo_id: str, rev: str, file: str, head: bool) -> None:
        queued = self.fake.faults.get(unquote(self.path.split("?")[0]))
        if queued and queued[0].status:  # a refused file (a gated repo) is refused before any LFS redirect
            fault = self.fake.take_fault(unquote(self.path.split("?")[0]))
            assert fault is not None and fault.status is not None
            return self._send(fault.status, fault.body, fault.content_type, fault.headers, head=head)
        repo = self.fake.repos.get(repo_id)
        if repo is None or rev not in ("main", repo.commit) or file not in repo.files:
            return self._send(404, b'{"error": "Entry not found"}', "application/json",
                              {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit if repo else ""},
                              head=head)
        data = repo.files[file]
        common = {"X-Repo-Commit": repo.commit}
        if file.endswith(LFS_SUFFIXES):
            digest = sha256(data)
            etag = self.fake.etags.get(file, digest)
            common.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data)),
                           "ETag": f'"{etag}"', "Location": self.fake.url(f"/lfs/{digest}", "localhost")})
            return self._send(302, b"", "text/plain", common, head=head)
        common["ETag"] = f'"{self.fake.etags.get(file, blob_id(data))}"'
        self._file(f"/{repo_id}/resolve/{rev}/{file}", data, head, common)

    def _file(self, path: str, data: bytes, head: bool, extra: dict[str, str] | None = None) -> None:
        fault = self.fake.take_fault(path)
        if fault and fault.need_token is not None and self.headers.get("Authorization") != f"Bearer {fault.need_token}":
            return self._send(401, b'{"error": "Unauthorized"}', "application/json", head=head)
        if fault and fault.redirect:
            return self._send(302, b"", "text/plain", {"Location": fault.redirect}, head=head)
        if fault and fault.status:
            return self._send(fault.status, fault.body, fault.content_type, fault.headers, head=head)
        if fault and fault.body:
            return self._send(200, fault.body, fault.content_type, {**(extra or {}), **fault.headers}, head=head)
        start = 0
        rng = self.headers.get("Range")
        if rng and not (fault and fault.ignore_range) and self.headers.get("If-Range", extra_etag(extra)) == \
                extra_etag(extra):
            start = int(re.match(r"bytes=(\d+)-", rng)[1])  # type: ignore[index]
        if start >= len(data) and start:
            return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"}, head=head)
        body = data[start:]
        headers = dict(extra or {})
        headers["Accept-Ranges"] = "bytes"
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self.send_response(206 if start else 200)
        self._headers("application/octet-stream", None if fault and fault.hide_length else len(body), headers)
        if head:
            return
        limit = fault.cut_after if fault and fault.cut_after is not None else len(body)
        step = 1024 if fault and fault.drip_s else 65536
        with self.fake.counter:
            self.fake.active += 1
            self.fake.peak = max(self.fake.peak, self.fake.active)
        try:
            for i in range(0, min(limit, len(body)), step):
                if fault and fault.drip_s:
                    time.sleep(fault.drip_s)
                self.wfile.write(body[i:min(i + step, limit)])
                self.wfile.flush()
        finally:
            with self.fake.counter:
                self.fake.active -= 1
        if limit < len(body) or (fault and fault.hide_length):
            self.close_connection = True
            self.connection.shutdown(2)

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None,
              head: bool = False) -> None:
        self.send_response(status)
        self._headers(ctype, len(body), extra or {})
        if not head:
            self.wfile.write(body)

    def _headers(self, ctype: str, length: int | None, extra: dict[str, str]) -> None:
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()


def _tree_entry(path: str, data: bytes) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data), "oid": blob_id(data)}
    if path.endswith(LFS_SUFFIXES):
        entry["lfs"] = {"oid": sha256(data), "size": len(data), "pointerSize": 134}
    return entry


def extra_etag(extra: dict[str, str] | None) -> str | None:
    """The ETag a file answer carries (what a matching ``If-Range`` must repeat)."""
    return (extra or {}).get("ETag")


def civitai_server(monkeypatch: Any, files: dict[str, bytes]) -> FakeServer:
    """A started fake civitai server on 127.0.0.1, with the environment w2sd needs to download from it
    (network on, no token, the loopback host counted as civitai). Stop it when done."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("W2SD_MIN_FREE_MB", "1")
    monkeypatch.setenv("W2SD_CIVITAI_HOSTS", "127.0.0.1")
    monkeypatch.delenv("CIVITAI_TOKEN", raising=False)
    monkeypatch.delenv("W2SD_TOKEN_OVER_HTTP_LOOPBACK", raising=False)
    return FakeServer(files=dict(files)).start()
