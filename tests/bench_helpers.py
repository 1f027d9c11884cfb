"""Shared bits of the bench tests: small prompt files, CLI calls, manifests compared without timings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from w2sd_cli.bench.manifest import comparable, read_lines


def invoke(*args: object) -> Any:
    """Run the w2sd CLI in-process; fail with its output if it exits non-zero."""
    from w2sd_cli.cli import build_app

    result = CliRunner().invoke(build_app(), [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def invoke_json(*args: object) -> Any:
    return json.loads(invoke(*args, "--json").stdout)


def manifest(run_dir: Path) -> list[dict[str, Any]]:
    """The merged manifest without timing fields."""
    return comparable(read_lines(run_dir / "manifest.jsonl"))


def prompt_file(folder: Path, lines: list[str], name: str = "prompts.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
