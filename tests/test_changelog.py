"""Project hygiene: the changelog describes changes (not internal issue numbers), the licence file matches
pyproject's, and docs/ holds only user and contributor documentation."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_changelog_names_no_internal_issue_numbers() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert text.startswith("# Changelog\n\n## Unreleased\n")
    found = re.findall(r"\b(?:issues?|items?)\s+\d+|\(#\d+\)", text, flags=re.I)
    assert found == [], found


def test_the_licence_file_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    licence = project["license"] if isinstance(project["license"], str) else project["license"].get("text", "")
    assert licence.startswith("MIT")
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


def test_docs_hold_no_session_notes() -> None:
    assert not (ROOT / "docs" / "HELPERS.md").exists()
    assert "HELPERS.md" not in (ROOT / "README.md").read_text(encoding="utf-8")
