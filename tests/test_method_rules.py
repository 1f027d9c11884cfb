"""The rules of the method, applied once by the engine for every family: the plain weak baseline, coincidence
detection independent of method order and seed count, each method's own grid in its recipe, and one
``diffusers`` kind (``kind: flow`` an alias) with no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.flow_helpers import flow_card, flux_transformer, save_flux, save_sd3, save_transformer_lora
from tests.image_helpers import card_dict, save_lora, save_sd, save_sdxl, sd_unet
from w2sd_cli.api import pair_from_card
from w2sd_cli.cards import parse_card

PROMPT = "a photo of a red fox"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rule-models")
    return {"sd3": save_sd3(root / "sd3"), "sd3_tuned": save_sd3(root / "sd3-tuned", seed=4),
            "flux": save_flux(root / "flux"),
            "flux_lora": save_transformer_lora(root / "flux-lora", flux_transformer(0), "flux"),
            "sd": save_sd(root / "sd"), "lora": save_lora(root / "lora", sd_unet(0)), "xl": save_sdxl(root / "xl"),
            "xl_tuned": save_sdxl(root / "xl-tuned", seed=5)}


def cards(m: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Guidance, LoRA and checkpoint pairs of every family."""
    sd3, flux, sd, xl = ({"path": str(m[k])} for k in ("sd3", "flux", "sd", "xl"))
    small = {"defaults": {"steps": 3, "width": 16, "height": 16}}
    return {
        "sd3-cfg": flow_card("sd3-cfg", {"m": sd3}, strong={"cfg": 4.5}, weak={"cfg": 0.0}, final={"cfg": 4.5}),
        "sd3-checkpoint": flow_card("sd3-checkpoint", {"m": {"path": str(m["sd3_tuned"])}, "base": sd3},
                                    strong={"model": "m"}, weak={"model": "base"}, final={"cfg": 3.0}),
        "flux-guidance": flow_card("flux-guidance", {"flux": flux}, strong={"guidance": 3.5}, weak={"guidance": 1.0},
                                   final={"guidance": 3.5}),
        "flux-lora": flow_card("flux-lora", {"flux": flux, "d": {"path": str(m["flux_lora"]), "format": "lora"}},
                               strong={"lora": "d", "lora_scale": 1.0}, weak={"lora_scale": -1.0}),
        "sd-cfg": card_dict("sd-cfg", {"base": sd}, strong={"cfg": 5.5}, weak={"cfg": 0.0}, **small),
        "sd-lora": card_dict("sd-lora", {"base": sd, "d": {"path": str(m["lora"]), "format": "lora"}},
                             strong={"lora": "d", "lora_scale": 0.8}, weak={"lora_scale": -1.5}, **small),
        "sdxl-checkpoint": card_dict("sdxl-checkpoint", {"tuned": {"path": str(m["xl_tuned"])}, "base": xl},
                                     strong={"model": "tuned"}, weak={"model": "base"},
                                     defaults={"steps": 3, "width": 32, "height": 32}),
    }


def mean_difference(a: Any, b: Any) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


@pytest.mark.parametrize("name", ["sd3-cfg", "sd3-checkpoint", "flux-guidance", "flux-lora", "sd-cfg", "sd-lora",
                                  "sdxl-checkpoint"])
def test_weak_and_extrapolate_differ_from_strong_on_every_family(models: dict[str, Path], name: str) -> None:
    pair = pair_from_card(parse_card(cards(models)[name]))
    made = pair.compare(PROMPT, seeds=[0], methods=["strong", "weak", "extrapolate"], steps=3)
    strong = made.samples["strong"][0]
    for method in ("weak", "extrapolate"):
        sample = made.samples[method][0]
        assert sample.same_as is None, (method, sample.same_as)
        assert mean_difference(sample.image, strong.image) > 0.0, method
    sides = strong.recipe["sides"]
    if name in ("sd3-cfg", "sd-cfg", "flux-guidance"):  # guidance pairs: the weak side as the card gives it
        assert sides["weak_plain"] == sides["weak"]
    else:  # the weak side at the final side's guidance knobs
        assert (sides["weak_plain"]["cfg"], sides["weak_plain"]["guidance"]) == \
            (sides["final"]["cfg"], sides["final"]["guidance"])


