"""Pair cards: the strict schema, and one clear error per malformed card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from w2sd_cli.cards import PairCard, load_card, parse_card
from w2sd_cli.errors import CardError
from w2sd_cli.paths import registry_dir


def good_card() -> dict[str, Any]:
    return {
        "schema": 1, "name": "demo", "aliases": ["dm"], "kind": "analytic", "description": "A demo.",
        "strong": {"mixture": {"weights": [0.3, 0.7], "means": [[-4.0], [4.0]], "stds": 0.8}},
        "weak": {"mixture": {"weights": [0.1, 0.9], "means": [[-4.0], [4.0]], "stds": 0.8}},
        "defaults": {"steps": 20, "samples": 500},
        "options": {"ideal": {"weights": [0.5, 0.5], "means": [[-4.0], [4.0]], "stds": 0.8}},
    }


def with_change(path: str, value: Any) -> dict[str, Any]:
    card = good_card()
    node = card
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return card


DELETE = object()
HUB = {"repo_id": "org/model", "revision": "main"}
MALFORMED = [
    ("schema", 2, "schema"),
    ("schema", DELETE, "schema"),
    ("name", DELETE, "name"),
    ("name", "Has Spaces", "name"),
    ("kind", DELETE, "kind"),
    ("description", DELETE, "description"),
    ("colour", "blue", "colour: unknown field"),
    ("aliases", ["Bad Alias"], "alias"),
    ("aliases", "dm", "aliases"),
    ("defaults.steps", 0, "defaults.steps"),
    ("defaults.steps", "many", "defaults.steps"),
    ("defaults.lam", 99, "lam"),
    ("defaults.seed", -1, "defaults.seed"),
    ("defaults.guidance", 3, "defaults.guidance: unknown field"),
    ("strong.cfg", -1, "strong.cfg"),
    ("strong.experts", "middle", "strong.experts"),
    ("strong.model", "base", "strong.model names model 'base'"),
    ("weak.lora", "detail", "weak.lora names model 'detail'"),
    ("models", {"base": {}}, "exactly one of repo_id, url, path"),
    ("models", {"base": {**HUB, "url": "https://x.invalid/a"}}, "exactly one"),
    ("models", {"base": {"url": "https://example.com/a.safetensors"}}, "sha256"),
    ("models", {"base": {"url": "ftp://example.com/a", "sha256": "0" * 64}}, "https://"),
    ("models", {"base": {"url": "https://e.com/a", "sha256": "XYZ"}}, "models.base.sha256"),
    ("models", {"base": {**HUB, "size": -5}}, "models.base.size"),
    ("models", {"base": {**HUB, "format": "onnx"}}, "models.base.format"),
    ("strong.mixture", {"weights": [1.0], "means": [[0.0], [1.0]], "stds": 1.0}, "1 weights for 2 means"),
    ("strong.mixture", {"weights": [1.0, 1.0], "means": [[0.0], [1.0, 2.0]], "stds": 1.0}, "same dimension"),
    ("strong.mixture", {"weights": [1.0], "means": [[0.0]], "stds": -1.0}, "positive"),
]


@pytest.mark.parametrize(("path", "value", "expected"), MALFORMED, ids=[m[0] + "-" + str(i) for i, m in
                                                                          enumerate(MALFORMED)])
def test_malformed_card_gives_one_clear_error(path: str, value: Any, expected: str) -> None:
    with pytest.raises(CardError) as caught:
        parse_card(with_change(path, value), "cards/demo.yaml")
    message = str(caught.value)
    assert message.startswith("cards/demo.yaml: ")
    assert expected in message
    assert "\n" not in message


def test_every_bad_field_is_listed_at_once() -> None:
    card = with_change("defaults.steps", 0)
    card["colour"] = "blue"
    card["strong"]["cfg"] = -2
    with pytest.raises(CardError) as caught:
        parse_card(card, "x.yaml")
    message = str(caught.value)
    for field in ("defaults.steps", "colour", "strong.cfg"):
        assert field in message


def test_yaml_errors_and_non_mappings_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(CardError, match=r"broken\.yaml: not valid YAML"):
        load_card(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(CardError, match="must be a YAML mapping"):
        load_card(listed)
    with pytest.raises(CardError, match="cannot read"):
        load_card(tmp_path / "absent.yaml")


def test_local_paths_resolve_against_the_card_folder(tmp_path: Path) -> None:
    card = good_card()
    card["models"] = {"base": {"path": "models/base"}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(card))
    loaded = load_card(path)
    assert loaded.models["base"].path == str((tmp_path / "models/base").resolve())


def test_digest_does_not_depend_on_where_the_card_is_installed(tmp_path: Path) -> None:
    card = good_card()
    card["models"] = {"base": {"path": "models/base"}}
    digests = set()
    for folder in ("a", "b/c"):
        (tmp_path / folder).mkdir(parents=True)
        path = tmp_path / folder / "demo.yaml"
        path.write_text(yaml.safe_dump(card))
        loaded = load_card(path)
        assert loaded.models["base"].path == str((tmp_path / folder / "models/base").resolve())
        digests.add(loaded.digest())
    assert len(digests) == 1


def test_digest_is_stable_and_sensitive() -> None:
    a, b = parse_card(good_card()), parse_card(good_card())
    assert a.digest() == b.digest() and len(a.digest()) == 16
    assert parse_card(with_change("defaults.steps", 21)).digest() != a.digest()


def test_every_shipped_card_validates() -> None:
    cards = sorted((registry_dir() / "pairs").glob("*.yaml"))
    assert len(cards) >= 3
    names = set()
    for path in cards:
        card = load_card(path)
        assert isinstance(card, PairCard)
        assert card.name == path.stem, f"{path.name} must be named after its card"
        names.add(card.name)
    assert {"gmm-1d", "gmm-2d"} <= names
