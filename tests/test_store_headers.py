"""A third fault round for URL sources and what w2sd prints, in process against a real local server: mirrors
after a mismatch, safetensors headers the loader refuses, escaped labels, If-Range, refetch in the same run."""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tests.store_fakes import FakeServer, Fault, civitai_server, safetensors_bytes, sha256
from w2sd_cli.cards import PairCard, parse_card
from w2sd_cli.errors import ModelError
from w2sd_cli.store import check_weights_file, pull
from w2sd_cli.store.layout import part_path, quarantine_dir
from w2sd_cli.store.safety import NotWeightsError

PAYLOAD = safetensors_bytes(20_000)
OTHER = safetensors_bytes(20_000, seed=3)
SHA = sha256(PAYLOAD)
PATH = "/api/download/models/9"
EVIL = "a\x1b]0;pwned\x07\x1b[2J\n✓ evil: 1 model(s) ready.safetensors"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    fake = civitai_server(monkeypatch, {PATH: PAYLOAD})
    yield fake
    fake.stop()


def card(url: str, sha: str = SHA, **extra: object) -> PairCard:
    return parse_card({"schema": 1, "name": "civ", "kind": "lora-scale", "description": "t",
                       "models": {"lora": {"url": url, "sha256": sha, "format": "lora", **extra}}})


def quarantined() -> list[bytes]:
    return [p.read_bytes() for p in sorted(quarantine_dir().iterdir())] if quarantine_dir().is_dir() else []


def safetensors_with(header: dict[str, Any], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


# 3. a mirror that serves wrong bytes gives way to the next one ------------------------------------------------

def test_3_a_source_and_a_mirror_serving_wrong_bytes_are_quarantined_and_the_next_mirror_delivers(
        server: FakeServer, isolated_home: Path) -> None:
    server.files[PATH] = OTHER
    server.files["/m1/lora.safetensors"] = OTHER[:-10] + b"0123456789"
    server.files["/m2/lora.safetensors"] = PAYLOAD
    c = card(server.url(PATH), mirrors=[{"url": server.url("/m1/lora.safetensors")},
                                        {"url": server.url("/m2/lora.safetensors")}])
    [path] = pull(c)
    assert path.read_bytes() == PAYLOAD
    assert sorted(quarantined()) == sorted([OTHER, OTHER[:-10] + b"0123456789"])
    lock = json.loads((isolated_home / "lock" / "civ.json").read_text())["models"]["lora"]
    assert lock["source"].endswith("/m2/lora.safetensors")


# 4. safetensors headers are checked as the loader checks them ---------------------------------------------

BAD_HEADERS = {
    "shape times dtype is not the byte range": ({"w": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}),
    "overlapping tensors": ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                             "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}),
    "begin after end": ({"w": {"dtype": "U8", "shape": [0], "data_offsets": [16, 0]}}),
    "unknown dtype": ({"w": {"dtype": "Q7", "shape": [4], "data_offsets": [0, 16]}}),
    "non-numeric offsets": ({"w": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}}),
    "bytes no tensor covers": ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}),
}


@pytest.mark.parametrize("header", list(BAD_HEADERS.values()), ids=list(BAD_HEADERS))
def test_4_a_self_contradictory_safetensors_header_is_not_usable_weights(
        tmp_path: Path, header: dict[str, Any]) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(safetensors_with(header, b"\0" * 16))
    with pytest.raises(NotWeightsError, match="safetensors loader refuses its header"):
        check_weights_file(path)


def test_4_non_numeric_offsets_from_a_source_are_a_clean_error_and_the_rerun_asks_again(
        server: FakeServer) -> None:
    bad = safetensors_with(BAD_HEADERS["non-numeric offsets"], b"\0" * 16)
    server.files[PATH] = bad
    c = card(server.url(PATH), sha=sha256(bad))
    for _ in range(2):
        server.log.clear()
        with pytest.raises(ModelError, match="broken at the source"):
            pull(c)
        assert len(server.requests(PATH)) == 1  # nothing partial was left to re-crash on
        assert not part_path(sha256(bad)).exists()
    assert quarantined() == [bad, bad]


# 5. labels in bars and tables are printable text ------------------------------------------------------------

def assert_inert(out: str) -> None:
    assert "\x1b]" not in out and "\x07" not in out and "\x1b[2J" not in out, repr(out)
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\n✓ evil" in out, repr(out)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)  # rich's own cursor and colour codes
    assert not any(line.lstrip().startswith("✓") for line in plain.splitlines()), plain


def test_5_escape_codes_in_file_names_never_reach_the_terminal_through_download_bars(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from w2sd_cli.cli import progress

    screen = io.StringIO()
    monkeypatch.setattr(progress, "err_console", Console(file=screen, force_terminal=True, width=400,
                                                         color_system="standard"))
    with progress.DownloadProgress() as bar:
        bar.observe({"event": "plan", "pair": "civ", "files": 1, "bytes_total": 10})
        for status, done in (("downloading", 5), ("verifying", 10), ("done", 10)):
            bar.observe({"event": "file", "pair": "civ", "key": "lora", "file": EVIL, "bytes_done": done,
                         "bytes_total": 10, "status": status})
    assert_inert(screen.getvalue())


def test_5_escape_codes_in_table_cells_and_titles_are_shown_escaped() -> None:
    from w2sd_cli.cli.output import table

    console = Console(file=io.StringIO(), force_terminal=True, width=400, record=True)
    console.print(table(EVIL, ["file"], [[EVIL]]))
    assert_inert(console.export_text(styles=True))


def test_5_one_label_function_escapes_controls_bidi_and_backslashes() -> None:
    from w2sd_cli.cli.output import label

    assert label("tab\there \\x1b \u202egpj.exe") == "tab\\there \\\\x1b \\u202egpj.exe"


# 8. If-Range, and a mismatch fetched again in the same run -------------------------------------------------------

def test_8_a_resume_sends_if_range_with_the_validator_of_the_bytes_it_holds(server: FakeServer) -> None:
    server.fault(PATH, Fault(cut_after=30_000))
    [path] = pull(card(server.url(PATH)))
    assert path.read_bytes() == PAYLOAD
    first, second = server.requests(PATH)
    assert "if-range" not in first.headers and second.headers["range"] == "bytes=30000-"
    assert second.headers["if-range"] == f'"{SHA}"'


def test_8_a_file_replaced_upstream_between_runs_comes_back_whole_instead_of_spliced(server: FakeServer) -> None:
    server.files[PATH] = OTHER  # the old upload, cut every time
    server.fault(PATH, Fault(cut_after=5_000, times=50))
    with pytest.raises(Exception, match="keeps breaking off"):
        pull(card(server.url(PATH)))
    assert part_path(SHA).stat().st_size >= 5_000
    server.faults.clear()
    server.log.clear()
    server.files[PATH] = PAYLOAD  # the upload the card pins
    [path] = pull(card(server.url(PATH)))
    assert path.read_bytes() == PAYLOAD
    [again] = server.requests(PATH)  # one answer: the whole new file (If-Range did not match), no splice
    assert again.headers["if-range"] == f'"{sha256(OTHER)}"' and quarantined() == []


def test_8_a_mismatched_download_is_quarantined_and_fetched_again_in_the_same_run(server: FakeServer) -> None:
    server.fault(PATH, Fault(body=OTHER))
    [path] = pull(card(server.url(PATH)))
    assert path.read_bytes() == PAYLOAD and quarantined() == [OTHER]
    assert len(server.requests(PATH)) == 2
