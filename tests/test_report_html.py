"""The HTML report read at a glance (issue 15 item 12): a verdict first, primary metrics first, one colour per
method in every plot, a visible zero win rate, every seed and the controls in the image grid with checker
marks; checked in the file and as rendered by headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import bench_instant
from tests.bench_helpers import invoke, invoke_json, prompt_file
from w2sd_cli.bench.report import COLOURS

METHODS = "weak,strong,w2sd,extrapolate,first-order"


def _report(tmp_path: Path, prompts: list[str], seeds: str = "0-2") -> dict:
    bench_instant.install()
    path = prompt_file(tmp_path, prompts)
    run = tmp_path / "run"
    invoke("bench", "instant", "--prompts", path, "--seeds", seeds, "--methods", METHODS, "--out", run)
    invoke("eval", run, "--metric", "level", "--metric", "bright", "--metric", "image-stats")
    return invoke_json("report", run)


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])


def _pixels_of(path: Path, hex_colour: str) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - _rgb(hex_colour)).sum(-1) <= 6).sum())


def test_the_page_leads_with_a_verdict_and_keeps_colours_grid_and_order(tmp_path: Path) -> None:
    report = _report(tmp_path, ["a fox w2sd+5", "a cat w2sd+4", "a hen w2sd+6"])
    page = Path(report["files"]["html"]).read_text()
    body = page.split("<body>", 1)[1]
    assert body.index("id='verdict'") < body.index("<table") and body.index("id='verdict'") < body.index("<img")
    verdict = body[body.index("id='verdict'"):body.index("</section>")]
    assert "W2SD beats strong on level (higher is better): Δ +5" in verdict
    assert "Only 3 prompts back this (fewer than 10)" in verdict
    assert [h["metric"] for h in report["headline"]] == ["bright.all", "level", "image-stats.clipped"]
    table = body[body.index("All numbers"):body.index("Per category") if "Per category" in body else None]
    assert table.index("image-stats.clipped") < table.index("image-stats.brightness")
    assert table.index("level.diversity") < table.index("image-stats.saturation")
    for method in ("extrapolate", "first-order"):
        assert f"<th style='border-bottom:4px solid {COLOURS[method]}'>{method}</th>" in body
    assert all(f"alt='{m} seed {s}'" in body for m in METHODS.split(",") for s in (0, 1, 2))
    assert "<details><summary>2 more seeds</summary>" in body
    assert "✓ bright.all" in body and "✗ bright.all" in body, "weak fails the checker, W2SD passes it"
    plots = {Path(p).stem: Path(p) for p in report["files"]["plots"]}
    for method in METHODS.split(","):
        assert _pixels_of(plots["metric-vs-nfe"], COLOURS[method]) > 10, method
        if method != "strong":
            assert _pixels_of(plots["win-rate"], COLOURS[method]) > 10, method
    weak = next(r for r in report["rows"] if r["metric"] == "level" and r["method"] == "weak")["vs_strong"]
    assert weak["win_rate"] == 0, "weak never wins, and its bar must still show"
    assert _pixels_of(plots["win-rate"], COLOURS["strong"]) == 0


def test_enough_prompts_drop_the_warning(tmp_path: Path) -> None:
    report = _report(tmp_path, [f"prompt {n} w2sd-{n % 3}" for n in range(10)], seeds="0")
    verdict = Path(report["files"]["html"]).read_text().split("id='verdict'")[1].split("</section>")[0]
    assert "fewer than 10" not in verdict and ("No clear difference" in verdict or "worse" in verdict)
    assert json.loads((Path(report["files"]["json"])).read_text())["headline"][0]["units"] == 10


def test_chromium_renders_the_verdict_first_in_the_method_colours(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium)")
    report = _report(tmp_path, ["a fox w2sd+5", "a cat w2sd+4"])
    page = Path(report["files"]["html"])
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    text = re.sub(r"<[^>]+>", " ", dom.stdout)
    assert "Verdict: W2SD vs strong" in text, dom.stderr[-2000:]
    assert text.index("W2SD beats strong on level") < text.index("All numbers") < text.index("Plots")
    shot = tmp_path / "shot.png"
    done = subprocess.run([*flags, "--window-size=1400,2400", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.exists(), done.stderr[-2000:]
    for method in ("weak", "strong", "w2sd", "extrapolate", "first-order"):
        assert _pixels_of(shot, COLOURS[method]) > 20, f"{method}'s colour should be on the rendered page"
