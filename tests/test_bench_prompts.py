"""Prompt sets: registry entries pinned by sha256 and fetched through the store from a local server; user files."""

from __future__ import annotations

import csv
import hashlib
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from w2sd_cli.bench.prompts import load_prompt_set, parse_prompts, prompt_cards
from w2sd_cli.errors import InputError, ModelError, OfflineError


def pickapic_like() -> bytes:
    """The Pick-a-Pic test file's shape: a BOM, four columns, an empty caption among the first 101 rows."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["序号", "caption", "caption_zh", "备注"])
    for i in range(120):
        writer.writerow([i, "" if i == 87 else f"caption number {i}, with a comma", f"说明 {i}", ""])
    return "\ufeff".encode() + out.getvalue().encode("utf-8")


@pytest.fixture()
def server() -> Iterator[dict[str, bytes]]:
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    files["__base__"] = f"http://127.0.0.1:{httpd.server_address[1]}".encode()
    yield files
    httpd.shutdown()
    httpd.server_close()


def write_card(home: Path, name: str, url: str, data: bytes, **extra: object) -> None:
    folder = home / "prompts"
    folder.mkdir(parents=True, exist_ok=True)
    card = {"schema": 1, "name": name, "description": "test set", "format": "csv",
            "file": {"url": url, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}, **extra}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(card, allow_unicode=True))


def test_a_pinned_set_is_fetched_once_then_read_offline(server: dict[str, bytes], isolated_home: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    data = pickapic_like()
    server["/pap.csv"] = data
    write_card(isolated_home, "pap", server["__base__"].decode() + "/pap.csv", data, text_column="caption", limit=100)
    with pytest.raises(OfflineError, match="offline"):
        load_prompt_set("pap")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    found = load_prompt_set("pap")
    assert len(found.prompts) == 100 and found.sha256 == hashlib.sha256(data).hexdigest()
    assert found.prompts[0].text == "caption number 0, with a comma"
    assert found.prompts[87].text == "caption number 88, with a comma"
    assert found.prompts[99].text == "caption number 100, with a comma"
    del server["/pap.csv"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_prompt_set("pap", limit=5).prompts[-1].index == 4


def test_a_changed_upstream_file_is_refused(server: dict[str, bytes], isolated_home: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    server["/db.csv"] = b'"Prompts","Category"\n"A red car.","Colors"\n'
    write_card(isolated_home, "db", server["__base__"].decode() + "/db.csv", b'"Prompts","Category"\n"x","y"\n')
    with pytest.raises(ModelError, match="does not match"):
        load_prompt_set("db")


def test_shipped_cards_pin_the_papers_files_at_a_commit() -> None:
    cards = prompt_cards()
    assert cards["pickapic"].limit == 100 and cards["pickapic"].text_column == "caption"
    assert cards["drawbench"].category_column == "Category"
    for name in ("pickapic", "drawbench"):
        assert "bb20e19611a92df051bf34f2a0f8f038cd35a754" in cards[name].file.url
    assert cards["drawbench"].file.sha256.startswith("e120fd4d")
    assert cards["pick-a-pic"] is cards["pickapic"]


def test_user_files_csv_txt_jsonl(tmp_path: Path) -> None:
    db = parse_prompts(b'"Prompts","Category"\n"A red car.","Colors"\n"Two cats.","Counting"\n', "csv")
    assert [(p.text, p.category) for p in db] == [("A red car.", "Colors"), ("Two cats.", "Counting")]
    assert [p.text for p in parse_prompts(b"one\n\n  \ntwo\n", "txt")] == ["one", "two"]
    lines = b'{"prompt": "a", "category": "x"}\n"b"\n{"caption": "c"}\n'
    assert [(p.index, p.text, p.category) for p in parse_prompts(lines, "jsonl")] == [
        (0, "a", "x"), (1, "b", None), (2, "c", None)]
    with pytest.raises(InputError, match="line 1"):
        parse_prompts(b'{"nope": 1}\n', "jsonl")
    path = tmp_path / "mine.txt"
    path.write_text("first\nsecond\n", encoding="utf-8")
    assert [p.text for p in load_prompt_set(str(path)).prompts] == ["first", "second"]
    assert len(load_prompt_set("shapes").prompts) == 8
    with pytest.raises(InputError, match="Did you mean 'drawbench'"):
        load_prompt_set("drawbnch")
