"""Plugin names: the template refuses reserved ones; duplicate entry points and bad hook signatures are explained."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from w2sd_cli.errors import InputError
from w2sd_cli.hookspecs import hookimpl

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["user", "w2sd", "w2sd-user"])
def test_the_template_refuses_reserved_plugin_names(name: str, tmp_path: Path) -> None:
    from w2sd_cli.template import new_plugin

    with pytest.raises(InputError, match="reserved"):
        new_plugin(name, tmp_path)
    assert not list(tmp_path.iterdir())


def test_plugins_new_user_is_a_clear_error(tmp_path: Path) -> None:
    from w2sd_cli.cli import build_app

    result = CliRunner().invoke(build_app(), ["plugins", "new", "user", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "reserved" in result.output and not list(tmp_path.iterdir())


def one_copy(site: Path, module: str) -> None:
    """One installed copy of the distribution ``w2sd-twice`` (entry point ``twice``) in folder ``site``."""
    site.mkdir(parents=True)
    (site / f"{module}.py").write_text("", encoding="utf-8")
    dist = site / "w2sd_twice-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: w2sd-twice\nVersion: 1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(f"[w2sd]\ntwice = {module}\n", encoding="utf-8")


def test_a_package_installed_twice_is_warned_about(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from w2sd_cli.plugins import build_host

    one_copy(tmp_path / "a", "twice_a")
    one_copy(tmp_path / "b", "twice_b")
    monkeypatch.syspath_prepend(str(tmp_path / "b"))
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    host = build_host()
    assert host.records["twice"].origin.startswith("entry point twice_a")
    [warning] = [w for w in host.warnings if "'twice'" in w]
    assert "twice_b" in warning and "is ignored" in warning


class MisspeltHook:
    """One correct hook and one with a misspelt parameter."""

    @hookimpl
    def register_metrics(self, register: Callable[[Any], None]) -> None:
        raise AssertionError("never called: the whole plugin is refused")

    @hookimpl
    def register_pairs(self, regster: Callable[[Any], None]) -> None:
        raise AssertionError("never called")


def test_a_wrong_hook_signature_refuses_the_whole_plugin_and_says_so() -> None:
    from w2sd_cli.testing import installed_plugin

    with installed_plugin(MisspeltHook()) as host:
        record = host.records["test-plugin"]
        assert record.status == "failed" and "regster" in str(record.error)
        assert "refuses the whole plugin" in str(record.error) and "Hook signatures" in str(record.error)
    docs = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    assert "**Hook signatures.**" in docs and "refuses the whole plugin" in docs
    assert "**Entry-point names.**" in docs
