"""Real (throwaway) plugin distributions on disk, found by importlib.metadata like any pip install."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from w2sd_cli.testing import fake_distribution


def install_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str,
                         entry_name: str | None = None, version: str = "1.0") -> Path:
    """A fake distribution of ``module`` with an entry point in group ``w2sd``, on sys.path for this test."""
    site = fake_distribution(tmp_path / f"site-{module}", module, source, entry_name=entry_name, version=version)
    monkeypatch.syspath_prepend(str(site))
    return site


CARD = """
    CARD = {{
        "schema": 1, "name": "{name}", "kind": "{kind}", "description": "From a plugin.",
        "strong": {{"mixture": {{"weights": [0.3, 0.7], "means": [[-4.0], [4.0]], "stds": 0.8}}}},
        "weak": {{"mixture": {{"weights": [0.1, 0.9], "means": [[-4.0], [4.0]], "stds": 0.8}}}},
        "defaults": {{"steps": 10, "samples": 300}},
        "options": {{"ideal": {{"weights": [0.5, 0.5], "means": [[-4.0], [4.0]], "stds": 0.8}}}},
    }}
"""


def card_source(name: str, kind: str = "analytic") -> str:
    """Python source defining ``CARD``: a small analytic card called ``name``."""
    return textwrap.dedent(CARD.format(name=name, kind=kind))


def card_plugin(name: str, kind: str = "analytic") -> str:
    """Source of a plugin module that registers one analytic card called ``name``."""
    return "from w2sd_cli.hookspecs import hookimpl\n" + card_source(name, kind) + textwrap.dedent("""
    @hookimpl
    def register_pairs(register):
        register(CARD)
    """)
