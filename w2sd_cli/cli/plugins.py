"""`w2sd plugins`: every plugin with its version, hooks and status; `w2sd plugins new NAME` starts one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from w2sd_cli.cli.options import JsonFlag


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Plugins: list them, or start a new one.", invoke_without_command=True)
    group.callback()(plugins)
    group.command("new")(new)
    app.add_typer(group, name="plugins")


def new(
    name: Annotated[str, typer.Argument(help="The plugin's name, e.g. my-pairs (the package is w2sd-my-pairs).")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to create the package folder.")] = Path("."),
) -> None:
    """Write a working plugin package (a card, a kind, a metric and tests) to start from."""
    from w2sd_cli.cli.output import err_console
    from w2sd_cli.template import new_plugin

    files = new_plugin(name, directory)
    root = files[0].parent
    for path in files:
        err_console.print(f"wrote {path}", markup=False)
    err_console.print(f"Next: pip install -e {root} && pytest {root} && w2sd pairs list", markup=False)


def plugins(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """List plugins (built-in and installed) with version, hooks and status (ok / failed: why)."""
    if ctx.invoked_subcommand is not None:
        return
    from dataclasses import asdict

    from w2sd_cli.bench.metrics.base import metric_registry
    from w2sd_cli.bench.runner import executors
    from w2sd_cli.cli.output import err_console, print_json, table, warn
    from w2sd_cli.methods import all_methods
    from w2sd_cli.pairs import get_registry
    from w2sd_cli.plugins import get_host

    host = get_host()
    registry = get_registry()  # calling the hooks is what reveals a plugin that fails in one
    records = [asdict(r) for r in host.records.values()]
    provided = {"kinds": sorted(registry.kinds), "metrics": sorted(metric_registry()),
                "methods": list(all_methods()), "executors": sorted(executors())}
    if json_output:
        print_json({"plugins": records, **provided, "problems": registry.problems, "warnings": host.warnings})
        return
    rows = [[r["name"], r["version"] or "-", r["origin"], ", ".join(r["hooks"]) or "-",
             "ok" if r["status"] == "ok" else f"failed: {r['error']}"] for r in records]
    err_console.print(table(f"{len(rows)} plugins", ["name", "version", "origin", "hooks", "status"], rows))
    for what, names in provided.items():
        err_console.print(f"{what}: {', '.join(names)}", soft_wrap=True)
    for problem in [*host.warnings, *registry.problems]:
        warn(problem)
