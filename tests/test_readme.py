"""The README's commands work in a fresh shell and its claims match the tool: the virtualenv is activated
before bare commands, Ray is installed before it is started, `pairs list` has the aliases column it
promises, the unscorable verdict is what `gen --json` prints, and shapes recipes carry no local paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
TOOLS = ("w2sd", "pip", "pytest", "ray", "torchrun", "python", "sbatch")


def _shell_blocks() -> list[list[str]]:
    return [block.splitlines() for block in re.findall(r"```(?:bash|sh)\n(.*?)```", README, flags=re.S)]


def test_every_bare_command_comes_after_activating_the_venv() -> None:
    setup, *others = _shell_blocks()
    assert all(line.startswith("python3.11 -m venv .venv") for line in setup), "the set-up block is self-contained"
    for block in others:
        active = False
        for line in block:
            active = active or line.startswith("source .venv/bin/activate")
            first = line.split()[0] if line.strip() else ""
            if first in TOOLS:
                assert active, f"{line!r} runs before `source .venv/bin/activate` in its block"


def test_ray_is_installed_before_it_is_started() -> None:
    lines = [line for block in _shell_blocks() for line in block]
    install = next(n for n, line in enumerate(lines)
                   if re.match(r"(\.venv/bin/)?pip install -e plugins/w2sd-ray", line))
    start = next(n for n, line in enumerate(lines) if line.startswith("ray start"))
    assert install < start, "the line that installs Ray comes before the first `ray start`"


def test_pairs_list_has_the_aliases_column_the_readme_promises() -> None:
    from w2sd_cli.cli import build_app

    assert "all pairs, with kind, aliases and the plugin" in README
    result = CliRunner().invoke(build_app(), ["pairs", "list"])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("name "))
    assert re.split(r"\s{2,}", header)[:4] == ["name", "kind", "aliases", "plugin"]
    shapes = next(line for line in result.output.splitlines() if line.startswith("shapes "))
    assert re.split(r"\s{2,}", shapes)[2] == "toy"


def test_the_unscorable_verdict_is_the_documented_one() -> None:
    from PIL import Image

    from w2sd_cli.toy.checker import ShapesChecker, verdict

    documented = re.search(r"verdict in\s+`w2sd gen --json` is `(\{[^`]*\})`", README)
    assert documented, "README documents the unscorable verdict"
    image = Image.new("RGB", (32, 32), (255, 255, 255))
    [row] = ShapesChecker().score([image], ["a purple hexagon"])
    assert row == json.loads(documented.group(1))
    assert verdict(image, "a purple hexagon")["unknown"] == ["purple", "hexagon"]
    assert '`"unknown"` with `"scorable": False`' in README


def test_shapes_recipes_name_models_by_package_path_and_hash(tmp_path: Path) -> None:
    import w2sd_cli
    from w2sd_cli.paths import registry_dir

    [sample] = w2sd_cli.load_pair("shapes").generate("a red circle", steps=2)
    recipe = sample.recipe
    text = json.dumps(recipe)
    assert str(registry_dir().resolve()) not in text and str(registry_dir()) not in text
    for role, side in recipe["sides"].items():
        key = "weak" if role in ("weak", "weak_plain") else "strong"
        assert side["model"]["path"] == f"registry/models/shapes/{key}", role
        assert re.fullmatch(r"[0-9a-f]{64}", side["model"]["sha256"]), role
    models = recipe["provenance"]["models"]
    assert models["strong"]["sha256"] != models["weak"]["sha256"]
    assert "registry/models/shapes/strong" in README and "sha256 of their files" in README
