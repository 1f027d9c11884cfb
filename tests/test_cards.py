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
    ("strong.bad-name", 1, "not a knob name"),
    ("strong.model", "base", "strong.model names model 'base'"),
    ("weak.lora", "detail", "weak.lora names model 'detail'"),
    ("models", {"base": {}}, "exactly one of repo_id, url, path"),
    ("models", {"base": {**HUB, "url": "https://x.invalid/a"}}, "exactly one"),
    ("models", {"base": {"url": "https://example.com/a.safetensors"}}, "sha256"),
    ("models", {"base": {"url": "ftp://example.com/a", "sha256": "0" * 64}}, "https://"),
    ("models", {"base": {"url": "https://e.com/a", "sha256": "XYZ"}}, "models.base.sha256"),
    ("models", {"base": {**HUB, "size": -5}}, "models.base.size"),
    ("models", {"base": {**HUB, "format": "onnx"}}, "models.base.format"),

]
SIDE_ERRORS = [  # the kind validates its own side knobs (here: the analytic kind's mixture)
    ("strong.cfg", 1.0, "strong.cfg: unknown field"),
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


@pytest.mark.parametrize(("path", "value", "expected"), SIDE_ERRORS, ids=[m[0] + "-" + str(i) for i, m in
                                                                            enumerate(SIDE_ERRORS)])
def test_a_kind_validates_its_side_knobs_and_names_the_file(path: str, value: Any, expected: str) -> None:
    from w2sd_cli.kinds.analytic import AnalyticKind

    card = parse_card(with_change(path, value), "cards/demo.yaml")
    with pytest.raises(CardError) as caught:
        AnalyticKind().check(card)
    message = str(caught.value)
    assert message.startswith("cards/demo.yaml: ") and expected in message and "\n" not in message


def test_a_plugin_kind_declares_a_side_knob_of_its_own() -> None:
    from pydantic import Field

    from w2sd_cli.cards import Strict
    from w2sd_cli.kinds.base import PairKind

    class SharpSide(Strict):
        sharpness: float = Field(0.0, ge=0)

    class SharpKind(PairKind):
        name, summary, side_model = "sharp", "a plugin kind with a knob of its own", SharpSide

    card = parse_card({**good_card(), "kind": "sharp", "strong": {"sharpness": 2.5}, "weak": {}})
    assert SharpKind().sides(card)["strong"].sharpness == 2.5 and SharpKind().sides(card)["weak"].sharpness == 0.0
    with pytest.raises(CardError, match=r"weak\.sharpness"):
        SharpKind().sides(parse_card({**good_card(), "kind": "sharp", "weak": {"sharpness": -1}}))
    with pytest.raises(CardError, match=r"strong\.mixture: unknown field"):
        SharpKind().sides(parse_card(good_card()))


# digests of every shipped card as e23d8f3 computed them: an unchanged card keeps its digest
MAIN_DIGESTS = {
    "dit-moe-s": "0baa5ea7159428af", "dpo-lora-sd15": "a5ef0fefdfaae588",
    "dreamshaper-sd15": "92fb096524e0a3e9", "flux-guidance": "aebc366f58d616ee", "flux-lora": "25e318577d4ba8d7",
    "hd-lora-demo": "0f4c73fae2be7d2f", "hd-lora": "e41970bb1444ce22", "juggernaut-cfg": "4fe01c888d639f4e",
    "juggernaut-sdxl": "067fd828bda3d3ea", "prompt-sd15": "5dacf47b6def949d", "sd35-cfg": "775d02c65846ad55",
    "sd35-large-medium": "12bd2d1296504c69", "shapes": "6c1839e761341cee", "zsampling-sd15": "4b4f9dc93139fd39",
    "zsampling-sdxl": "a0be2d776a28f588",
}
"""Digests of the cards this release did not edit, as the release before computed them."""
EDITED_DIGESTS = {
    "controlnet-canny-sd15": "7ba4637df6f5c420",  # source notes: edge maps now come from OpenCV's Canny
    "gmm-1d": "066689d136a535eb", "gmm-1d-wrong-way": "0e9ef52cd50f29b2",  # source notes point at docs/method.md
    "gmm-2d": "1699af5799ac43d6",
}
"""Cards whose text this release changed: their digests change with it (and are pinned here from now on)."""


def test_shipped_card_digests_are_those_of_the_release_before() -> None:
    digests = {p.stem: load_card(p).digest() for p in sorted((registry_dir() / "pairs").glob("*.yaml"))}
    assert set(digests) == set(MAIN_DIGESTS) | set(EDITED_DIGESTS)
    assert {k: digests[k] for k in MAIN_DIGESTS} == MAIN_DIGESTS
    assert {k: digests[k] for k in EDITED_DIGESTS} == EDITED_DIGESTS


def test_the_card_schema_is_not_the_union_of_the_kinds_knobs() -> None:
    from w2sd_cli.cards import Side

    assert not Side.model_fields  # every knob belongs to a kind's side model
    card = parse_card({**good_card(), "strong": {"anything_new": [1, 2]}})
    assert card.strong.knobs() == {"anything_new": [1, 2]} and card.strong.cfg is None


def test_every_bad_field_is_listed_at_once() -> None:
    card = with_change("defaults.steps", 0)
    card["colour"] = "blue"
    card["strong"]["Bad"] = 1
    with pytest.raises(CardError) as caught:
        parse_card(card, "x.yaml")
    message = str(caught.value)
    for field in ("defaults.steps", "colour", "'Bad' is not a knob name"):
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
