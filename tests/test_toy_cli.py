"""`w2sd gen` with the shapes pair, through the Typer app: a PNG and the checker's verdict in --json."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner


def test_gen_shapes_writes_png_and_prints_the_checker_verdict(tmp_path: Path) -> None:
    from w2sd_cli.cli import build_app

    result = CliRunner().invoke(build_app(), ["gen", "--pair", "shapes", "two red circles on the left",
                                              "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["pair"] == "shapes" and summary["prompt"] == "two red circles on the left"
    assert set(summary["verdicts"]["shapes-checker"]) == {"colour", "count", "shape", "position", "all", "scorable"}
    (png,) = (Path(f) for f in summary["files"])
    assert png.parent == tmp_path and Image.open(png).size == (256, 256)


def test_gen_shapes_compare_writes_the_panel(tmp_path: Path) -> None:
    from w2sd_cli.cli import build_app

    result = CliRunner().invoke(build_app(), ["gen", "--pair", "shapes", "a blue square at the top", "--compare",
                                              "--seed", "5", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "shapes-a-blue-square-at-the-top-seed5-compare.png", "shapes-a-blue-square-at-the-top-seed5-strong.png",
        "shapes-a-blue-square-at-the-top-seed5-weak.png", "shapes-a-blue-square-at-the-top-seed5.png"]
