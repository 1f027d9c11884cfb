"""Terminal tables never split a number or a name: at 80 columns in a terminal (column groups, prose wrapped
between words), and in a pipe or log (one line per row, however long); `pull` logs one line per file."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

from w2sd_cli.cli.output import PlainConsole, table

HEADER = ["metric", "method", "mean", "Δ vs strong", "95% CI", "win rate", "NFE", "s/item", "n"]
ROWS = [["shapes-checker.position", "first-order", 0.00043, "+0.0123", "[-0.0123, +0.0456]", 0.5, 73, 0.1234, 216],
        ["image-stats.clipped", "extrapolate", 0.99871, "-0.0004", "[-0.0008, -1.2e-05]", 0.25, 50, 0.0412, 216]]


def _terminal(width: int) -> tuple[PlainConsole, io.StringIO]:
    out = io.StringIO()
    return PlainConsole(file=out, width=width, force_terminal=True, color_system=None), out


def _words(text: str) -> set[str]:
    return set(re.split(r"[\s│┃]+", text))


def test_a_narrow_terminal_keeps_every_number_and_name_whole() -> None:
    for width in (60, 80, 100):
        console, out = _terminal(width)
        console.print(table("shapes: 48/48 items, paired by prompt", HEADER, ROWS))
        text = out.getvalue()
        assert max(len(line) for line in text.splitlines()) <= width
        words = _words(text)
        for value in ("0.00043", "0.9987", "+0.0123", "[-0.0123,", "+0.0456]", "-1.2e-05]", "0.1234", "216",
                      "shapes-checker.position", "image-stats.clipped", "first-order", "extrapolate", "s/item"):
            assert value in words, (width, value, text)
        assert "win rate" in text and "Δ vs strong" in text


def test_column_groups_repeat_the_metric_and_method() -> None:
    console, out = _terminal(80)
    console.print(table("report", HEADER, ROWS))
    text = out.getvalue()
    assert "report (continued)" in text
    tables = text.count("┏")
    assert tables >= 2 and text.count("first-order") == text.count("shapes-checker.position") == tables


def test_prose_wraps_between_words_only() -> None:
    console, out = _terminal(50)
    long = "a one-dimensional mixture whose strong side under-weights the left mode"
    console.print(table("pairs", ["name", "kind", "description"], [["gmm-1d-wrong-way", "analytic", long]]))
    words = _words(out.getvalue())
    assert {"gmm-1d-wrong-way", "one-dimensional", "under-weights"} <= words


def test_outside_a_terminal_each_row_is_one_line() -> None:
    out = io.StringIO()
    PlainConsole(file=out, width=80).print(table("shapes", HEADER, ROWS))
    lines = out.getvalue().splitlines()
    assert lines[0] == "shapes"
    assert re.split(r"\s{2,}", lines[1]) == HEADER
    assert re.split(r"\s{2,}", lines[2]) == ["shapes-checker.position", "first-order", "0.00043", "+0.0123",
                                            "[-0.0123, +0.0456]", "0.5", "73", "0.1234", "216"]
    assert len(lines) == 4


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "W2SD_HOME": str(home), "OMP_NUM_THREADS": "1", "COLUMNS": "80", "NO_COLOR": "1"}


def _pairs(home: Path) -> list[dict[str, str]]:
    listed = subprocess.run([sys.executable, "-m", "w2sd_cli", "pairs", "list", "--json"], capture_output=True,
                            text=True, timeout=120, env=_env(home), check=True)
    return json.loads(listed.stdout)["pairs"]


def test_pairs_list_in_a_pipe_prints_whole_rows(isolated_home: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "w2sd_cli", "pairs", "list"], capture_output=True, text=True,
                          timeout=120, env=_env(isolated_home))
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    pairs = _pairs(isolated_home)
    assert re.split(r"\s{2,}", lines[1]) == ["name", "kind", "aliases", "plugin", "description", "source"]
    assert len(lines[2:2 + len(pairs)]) == len(pairs)
    for pair, row in zip(pairs, lines[2:2 + len(pairs)], strict=True):
        cells = re.split(r"\s{2,}", row)
        assert cells[:4] == [pair["address"], pair["kind"], ", ".join(pair["aliases"]) or "-", pair["plugin"]], row
        assert pair["description"].startswith(cells[4].removesuffix("...")), row


def test_pairs_list_in_an_80_column_terminal_keeps_names_whole(isolated_home: Path) -> None:
    main, child = pty.openpty()
    env = {**_env(isolated_home), "TERM": "xterm"}
    process = subprocess.Popen([sys.executable, "-m", "w2sd_cli", "pairs", "list"], stdin=child, stdout=child,
                               stderr=child, env=env, close_fds=True)
    os.close(child)
    chunks = []
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(main)
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", b"".join(chunks).decode("utf-8", "replace")).replace("\r", "")
    assert process.returncode == 0, text
    assert max(len(line) for line in text.splitlines()) <= 80, text
    words = _words(text)
    for pair in _pairs(isolated_home):
        assert pair["name"] in words and pair["kind"] in words, (pair["name"], text)


def test_pull_outside_a_terminal_logs_one_line_per_file() -> None:
    from w2sd_cli.cli import output, progress

    out = io.StringIO()
    saved = output.err_console._file  # None: the console follows whatever sys.stderr is (CliRunner swaps it)
    output.err_console.file = out
    try:
        with progress.DownloadProgress() as bar:
            bar.observe({"event": "plan", "pair": "p", "files": 2, "bytes_total": 3_000_000})
            for name in ("unet/diffusion_pytorch_model.fp16.safetensors", "text_encoder/model.safetensors"):
                for done, status in ((0, "downloading"), (700_000, "downloading"), (1_500_000, "verifying"),
                                     (1_500_000, "done")):
                    info = {"file": name, "bytes_done": done, "bytes_total": 1_500_000, "status": status}
                    bar.observe({**info, "event": "file", "pair": "p", "key": "strong"})
                    bar.observe({"event": "overall", "pair": "p", "bytes_done": done, "bytes_total": 3_000_000})
    finally:
        output.err_console._file = saved
    assert out.getvalue().splitlines() == ["p:strong: unet/diffusion_pytorch_model.fp16.safetensors (1.5 MB) done",
                                           "p:strong: text_encoder/model.safetensors (1.5 MB) done"]
