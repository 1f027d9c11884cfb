"""Plugins through real entry points: isolation, allow-list, clashes, and a test for every hook."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.plugin_helpers import card_plugin, install_plugin
from w2sd_cli import hookspecs
from w2sd_cli.cli import build_app
from w2sd_cli.errors import KindNotFound, PairNotFound
from w2sd_cli.pairs import build_registry, get_registry
from w2sd_cli.plugins import build_host, get_host

RAISES_ON_IMPORT = "raise RuntimeError('boom at import')\n"
RAISES_IN_HOOK = """
from w2sd_cli.hookspecs import hookimpl

@hookimpl
def register_pairs(register):
    raise ValueError('boom in hook')
"""


def test_entry_point_plugin_adds_a_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "w2sd_plugin_a", card_plugin("from-plugin"))
    registry = build_registry(build_host())
    entry = registry.get("from-plugin")
    assert entry.plugin == "w2sd_plugin_a"
    record = build_host().records["w2sd_plugin_a"]
    assert record.status == "ok" and record.version == "1.0" and record.hooks == ["register_pairs"]


def test_broken_plugins_are_recorded_and_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "w2sd_broken_import", RAISES_ON_IMPORT)
    install_plugin(tmp_path, monkeypatch, "w2sd_broken_hook", RAISES_IN_HOOK)
    install_plugin(tmp_path, monkeypatch, "w2sd_fine", card_plugin("fine-pair"))
    runner = CliRunner()
    listed = runner.invoke(build_app(), ["pairs", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert "fine-pair" in listed.stdout and "gmm-2d" in listed.stdout

    shown = runner.invoke(build_app(), ["plugins", "--json"])
    assert shown.exit_code == 0
    import json

    records = {r["name"]: r for r in json.loads(shown.stdout)["plugins"]}
    assert records["w2sd_broken_import"]["status"] == "failed"
    assert "boom at import" in records["w2sd_broken_import"]["error"]
    assert records["w2sd_broken_hook"]["status"] == "failed"
    assert "register_pairs: ValueError: boom in hook" in records["w2sd_broken_hook"]["error"]
    assert records["w2sd_fine"]["status"] == "ok"

    generated = runner.invoke(build_app(), ["gen", "--pair", "fine-pair", "--out", str(tmp_path / "o"), "--json"])
    assert generated.exit_code == 0, generated.output


def test_allow_list_limits_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "w2sd_one", card_plugin("pair-one"))
    install_plugin(tmp_path, monkeypatch, "w2sd_two", card_plugin("pair-two"))
    monkeypatch.setenv("W2SD_LOAD_PLUGINS", "w2sd_two")
    registry = build_registry(build_host())
    names = {e.card.name for e in registry.entries}
    assert "pair-two" in names and "pair-one" not in names
    assert "gmm-1d" in names  # built-ins always load
    monkeypatch.setenv("W2SD_LOAD_PLUGINS", "")
    assert {e.plugin for e in build_registry(build_host()).entries} == {"w2sd"}


def test_name_clashes_are_reported_not_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "w2sd_x", card_plugin("shared-name"))
    install_plugin(tmp_path, monkeypatch, "w2sd_y", card_plugin("shared-name"))
    registry = build_registry(build_host())
    assert any("shared-name" in p and "w2sd_x" in p and "w2sd_y" in p for p in registry.problems)
    with pytest.raises(PairNotFound, match="claimed by several cards"):
        registry.get("shared-name")
    assert registry.get("w2sd_y:shared-name").plugin == "w2sd_y"


def test_a_plugin_card_clashing_with_a_builtin_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "w2sd_z", card_plugin("gmm-1d"))
    registry = build_registry(build_host())
    with pytest.raises(PairNotFound, match=r"w2sd:gmm-1d"):
        registry.get("gmm-1d")


def test_user_cards_load_and_bad_ones_do_not_brick(isolated_home: Path) -> None:
    pairs = isolated_home / "pairs"
    pairs.mkdir()
    (pairs / "mine.yaml").write_text(
        "schema: 1\nname: mine\nkind: analytic\ndescription: d\n"
        "strong: {mixture: {weights: [1], means: [[0]], stds: 1}}\n"
        "weak: {mixture: {weights: [1], means: [[0]], stds: 2}}\n"
        "options: {ideal: {weights: [1], means: [[0]], stds: 1}}\n")
    (pairs / "bad.yaml").write_text("schema: 1\nname: bad\n")
    registry = get_registry()
    assert registry.get("mine").plugin == "user"
    assert any("bad.yaml" in p for p in registry.problems)


def test_a_builtin_kind_that_cannot_load_leaves_the_others_working() -> None:
    from w2sd_cli.builtins import BuiltinKind

    host = build_host()
    host.add(BuiltinKind("w2sd_cli.no_such_module:Kind"), "w2sd.kind.broken", "built-in")
    registry = build_registry(host)
    assert host.records["w2sd.kind.broken"].status == "failed"
    assert "no_such_module" in (host.records["w2sd.kind.broken"].error or "")
    assert registry.kind(registry.get("gmm-2d").card).name == "analytic"


def test_lookup_misses_suggest_close_names() -> None:
    registry = get_registry()
    with pytest.raises(PairNotFound, match="Did you mean 'gmm-2d'"):
        registry.get("gmm-2")


def test_unknown_kind_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = card_plugin("odd-kind").replace('"kind": "analytic"', '"kind": "analytik"')
    install_plugin(tmp_path, monkeypatch, "w2sd_odd", source)
    registry = build_registry(build_host())
    with pytest.raises(KindNotFound, match="Did you mean 'analytic'"):
        registry.kind(registry.get("odd-kind").card)


def test_register_commands_and_pair_kinds_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "w2sd_cmd", """
        from w2sd_cli.hookspecs import hookimpl
        from w2sd_cli.kinds.analytic import AnalyticKind

        class Renamed(AnalyticKind):
            name = "analytic-copy"

        @hookimpl
        def register_pair_kinds(register):
            register(Renamed())
            register("not a kind")

        @hookimpl
        def register_commands(app):
            @app.command("hello")
            def hello():
                print("hello from a plugin")
        """)
    result = CliRunner().invoke(build_app(), ["hello"])
    assert result.exit_code == 0 and "hello from a plugin" in result.stdout
    registry = get_registry()
    assert "analytic-copy" in registry.kinds
    assert any("not a named PairKind" in p for p in registry.problems)


def test_metrics_and_executors_hooks_collect_registrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "w2sd_metric", """
        from w2sd_cli.hookspecs import hookimpl

        @hookimpl
        def register_metrics(register):
            register("metric-object")

        @hookimpl
        def register_executors(register):
            register("executor-object")
        """)
    host = build_host()
    assert ("w2sd_metric", "metric-object") in host.collect("register_metrics")
    assert ("w2sd_metric", "executor-object") in host.collect("register_executors")


TESTED_HOOKS = {
    "register_pairs": test_entry_point_plugin_adds_a_pair,
    "register_pair_kinds": test_register_commands_and_pair_kinds_hooks,
    "register_commands": test_register_commands_and_pair_kinds_hooks,
    "register_metrics": test_metrics_and_executors_hooks_collect_registrations,
    "register_executors": test_metrics_and_executors_hooks_collect_registrations,
}


def test_every_hook_has_a_test() -> None:
    """Meta-test: adding a hookspec without a test here fails."""
    specs = {name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")}
    assert specs == set(TESTED_HOOKS)


def test_host_is_cached_and_resettable() -> None:
    from w2sd_cli import plugins

    first = get_host()
    assert get_host() is first
    plugins.reset()
    assert get_host() is not first
