"""Real (throwaway) plugin distributions on disk, found by importlib.metadata like any pip install."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str,
                   entry_name: str | None = None, version: str = "1.0") -> Path:
    """Write ``module.py`` plus a dist-info with an entry point in group ``w2sd``, and put it on sys.path."""
    site = tmp_path / f"site-{module}"
    site.mkdir()
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    dist = site / f"{module}-{version}.dist-info"  # wheel naming: the name may not contain '-'
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(f"[w2sd]\n{entry_name or module} = {module}\n")
    monkeypatch.syspath_prepend(str(site))
    return site


CARD = """
    CARD = {{
        "schema": 1, "name": "{name}", "kind": "analytic", "description": "From a plugin.",
        "strong": {{"mixture": {{"weights": [0.3, 0.7], "means": [[-4.0], [4.0]], "stds": 0.8}}}},
        "weak": {{"mixture": {{"weights": [0.1, 0.9], "means": [[-4.0], [4.0]], "stds": 0.8}}}},
        "defaults": {{"steps": 10, "samples": 300}},
        "options": {{"ideal": {{"weights": [0.5, 0.5], "means": [[-4.0], [4.0]], "stds": 0.8}}}},
    }}
"""


def card_plugin(name: str) -> str:
    """Source of a plugin module that registers one analytic card called ``name``."""
    return "from w2sd_cli.hookspecs import hookimpl\n" + textwrap.dedent(CARD.format(name=name)) + textwrap.dedent("""
    @hookimpl
    def register_pairs(register):
        register(CARD)
    """)