def test_kind_flow_is_an_alias_of_the_one_diffusers_kind(models: dict[str, Path]) -> None:
    data = cards(models)["sd3-cfg"]
    as_flow = pair_from_card(parse_card(data)).generate(PROMPT, seeds=[2], method="w2sd")[0]
    as_diffusers = pair_from_card(parse_card({**data, "kind": "diffusers"})).generate(PROMPT, seeds=[2],
                                                                                        method="w2sd")[0]
    assert as_flow.image.tobytes() == as_diffusers.image.tobytes()


def test_coincidence_does_not_depend_on_method_order_or_seed_count(models: dict[str, Path]) -> None:
    # a self pair (weak = strong = final): the weak baseline, first-order and extrapolate are the strong one
    data = card_dict("self", {"base": {"path": str(models["sd"])}}, strong={"cfg": 2.0}, weak={"cfg": 2.0},
                     final={"cfg": 2.0}, defaults={"steps": 3, "width": 16, "height": 16})
    pair = pair_from_card(parse_card(data))
    methods = ["strong", "weak", "extrapolate", "first-order", "w2sd"]
    seen = []
    for order in (methods, methods[::-1]):
        for seeds in ([0], [0, 1, 2]):
            pair.engine._recent.clear()
            made = pair.compare(PROMPT, seeds=seeds, methods=order)
            seen.append({m: made.samples[m][0].same_as for m in methods})
            assert made.samples["weak"][0].image.tobytes() == made.samples["strong"][0].image.tobytes()
            assert made.samples["first-order"][-1].image.tobytes() == made.samples["extrapolate"][-1].image.tobytes()
    # eps_f + k (eps_f - eps_f) is eps_f exactly: both controls are the strong baseline here
    assert seen[0] == {"strong": None, "weak": "strong", "extrapolate": "strong", "first-order": "strong",
                       "w2sd": None}
    assert all(s == seen[0] for s in seen)


def test_the_equal_nfe_recipe_records_the_grid_it_ran(models: dict[str, Path]) -> None:
    pair = pair_from_card(parse_card(cards(models)["sd-lora"]))
    made = pair.compare(PROMPT, seeds=[0], methods=["strong", "equal-nfe"], steps=3, lam=2)
    strong, equal = made.samples["strong"][0], made.samples["equal-nfe"][0]
    assert len(strong.recipe["grid"]) == 3 + 1 and len(equal.recipe["grid"]) == 3 + 2 * 2 + 1
    assert equal.nfe == 7


def test_the_sides_are_resolved_once_per_load(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from w2sd_cli.kinds import diffusers

    calls = []
    real = diffusers.resolve_sides
    monkeypatch.setattr(diffusers, "resolve_sides", lambda *a, **k: calls.append(1) or real(*a, **k))
    pair = pair_from_card(parse_card(cards(models)["sd-lora"]))
    pair.compare(PROMPT, seeds=[0, 1], methods=["weak", "strong", "w2sd"], steps=2)
    assert len(calls) == 1  # check, download and load share one resolution; never per condition or method


def module_imports(path: Path, package: Path) -> set[str]:
    """Every w2sd_cli module ``path`` imports, at module level or inside functions (TYPE_CHECKING excluded)."""
    tree = ast.parse(path.read_text())
    checking = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(
        node.test) for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("w2sd_cli"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if (package.parent / (
                f"{node.module}.{a.name}".replace(".", "/") + ".py")).exists()}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("w2sd_cli")}
    return out


def test_kinds_and_adapters_have_no_import_cycle_not_even_inside_functions() -> None:
    import w2sd_cli

    package = Path(w2sd_cli.__file__).parent
    files = [*package.glob("kinds/*.py"), *package.glob("adapters/*.py")]
    graph = {}
    for path in files:
        name = "w2sd_cli." + ".".join(path.relative_to(package).with_suffix("").parts)
        graph[name] = {m for m in module_imports(path, package) if m.startswith(("w2sd_cli.kinds.",
                                                                                    "w2sd_cli.adapters."))}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, set()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = [name for name in graph if reaches(name, name, {name})]
    assert cycles == []
    lines = sum(len((package / f).read_text().splitlines()) for f in (
        "kinds/diffusers.py", "kinds/diffusers_sides.py", "kinds/diffusers_pair.py", "adapters/families.py",
        "adapters/flow.py", "adapters/unet.py"))
    assert lines < 1400  # the kinds and adapters they replace: 1,568 lines
