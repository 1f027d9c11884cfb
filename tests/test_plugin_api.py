"""The plugin API is one import: what methods and executors need is exported by `w2sd_cli.plugin`, the docs'
examples import only that and run as written, the Ray plugin imports nothing else, the `testing` docstring
example defines every name it uses, and the scaffold's tests drive the installed `w2sd` command."""

from __future__ import annotations

import ast
import builtins
import json
import re
import subprocess
import sys
import types
from pathlib import Path

from typer.testing import CliRunner

import w2sd_cli.plugin
from w2sd_cli.testing import installed_plugin

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _section(title: str) -> str:
    return DOCS.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _imports(source: str) -> list[tuple[str, list[str]]]:
    return [(node.module or "", [a.name for a in node.names]) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom)]


def test_what_methods_and_executors_need_is_exported_without_torch() -> None:
    needed = {"sample_w2sd", "sample_plain", "extrapolate", "SampleResult", "PHASES", "BenchJob", "BenchOutcome",
              "Executor", "Observer", "Grid", "WorkItem", "batches", "plan_share", "run_share", "render_batch",
              "PartWriter", "part_path", "finished", "merge", "atomic_path", "sha256_of", "library_versions"}
    assert needed <= set(w2sd_cli.plugin.__all__)
    assert all(getattr(w2sd_cli.plugin, name) is not None for name in w2sd_cli.plugin.__all__)
    assert "reflect" in w2sd_cli.plugin.sample_w2sd.__kwdefaults__
    code = ("import json, sys, w2sd_cli.plugin; "
            "print(json.dumps(sorted(m for m in ('torch', 'diffusers') if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_the_docs_import_only_the_plugin_module() -> None:
    for block in _python_blocks(DOCS):
        for module, names in _imports(block):
            if module.startswith("w2sd_cli"):
                assert module in ("w2sd_cli.plugin", "w2sd_cli.testing"), (module, block)
                assert all(hasattr(sys.modules.get(module) or w2sd_cli.plugin, n) for n in names), (names, block)
    for section in ("Methods", "Executors"):
        assert "w2sd_cli.bench" not in _section(section) and "w2sd_cli.sampling" not in _section(section)


def test_the_callback_event_shape_is_documented() -> None:
    methods = _section("Methods")
    for word in ('"denoise"', '"reflect-denoise"', '"reflect-invert"', "`i`", "`steps`", "`phase`"):
        assert word in methods, word


def test_the_docs_method_example_runs_as_written(tmp_path: Path) -> None:
    namespace: dict[str, object] = {}
    exec(compile(_python_blocks(_section("Methods"))[0], "docs/plugins.md", "exec"), namespace)  # our own docs
    plugin = types.SimpleNamespace(register_methods=namespace["register_methods"])
    with installed_plugin(plugin, "doc-methods"):
        from w2sd_cli.cli import build_app

        result = CliRunner().invoke(build_app(), ["gen", "--pair", "gmm-1d", "--methods", "strong,w2sd-2r,w2sd-even",
                                                  "--samples", "200", "--steps", "10", "--out", str(tmp_path),
                                                  "--json"])
    assert result.exit_code == 0, result.output
    methods = json.loads(result.stdout)["methods"]
    assert methods["strong"]["nfe"] == 10
    assert methods["w2sd-2r"]["nfe"] == 10 + 2 * 2 * 9
    assert methods["w2sd-even"]["nfe"] == 10 + 2 * 5


def test_the_ray_plugin_imports_only_the_plugin_module() -> None:
    for path in sorted((ROOT / "plugins" / "w2sd-ray" / "w2sd_ray").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        internal = {m for m in modules if m.startswith("w2sd_cli")}
        assert internal <= {"w2sd_cli.plugin"}, (path.name, internal)


def _undefined(source: str) -> set[str]:
    tree = ast.parse(source)
    bound = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound


def test_the_testing_docstring_example_defines_what_it_uses() -> None:
    import textwrap

    import w2sd_cli.testing

    doc = w2sd_cli.testing.__doc__ or ""
    example = textwrap.dedent(doc.split("::\n", 1)[1].split("\nThe tiny-model", 1)[0])
    assert "def test_my_card_is_listed" in example
    assert _undefined(example) == set()


def test_the_scaffold_tests_drive_the_installed_command(tmp_path: Path) -> None:
    from w2sd_cli.template import new_plugin

    written = new_plugin("my-pairs", tmp_path)
    tests = next(p for p in written if p.name == "test_plugin.py").read_text(encoding="utf-8")
    modules = {m for m, _names in _imports(tests)} | {
        a.name for n in ast.walk(ast.parse(tests)) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in modules if m.startswith("w2sd_cli")} <= {"w2sd_cli", "w2sd_cli.testing", "w2sd_cli.plugin"}
    assert "w2sd_cli.cli" not in tests and '"-m", "w2sd_cli"' in tests
