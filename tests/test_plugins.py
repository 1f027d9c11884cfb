"""Plugins through real entry points: isolation, allow-list, clashes, and a test for every hook."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.plugin_helpers import card_plugin, card_source, install_distribution
from w2sd_cli import hookspecs
from w2sd_cli.cli import build_app
from w2sd_cli.errors import CardError, InputError, KindNotFound, PairNotFound, PluginError
from w2sd_cli.hookspecs import hookimpl
from w2sd_cli.kinds.base import PairKind
from w2sd_cli.pairs import build_registry, get_registry
from w2sd_cli.plugins import build_host, get_host, use_host
from w2sd_cli.testing import installed_plugin

RAISES_ON_IMPORT = "raise RuntimeError('boom at import')\n"
RAISES_IN_HOOK = """
from w2sd_cli.hookspecs import hookimpl

@hookimpl
def register_pairs(register):
    raise ValueError('boom in hook')
"""


def test_entry_point_plugin_adds_a_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_distribution(tmp_path, monkeypatch, "w2sd_plugin_a", card_plugin("from-plugin"))
    registry = build_registry(build_host())
    entry = registry.get("from-plugin")
    assert entry.plugin == "w2sd_plugin_a"
    record = build_host().records["w2sd_plugin_a"]
    assert record.status == "ok" and record.version == "1.0" and record.hooks == ["register_pairs"]


def test_broken_plugins_are_recorded_and_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_distribution(tmp_path, monkeypatch, "w2sd_broken_import", RAISES_ON_IMPORT)
    install_distribution(tmp_path, monkeypatch, "w2sd_broken_hook", RAISES_IN_HOOK)
    install_distribution(tmp_path, monkeypatch, "w2sd_fine", card_plugin("fine-pair"))
    runner = CliRunner()
    listed = runner.invoke(build_app(), ["pairs", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert "fine-pair" in listed.stdout and "gmm-2d" in listed.stdout
    warnings = json.loads(listed.stdout)["plugin_warnings"]
    assert any("plugin w2sd_broken_import failed (import: RuntimeError: boom at import)" in w for w in warnings)
    assert any("plugin w2sd_broken_hook failed (register_pairs: ValueError: boom in hook)" in w for w in warnings)
    text = runner.invoke(build_app(), ["pairs", "list"])
    assert text.exit_code == 0 and "warning: plugin w2sd_broken_import failed" in " ".join(text.output.split())

    shown = runner.invoke(build_app(), ["plugins", "--json"])
    assert shown.exit_code == 0

    records = {r["name"]: r for r in json.loads(shown.stdout)["plugins"]}
    assert records["w2sd_broken_import"]["status"] == "failed"
    assert "boom at import" in records["w2sd_broken_import"]["error"]
    assert records["w2sd_broken_hook"]["status"] == "failed"
    assert "register_pairs: ValueError: boom in hook" in records["w2sd_broken_hook"]["error"]
    assert records["w2sd_fine"]["status"] == "ok"

    generated = runner.invoke(build_app(), ["gen", "--pair", "fine-pair", "--out", str(tmp_path / "o"), "--json"])
    assert generated.exit_code == 0, generated.output


def test_allow_list_limits_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_distribution(tmp_path, monkeypatch, "w2sd_one", card_plugin("pair-one"))
    install_distribution(tmp_path, monkeypatch, "w2sd_two", card_plugin("pair-two"))
    monkeypatch.setenv("W2SD_LOAD_PLUGINS", "w2sd_two")
    registry = build_registry(build_host())
    names = {e.card.name for e in registry.entries}
    assert "pair-two" in names and "pair-one" not in names
    assert "gmm-1d" in names  # built-ins always load
    monkeypatch.setenv("W2SD_LOAD_PLUGINS", "")
    assert {e.plugin for e in build_registry(build_host()).entries} == {"w2sd"}


def test_name_clashes_are_reported_not_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_distribution(tmp_path, monkeypatch, "w2sd_x", card_plugin("shared-name"))
    install_distribution(tmp_path, monkeypatch, "w2sd_y", card_plugin("shared-name"))
    registry = build_registry(build_host())
    assert any("shared-name" in p and "w2sd_x" in p and "w2sd_y" in p for p in registry.problems)
    with pytest.raises(PairNotFound, match="claimed by several plugins' pairs"):
        registry.get("shared-name")
    assert registry.get("w2sd_y:shared-name").plugin == "w2sd_y"
    assert registry.get("w2sd_x:shared-name").plugin == "w2sd_x"


def test_a_plugin_card_clashing_with_a_builtin_is_reachable_only_qualified(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_distribution(tmp_path, monkeypatch, "w2sd_z", card_plugin("gmm-1d"))
    registry = build_registry(build_host())
    assert registry.get("gmm-1d").plugin == "w2sd"
    assert registry.get("w2sd:gmm-1d").plugin == "w2sd"
    assert registry.get("w2sd_z:gmm-1d").plugin == "w2sd_z"
    assert any("'gmm-1d'" in p and "w2sd_z" in p and "built-in" in p and "'w2sd_z:gmm-1d'" in p
               for p in registry.problems)


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
    host.add(BuiltinKind("w2sd_cli.no_such_module:Kind"), "w2sd.kind.broken", "built-in", builtin=True)
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
    install_distribution(tmp_path, monkeypatch, "w2sd_odd", source)
    registry = build_registry(build_host())
    with pytest.raises(KindNotFound, match="Did you mean 'analytic'"):
        registry.kind(registry.get("odd-kind").card)


def test_register_commands_and_pair_kinds_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_distribution(tmp_path, monkeypatch, "w2sd_cmd", """
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
    install_distribution(tmp_path, monkeypatch, "w2sd_metric", """
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


class _Impostor(PairKind):
    """A plugin kind that takes the built-in analytic kind's name."""

    name = "analytic"
    summary = "an impostor"


class _ImpostorPlugin:
    @hookimpl
    def register_pair_kinds(self, register: Any) -> None:
        register(_Impostor())

    @hookimpl
    def register_pairs(self, register: Any) -> None:
        register({**_card("own-card"), "kind": "analytic"})


def _card(name: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(card_source(name), namespace)
    return dict(namespace["CARD"])


def test_a_plugin_kind_named_like_a_builtin_never_replaces_it(tmp_path: Path) -> None:
    from w2sd_cli.kinds.analytic import AnalyticKind

    with installed_plugin(_ImpostorPlugin(), "impostor"):
        registry = get_registry()
        for builtin_card in ("gmm-1d", "gmm-2d", "gmm-1d-wrong-way"):
            assert type(registry.kind(registry.get(builtin_card))) is AnalyticKind
        assert isinstance(registry.kinds.get("impostor:analytic"), _Impostor)
        assert type(registry.kinds.get("w2sd:analytic")) is AnalyticKind
        # the plugin's own card finds the plugin's own kind first
        assert isinstance(registry.kind(registry.get("own-card")), _Impostor)
        assert any("kind 'analytic' from plugin impostor clashes with the built-in" in p for p in registry.problems)
        result = CliRunner().invoke(build_app(), ["gen", "--pair", "gmm-1d", "--samples", "200", "--steps", "4",
                                                  "--out", str(tmp_path / "o"), "--json"])
        assert result.exit_code == 0, result.output


def test_a_plugin_card_named_shapes_leaves_the_default_pair_alone(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from w2sd_cli.api import DEFAULT_PAIR

    install_distribution(tmp_path, monkeypatch, "w2sd_shapes", card_plugin("shapes"))
    registry = get_registry()
    assert registry.get(DEFAULT_PAIR).plugin == "w2sd" and registry.get(DEFAULT_PAIR).card.kind == "toy-unet"
    assert registry.get("toy").plugin == "w2sd"  # the built-in's alias too
    assert registry.get("w2sd_shapes:shapes").card.kind == "analytic"
    shown = CliRunner().invoke(build_app(), ["pairs", "show", "shapes", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["plugin"] == "w2sd"
    listed = json.loads(CliRunner().invoke(build_app(), ["pairs", "list", "--json"]).stdout)
    addresses = {(p["address"], p["plugin"]) for p in listed["pairs"]}
    assert {("shapes", "w2sd"), ("w2sd_shapes:shapes", "w2sd_shapes")} <= addresses
    assert any("w2sd_shapes:shapes" in p for p in listed["problems"])


def test_plain_gen_runs_the_builtin_default_despite_a_plugin_card_named_shapes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_distribution(tmp_path, monkeypatch, "w2sd_shapes2", card_plugin("shapes"))
    result = CliRunner().invoke(build_app(), ["gen", "a red circle", "--steps", "2", "--out", str(tmp_path / "o"),
                                              "--json"])
    assert result.exit_code == 0, result.output


class _StatsImpostor:
    name = "image-stats"
    summary = "an impostor"

    def score(self, outputs: Any, prompts: Any) -> list[dict[str, float]]:
        return [{"score": 0.0} for _ in outputs]


class _OwnMetric(_StatsImpostor):
    name = "own-metric"


class _MetricPlugin:
    @hookimpl
    def register_metrics(self, register: Any) -> None:
        register(_StatsImpostor())
        register(_OwnMetric())
        register("not a metric")


def test_a_plugin_metric_named_like_a_builtin_never_replaces_it() -> None:
    from w2sd_cli.bench.metrics.base import get_metric, metric_registry
    from w2sd_cli.bench.metrics.stats import ImageStats

    with installed_plugin(_MetricPlugin(), "metricky"):
        assert type(get_metric("image-stats")) is ImageStats
        assert isinstance(get_metric("metricky:image-stats"), _StatsImpostor)
        assert isinstance(get_metric("own-metric"), _OwnMetric)
        metrics = metric_registry()
        assert "metricky:image-stats" in list(metrics) and "image-stats" in list(metrics)
        assert any("metric 'image-stats' from plugin metricky clashes" in p for p in metrics.problems)
        assert any("not a metric" in p for p in metrics.problems)
        with pytest.raises(InputError, match="Did you mean 'own-metric'"):
            get_metric("own-metrik")


class _LocalImpostor:
    name = "local"
    summary = "an impostor"

    def execute(self, job: Any, observer: Any = None) -> Any:
        raise AssertionError("the built-in local executor must run")


class _ExecutorPlugin:
    @hookimpl
    def register_executors(self, register: Any) -> None:
        register(_LocalImpostor())


def test_a_plugin_executor_named_local_never_replaces_the_builtin() -> None:
    from w2sd_cli.bench.runner import LocalExecutor, executors

    with installed_plugin(_ExecutorPlugin(), "exec"):
        runners = executors()
        assert type(runners["local"]) is LocalExecutor
        assert isinstance(runners["exec:local"], _LocalImpostor)
        assert sorted(runners) == ["exec:local", "local"]
        assert any("executor 'local' from plugin exec clashes" in p for p in runners.problems)


class _Method:
    def __init__(self, name: str, origin: str) -> None:
        self.name, self.origin = name, origin


class _MethodPlugin:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    @hookimpl
    def register_methods(self, register: Any) -> None:
        register(_Method("w2sd", self.tag))
        register(_Method(f"method-{self.tag}", self.tag))


def test_register_methods_hook_builds_a_method_registry() -> None:
    from w2sd_cli.plugins import method_registry

    host = build_host(load_entry_points=False)
    host.add(_MethodPlugin("b"), "plugin-b", "test")
    host.add(_MethodPlugin("a"), "plugin-a", "test")
    use_host(host)
    methods = method_registry(builtins=[_Method("w2sd", "built-in"), _Method("strong", "built-in")])
    assert methods.get("w2sd").origin == "built-in"
    assert methods.get("plugin-a:w2sd").origin == "a" and methods.get("method-b").origin == "b"
    # built-ins first, then plugins by name, whatever order they were installed in
    assert [(e.plugin, e.name) for e in methods.entries()] == [
        ("w2sd", "w2sd"), ("w2sd", "strong"), ("plugin-a", "w2sd"), ("plugin-a", "method-a"),
        ("plugin-b", "w2sd"), ("plugin-b", "method-b")]
    assert list(methods) == ["w2sd", "strong", "plugin-a:w2sd", "method-a", "plugin-b:w2sd", "method-b"]
    assert any("'plugin-a:w2sd', 'plugin-b:w2sd'" in p for p in methods.problems)
    with pytest.raises(PluginError, match=r"No method called 'method-c'\. Did you mean"):
        methods.get("method-c")


def test_hooks_run_builtins_first_then_plugins_by_name() -> None:
    calls: list[str] = []

    class Recorder:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        @hookimpl
        def register_commands(self, app: Any) -> None:
            calls.append(self.tag)

    for order in (["zeta", "alpha", "mid"], ["mid", "zeta", "alpha"]):
        calls.clear()
        host = build_host(load_entry_points=False)
        for tag in order:
            host.add(Recorder(tag), tag, "test")
        host.call("register_commands", app=None)
        assert calls == ["alpha", "mid", "zeta"]
    pairs = host.collect("register_pairs")
    assert pairs and {plugin for plugin, _ in pairs} == {"w2sd"}


WRAPPER = """
from w2sd_cli.hookspecs import hookimpl

@hookimpl({option}=True)
def register_pairs(register):
    register({{"schema": 1, "name": "never-seen"}})
    {body}
"""


@pytest.mark.parametrize(("option", "body"), [("wrapper", "return (yield)"), ("hookwrapper", "yield"),
                                              ("tryfirst", "pass"), ("trylast", "pass")])
def test_wrapper_and_ordering_hookimpls_are_refused(option: str, body: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    install_distribution(tmp_path, monkeypatch, f"w2sd_{option}", WRAPPER.format(option=option, body=body))
    record = get_host().records[f"w2sd_{option}"]
    assert record.status == "failed" and f"register_pairs ({option}=True)" in (record.error or "")
    listed = json.loads(CliRunner().invoke(build_app(), ["pairs", "list", "--json"]).stdout)
    assert "never-seen" not in json.dumps(listed["pairs"])
    assert any(f"plugin w2sd_{option} failed" in w and "plain @hookimpl" in w for w in listed["plugin_warnings"])


def test_an_invalid_card_gives_its_own_error_through_gen(isolated_home: Path, tmp_path: Path) -> None:
    pairs = isolated_home / "pairs"
    pairs.mkdir()
    (pairs / "broken.yaml").write_text("schema: 1\nname: broken\nkind: analytic\n")
    (pairs / "nameless.yaml").write_text("schema: 1\nkind: analytic\n")

    class BadCards:
        @hookimpl
        def register_pairs(self, register: Any) -> None:
            register({**_card("plugin-broken"), "defaults": {"steps": 0}})
            register({**_card("shapes"), "strong": {"cfg": -1}})  # invalid *and* named like the default

    with installed_plugin(BadCards(), "bad-cards"):
        runner = CliRunner()
        for name, expected in (("broken", "broken.yaml: invalid pair card: description: Field required"),
                               ("nameless", "nameless.yaml: invalid pair card: name: Field required"),
                               ("plugin-broken", "plugin bad-cards: invalid pair card: defaults.steps")):
            result = runner.invoke(build_app(), ["gen", "--pair", name, "--out", str(tmp_path / name)])
            assert result.exit_code == 1
            assert expected in result.output and "No pair called" not in result.output
        registry = get_registry()
        assert registry.get("shapes").plugin == "w2sd"
        with pytest.raises(CardError, match=r"strong\.cfg"):
            registry.get("bad-cards:shapes")
        listed = json.loads(runner.invoke(build_app(), ["pairs", "list", "--json"]).stdout)
        # the plugin's shapes card fails its kind's side model (strong.cfg), not the card schema
        assert {i["name"] for i in listed["invalid"]} == {"broken", "nameless", "plugin-broken"}


def test_user_cards_are_the_plugin_user(isolated_home: Path) -> None:
    pairs = isolated_home / "pairs"
    pairs.mkdir()
    (pairs / "gmm-1d.yaml").write_text(yaml.safe_dump(_card("gmm-1d")))
    registry = get_registry()
    assert registry.get("gmm-1d").plugin == "w2sd"
    assert registry.get("user:gmm-1d").origin == str(pairs / "gmm-1d.yaml")
    assert any("'user:gmm-1d'" in p for p in registry.problems)


def test_load_plugins_env_excludes_with_a_minus_and_warns_on_unknown_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_distribution(tmp_path, monkeypatch, "w2sd_one", card_plugin("pair-one"))
    install_distribution(tmp_path, monkeypatch, "w2sd_two", card_plugin("pair-two"))
    monkeypatch.setenv("W2SD_LOAD_PLUGINS", "-w2sd_one")
    host = build_host()
    assert "w2sd_two" in host.records and "w2sd_one" not in host.records and not host.warnings
    monkeypatch.setenv("W2SD_LOAD_PLUGINS", "w2sd_two, w2sd_tree, -w2sd_on, w2sd.kind.analytic")
    host = build_host()
    assert [r for r in host.records if not host.is_builtin(r)] == ["w2sd_two"]
    assert any("'w2sd_tree'" in w and "Did you mean 'w2sd_two'" in w for w in host.warnings)
    assert any("'w2sd_on'" in w and "Did you mean 'w2sd_one'" in w for w in host.warnings)
    assert any("built-in plugin 'w2sd.kind.analytic'" in w for w in host.warnings)
    listed = CliRunner().invoke(build_app(), ["pairs", "list"])
    assert listed.exit_code == 0 and "W2SD_LOAD_PLUGINS names 'w2sd_tree'" in listed.output


def test_reserved_plugin_names_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_distribution(tmp_path, monkeypatch, "w2sd_userish", card_plugin("from-user-ep"), entry_name="user")
    record = build_host().records["user"]
    assert record.status == "failed" and "reserved" in (record.error or "")


def test_installed_plugin_is_undone_on_exit() -> None:
    with installed_plugin(_MetricPlugin(), "metricky") as host:
        assert get_host() is host and host.records["metricky"].status == "ok"
    assert "metricky" not in get_host().records


TESTED_HOOKS = {
    "register_pairs": test_entry_point_plugin_adds_a_pair,
    "register_pair_kinds": test_register_commands_and_pair_kinds_hooks,
    "register_commands": test_register_commands_and_pair_kinds_hooks,
    "register_metrics": test_metrics_and_executors_hooks_collect_registrations,
    "register_executors": test_metrics_and_executors_hooks_collect_registrations,
    "register_methods": test_register_methods_hook_builds_a_method_registry,
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


def test_w2sd_plugins_lists_what_the_plugins_provide() -> None:
    import json

    from typer.testing import CliRunner

    from w2sd_cli.cli import build_app

    data = json.loads(CliRunner().invoke(build_app(), ["plugins", "--json"]).stdout)
    assert "local" in data["executors"] and "shapes-checker" in data["metrics"]
    assert data["methods"][:3] == ["weak", "strong", "w2sd"] and "toy-unet" in data["kinds"]
