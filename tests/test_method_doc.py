"""The method is described inside the repository, and nothing points to notes outside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_docs_method_covers_the_algorithm_the_rules_the_controls_and_the_cost() -> None:
    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    for needle in ("Algorithm 1", "eq. 5", "at the label", "ā = 0", "κ_t = sqrt(ā_t) · (σ_t − σ_{t'})",
                   "v_strong(x, t) − v_weak(x', t)", "`first-order`", "`extrapolate`", "`equal-nfe`", "self-pair",
                   "--reference-interval", "T + 2λr", "vp_prediction"):
        assert needle in text, needle


def test_no_docstring_card_or_readme_points_outside_the_repository() -> None:
    outside = re.compile(r"METHOD\.md|ENGINE\.md|STYLE\.md|\.\./shared|/work/shared")
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "w2sd_cli").rglob("*.py"),
             *(ROOT / "registry").rglob("*.yaml"), *(ROOT / "benchmarks").glob("*.py")]
    found = [str(f.relative_to(ROOT)) for f in files if outside.search(f.read_text(encoding="utf-8"))]
    assert found == []
