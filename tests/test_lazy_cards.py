"""Cards are validated when a command needs them: a lookup parses the card it reaches, a listing parses them all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.plugin_helpers import card_plugin, install_distribution
from w2sd_cli import cards
from w2sd_cli.cli import build_app
from w2sd_cli.errors import CardError, PairNotFound
from w2sd_cli.pairs import build_registry, get_registry
from w2sd_cli.plugins import build_host
from w2sd_cli.testing import reset

RUNNER = CliRunner(env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})

GOOD = ("schema: 1\nname: {name}\nkind: analytic\ndescription: d\n"
        "strong: {{mixture: {{weights: [1], means: [[0]], stds: 1}}}}\n"
        "weak: {{mixture: {{weights: [1], means: [[0]], stds: 2}}}}\n"
        "options: {{ideal: {{weights: [1], means: [[0]], stds: 1}}}}\n")


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The origin of every card validated from now on (the real ``parse_card``, counted)."""
    calls: list[str] = []
    real = cards.parse_card

    def counting(data: Any, origin: str = "<card>", base_dir: Path | None = None) -> cards.PairCard:
        calls.append(origin)
        return real(data, origin, base_dir)

    monkeypatch.setattr(cards, "parse_card", counting)
    return calls


def test_gen_parses_only_the_card_it_uses(tmp_path: Path, parsed: list[str]) -> None:
    result = RUNNER.invoke(build_app(), ["gen", "--pair", "gmm-1d", "--samples", "100", "--steps", "4",
                                         "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert len(parsed) == 1 and Path(parsed[0]).name == "gmm-1d.yaml", parsed


def test_a_lookup_parses_one_card_and_a_listing_all(parsed: list[str]) -> None:
    registry = get_registry()
    assert parsed == []
    assert registry.get("gmm-1d").card.name == "gmm-1d"
    assert registry.get("w2sd:gmm-1d") is registry.get("gmm-1d")
    assert len(parsed) == 1
    assert registry.kind(registry.get("gmm-1d").card).name == "analytic"  # a card object's kind reads no other
    assert len(parsed) == 1
    names = {e.card.name for e in registry.entries}
    assert "gmm-1d" in names and "gmm-2d" in names
    assert len(parsed) == len(names)  # each card validated once, the one looked up not again


def test_an_invalid_user_card_is_listed_and_raises_its_own_error(isolated_home: Path, parsed: list[str]) -> None:
    pairs = isolated_home / "pairs"
    pairs.mkdir()
    (pairs / "mine.yaml").write_text(GOOD.format(name="mine"))
    (pairs / "broken.yaml").write_text("schema: 1\nname: broken\naliases: [cracked]\nkind: analytic\n")
    (pairs / "Nameless Card.yaml").write_text("schema: 1\nname: Not A Name\n")  # known by no name at all
    (pairs / "unnamed.yaml").write_text("schema: 1\nkind: analytic\n")  # known by its file name

    registry = get_registry()
    assert registry.get("mine").plugin == "user"
    assert [Path(p).name for p in parsed] == ["mine.yaml"]  # the broken cards are not read for it
    with pytest.raises(CardError, match=r"broken\.yaml: invalid pair card: description"):
        registry.get("broken")
    with pytest.raises(PairNotFound):  # an invalid card has no aliases
        registry.get("cracked")
    with pytest.raises(CardError, match=r"unnamed\.yaml: invalid pair card"):
        registry.get("unnamed")

    reset()
    result = RUNNER.invoke(build_app(), ["pairs", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert "mine" in {r["name"] for r in listed["pairs"]}
    invalid = {r["name"]: r["error"] for r in listed["invalid"]}
    assert set(invalid) == {"broken", "unnamed"}
    assert "broken.yaml" in invalid["broken"] and "unnamed.yaml" in invalid["unnamed"]
    for file in ("broken.yaml", "unnamed.yaml", "Nameless Card.yaml"):
        assert any(file in p for p in listed["problems"]), (file, listed["problems"])

    reset()
    shown = RUNNER.invoke(build_app(), ["pairs", "list"])
    assert shown.exit_code == 0 and "broken.yaml" in shown.output


def test_an_invalid_cards_aliases_claim_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               isolated_home: Path) -> None:
    """The plugin's card keeps the plain name the invalid user card's alias would have clashed on."""
    install_distribution(tmp_path, monkeypatch, "w2sd_s", card_plugin("shared"))
    pairs = isolated_home / "pairs"
    pairs.mkdir()
    (pairs / "ghost.yaml").write_text("schema: 1\nname: ghost\naliases: [shared]\nkind: analytic\n")
    registry = build_registry(build_host())
    assert registry.get("shared").plugin == "w2sd_s"
    assert registry.get("w2sd_s:shared").plugin == "w2sd_s"
    with pytest.raises(CardError, match=r"ghost\.yaml"):
        registry.get("ghost")
    assert not any("'shared'" in p for p in registry.problems)


def test_a_plugin_card_clashing_with_a_builtin_resolves_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path, parsed: list[str]) -> None:
    install_distribution(tmp_path, monkeypatch, "w2sd_z", card_plugin("gmm-1d"))
    pairs = isolated_home / "pairs"
    pairs.mkdir()
    (pairs / "gmm-1d.yaml").write_text(GOOD.format(name="gmm-1d"))
    registry = build_registry(build_host())
    assert registry.get("gmm-1d").plugin == "w2sd"
    assert [Path(p).name for p in parsed] == ["gmm-1d.yaml"] and "registry" in parsed[0]
    assert registry.get("w2sd:gmm-1d").plugin == "w2sd"
    assert registry.get("w2sd_z:gmm-1d").plugin == "w2sd_z"
    assert registry.get("user:gmm-1d").plugin == "user"
    assert any("'gmm-1d'" in p and "w2sd_z" in p and "built-in" in p and "'w2sd_z:gmm-1d'" in p
               for p in registry.problems)
    addresses = {(e.plugin, registry.pairs.address(e)) for e in registry.pairs.entries() if e.name == "gmm-1d"}
    assert addresses == {("w2sd", "gmm-1d"), ("w2sd_z", "w2sd_z:gmm-1d"), ("user", "user:gmm-1d")}


def test_a_card_registered_twice_keeps_the_first_and_reports_a_broken_second(isolated_home: Path) -> None:
    pairs = isolated_home / "pairs"
    pairs.mkdir()
    (pairs / "twin.yaml").write_text(GOOD.format(name="twin"))
    (pairs / "twin.yml").write_text("schema: 1\nname: twin\nkind: analytic\n")
    registry = get_registry()
    assert registry.get("twin").origin.endswith("twin.yaml")
    problems = registry.problems
    assert any("registered pair 'twin' twice" in p for p in problems)
    assert any("twin.yml: invalid pair card" in p for p in problems)
