"""`w2sd pairs list|show`: the pairs installed, from plugins, the shipped registry and the user's cards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from w2sd_cli.cli.options import JsonFlag, PairName


def register(app: typer.Typer) -> None:
    pairs_app = typer.Typer(no_args_is_help=True, help="List and inspect weak/strong pairs.")
    pairs_app.command("list")(list_pairs)
    pairs_app.command("show")(show_pair)
    app.add_typer(pairs_app, name="pairs")


def list_pairs(json_output: JsonFlag = False) -> None:
    """List every pair: name, kind, aliases, where it comes from; problems and failed plugins as warnings."""
    from w2sd_cli.cli.output import err_console, print_json, table
    from w2sd_cli.pairs import get_registry

    registry = get_registry()
    table_ = registry.pairs
    entries = sorted(table_.entries(), key=lambda e: (e.name, e.plugin))
    rows: list[dict[str, Any]] = [
        {"name": e.obj.card.name, "address": table_.address(e), "kind": e.obj.card.kind, "aliases": e.obj.card.aliases,
         "plugin": e.obj.plugin, "description": e.obj.card.description, "source": e.obj.card.source.paper,
         "origin": e.obj.origin}
        for e in entries if e.obj is not None
    ]
    invalid = [{"name": e.name, "address": table_.address(e), "plugin": e.plugin, "error": str(e.error)}
               for e in table_.invalid()]
    if json_output:
        print_json({"pairs": rows, "invalid": invalid, "problems": registry.problems,
                    "plugin_warnings": registry.plugin_warnings})
        return
    err_console.print(table(f"{len(rows)} pairs", ["name", "kind", "aliases", "plugin", "description", "source"],
                            [[r["address"], r["kind"], ", ".join(r["aliases"]) or "-", r["plugin"],
                              _first_sentence(r["description"]), _short(r["source"] or "-", 48)] for r in rows]))
    _print_problems([*registry.plugin_warnings, *registry.problems])


def show_pair(name: PairName, json_output: JsonFlag = False) -> None:
    """Show one pair's card, its resolved defaults, and its models with their cache status."""
    from w2sd_cli.cli.output import err_console, print_json, styled, table
    from w2sd_cli.pairs import get_registry

    registry = get_registry()
    entry = registry.get(name)
    card = entry.card
    kind = registry.kind(entry)
    kind.check(card)
    defaults = card.defaults.model_dump()
    defaults["lam"] = defaults["lam"] if defaults["lam"] is not None else card.defaults.steps - 1
    models = [{"key": key, "source": _source(ref), "format": ref.format, "revision": ref.revision,
               "status": _model_status(ref, card.name, key)} for key, ref in card.models.items()]
    data = {"card": card.model_dump(mode="json", by_alias=True, exclude_none=True), "plugin": entry.plugin,
            "origin": entry.origin, "kind": {"name": kind.name, "summary": kind.summary},
            "resolved_defaults": defaults, "models": models, "digest": card.digest()}
    if json_output:
        print_json(data)
        return
    import yaml

    err_console.print(styled((card.name, "bold"), f" ({kind.name}: {kind.summary})\nfrom {entry.origin}\n"))
    err_console.print(yaml.safe_dump(data["card"], sort_keys=False, allow_unicode=True).rstrip())
    err_console.print(table("resolved defaults", ["knob", "value"], [[k, v] for k, v in defaults.items()]))
    if models:
        err_console.print(table("models", ["key", "source", "format", "revision", "status"],
                                [list(m.values()) for m in models]))


def _first_sentence(text: str) -> str:
    return _short(text.split(". ")[0].split(": ")[0].strip(), 70)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _source(ref: Any) -> str:
    if ref.repo_id:
        return "/".join(p for p in (ref.repo_id, ref.subfolder, ref.filename) if p)
    if ref.url:
        from w2sd_cli.store.redact import redact_url

        return redact_url(ref.url)
    return str(ref.path)


def _model_status(ref: Any, pair: str | None = None, key: str | None = None) -> str:
    """Whether a model is available locally, without touching the network."""
    if ref.path:
        return "local" if Path(ref.path).exists() else "missing (local path)"
    try:
        from w2sd_cli import store
    except ImportError:
        return "unknown"
    status = getattr(store, "local_status", None)
    return str(status(ref, pair, key)) if status is not None else "unknown"


def _print_problems(problems: list[str]) -> None:
    from w2sd_cli.cli.output import warn

    for problem in problems:
        warn(problem)
