"""`w2sd plugins`: every plugin with its version, hooks and status."""

from __future__ import annotations

import typer

from w2sd_cli.cli.options import JsonFlag


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)


def plugins(json_output: JsonFlag = False) -> None:
    """List plugins (built-in and installed) with version, hooks and status (ok / failed: why)."""
    from dataclasses import asdict

    from w2sd_cli.cli.output import err_console, print_json, table, warn
    from w2sd_cli.pairs import get_registry
    from w2sd_cli.plugins import get_host

    host = get_host()
    registry = get_registry()  # calling the hooks is what reveals a plugin that fails in one
    records = [asdict(r) for r in host.records.values()]
    if json_output:
        print_json({"plugins": records, "kinds": sorted(registry.kinds), "problems": registry.problems})
        return
    rows = [[r["name"], r["version"] or "-", r["origin"], ", ".join(r["hooks"]) or "-",
             "ok" if r["status"] == "ok" else f"failed: {r['error']}"] for r in records]
    err_console.print(table(f"{len(rows)} plugins", ["name", "version", "origin", "hooks", "status"], rows))
    for problem in registry.problems:
        warn(problem)
