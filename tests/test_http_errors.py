"""HTTP answers that are not HTTP, or not usable, from real sockets on 127.0.0.1: `w2sd pull` says which URL
(its signed ``?token=`` masked) and what to check, never "This is a bug"."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.store_fakes import safetensors_bytes, sha256

RUNNER = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
PAYLOAD = safetensors_bytes(500)
SECRET = "s3cr3t-signature-value"


class RawServer:
    """Answers every connection with ``answer(port)`` bytes, then closes: whatever a test wants on the wire."""

    def __init__(self, answer: Callable[[int], bytes]) -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(self.answer(self.port))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., RawServer]]:
    """Start a raw server and write a user card ``civ`` whose model URL (with a signed token) points at it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("W2SD_MIN_FREE_MB", "1")
    servers: list[RawServer] = []

    def start(answer: Callable[[int], bytes]) -> RawServer:
        server = RawServer(answer)
        servers.append(server)
        (isolated_home / "pairs").mkdir(exist_ok=True)
        url = f"http://127.0.0.1:{server.port}/m.safetensors?token={SECRET}&type=Model"
        (isolated_home / "pairs" / "civ.yaml").write_text(
            "schema: 1\nname: civ\nkind: lora-scale\ndescription: test\nmodels:\n"
            f"  lora: {{url: '{url}', sha256: {sha256(PAYLOAD)}, size: {len(PAYLOAD)}, format: lora}}\n")
        return server

    yield start
    for server in servers:
        server.close()


def pull() -> Any:
    from w2sd_cli.cli import build_app

    return RUNNER.invoke(build_app(), ["pull", "civ"])


def refused(result: Any, port: int, *needles: str) -> str:
    text = " ".join(result.output.split())
    assert result.exit_code == 1, text
    assert "This is a bug" not in text and "Unexpected error" not in text, text
    assert SECRET not in text, "the signed token is masked"
    assert f"127.0.0.1:{port}/" in text, "the URL is named"
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def test_a_server_that_does_not_speak_http(serve: Callable[..., RawServer]) -> None:
    server = serve(lambda port: b"SSH-2.0-OpenSSH_9.6\r\n")
    refused(pull(), server.port, "token=***", "not valid HTTP", "not be a web server")


def test_a_header_line_over_64_kib(serve: Callable[..., RawServer]) -> None:
    server = serve(lambda port: b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    refused(pull(), server.port, "token=***", "a line longer than the 64 KiB")


def test_more_than_a_hundred_headers(serve: Callable[..., RawServer]) -> None:
    server = serve(lambda port: b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n")
    refused(pull(), server.port, "token=***", "more than 100 headers")


def test_a_redirect_to_a_port_that_cannot_exist(serve: Callable[..., RawServer]) -> None:
    def answer(port: int) -> bytes:
        return (f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:99999/x?token={SECRET}\r\n"
                "Content-Length: 0\r\n\r\n").encode()

    server = serve(answer)
    refused(pull(), server.port, "not a valid URL", "Check the address")


def test_a_redirect_to_a_url_with_a_space(serve: Callable[..., RawServer]) -> None:
    def answer(port: int) -> bytes:
        return f"HTTP/1.1 302 Found\r\nLocation: /a b?token={SECRET}\r\nContent-Length: 0\r\n\r\n".encode()

    server = serve(answer)
    text = refused(pull(), server.port, "Check the address")
    assert "token=***" in text


def test_103_early_hints_then_the_file(serve: Callable[..., RawServer]) -> None:
    def answer(port: int) -> bytes:
        return (b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "
                + str(len(PAYLOAD)).encode() + b"\r\n\r\n" + PAYLOAD)

    serve(answer)
    result = pull()
    assert result.exit_code == 0, result.output
