"""`w2sd pull PAIR...` and `w2sd cache ls|verify|prune`: the model store, from the command line."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from w2sd_cli.cli.complete import pair_names
from w2sd_cli.cli.options import JsonFlag, Offline
from w2sd_cli.cli.progress import ObserverProgress

DryRun = Annotated[bool, typer.Option("--dry-run", help="Show the plan (files, sizes) and change nothing.")]


def register(app: typer.Typer) -> None:
    app.command("pull")(pull)
    cache_app = typer.Typer(no_args_is_help=True, help="What w2sd downloaded: list, verify, prune.")
    cache_app.command("ls")(ls)
    cache_app.command("verify")(verify)
    cache_app.command("prune")(prune)
    app.add_typer(cache_app, name="cache")


def pull(pairs: Annotated[list[str], typer.Argument(help="Pair names or aliases.", autocompletion=pair_names)],
         dry_run: DryRun = False, offline: Offline = False, json_output: JsonFlag = False) -> None:
    """Download and verify every model of the pairs (resumable; checks free space first)."""
    from w2sd_cli import store
    from w2sd_cli.cli.output import err_console, print_json
    from w2sd_cli.errors import Interrupted
    from w2sd_cli.pairs import get_registry

    registry = get_registry()
    cards = [registry.get(name).card for name in pairs]
    if dry_run:
        plans = [store.plan_pull(card, offline=offline) for card in cards]
        if json_output:
            print_json({"plans": [_plan_dict(p) for p in plans]})
        for plan in [] if json_output else plans:
            _print_plan(plan)
        return
    done: dict[str, list[str]] = {}
    try:
        with DownloadProgress(quiet=json_output) as bar:
            for card in cards:
                done[card.name] = [str(p) for p in store.pull(card, progress=bar.observe, offline=offline)]
    except KeyboardInterrupt:
        raise Interrupted(f"Interrupted. Finished files are kept, and a partial download resumes where it stopped "
                          f"when you run `w2sd pull {' '.join(pairs)}` again.") from None
    if json_output:
        print_json({"pulled": done})
        return
    for name, paths in done.items():
        err_console.print(f"[green]✓[/green] {name}: {len(paths)} model(s) ready", markup=True)


def ls(json_output: JsonFlag = False) -> None:
    """List pairs' models (here or not, size, verified) and w2sd's own store."""
    from w2sd_cli import store
    from w2sd_cli.cli.output import err_console, print_json, table

    cards = _all_cards()
    models = store.model_status(cards)
    items = store.store_items(cards)
    if json_output:
        print_json({"models": [m.as_dict() for m in models], "store": [i.as_dict() for i in items],
                    "store_dir": str(store.layout.store_dir()), "hf_cache": _hf_cache()})
        return
    err_console.print(table(f"{len(models)} models", ["pair", "model", "source", "here", "size", "verified"],
                            [[m.pair, m.key, m.source, "yes" if m.present else "no",
                              store.human(m.size) if m.size else "-", "yes" if m.verified else "no"]
                             for m in models]))
    if items:
        err_console.print(table(f"w2sd store ({store.layout.store_dir()})", ["kind", "name", "size", "used by"],
                                [[i.kind, i.path.name, store.human(i.size), ", ".join(i.used_by) or "-"]
                                 for i in items]))


def verify(pair: Annotated[str | None, typer.Argument(help="Only this pair (default: all).")] = None,
           json_output: JsonFlag = False) -> None:
    """Re-hash every downloaded file and compare it with the card's pin or the pair's lock file."""
    from w2sd_cli import store
    from w2sd_cli.cli.output import err_console, print_json, table
    from w2sd_cli.errors import ModelError
    from w2sd_cli.pairs import get_registry

    cards = [get_registry().get(pair).card] if pair else _all_cards()
    with DownloadProgress(quiet=json_output) as bar:
        results = store.verify(cards, progress=bar.observe)
    if json_output:
        print_json({"results": [r.as_dict() for r in results]})
    else:
        err_console.print(table(f"{len(results)} files", ["pair", "model", "file", "status"],
                                [[r.pair, r.key, r.file, r.status] for r in results]))
    bad = sorted({r.pair for r in results if r.status == "mismatch"})
    if bad:
        raise ModelError(f"Files of {', '.join(bad)} do not match their recorded sha256 (see above). Run "
                         f"`w2sd pull {' '.join(bad)}`: downloaded copies are quarantined and fetched again.")


def prune(dry_run: DryRun = False, yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
          json_output: JsonFlag = False) -> None:
    """Delete what no pair needs from w2sd's store (plan first; the HF cache is left to `hf cache`)."""
    from w2sd_cli import store
    from w2sd_cli.cli.output import err_console, print_json, table

    plan = store.plan_prune(_all_cards())
    if json_output:
        print_json({"delete": [i.as_dict() for i in plan.items], "bytes": plan.bytes, "dry_run": dry_run})
    elif not plan.items:
        err_console.print("Nothing to prune: every file in w2sd's store is needed by a pair.")
    else:
        err_console.print(table(f"prune plan: {len(plan.items)} items, {store.human(plan.bytes)}",
                                ["kind", "path", "size"],
                                [[i.kind, str(i.path), store.human(i.size)] for i in plan.items]))
    if dry_run or not plan.items:
        return
    if not yes and not typer.confirm(f"Delete these {len(plan.items)} items?", err=True):
        raise typer.Exit(1)
    freed = store.execute_prune(plan)
    if not json_output:
        err_console.print(f"freed {store.human(freed)}")


class DownloadProgress(ObserverProgress):
    """One rich bar per file, with speed and time left, on stderr; fed by the store's progress dicts."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.progress import DownloadColumn, TimeRemainingColumn, TransferSpeedColumn

        super().__init__(DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), quiet=quiet)

    def observe(self, info: dict[str, Any]) -> None:
        name = str(info.get("file"))
        status = str(info.get("status", ""))
        label = f"{name} ({status})" if status in ("verifying",) else name
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(label, total=info.get("bytes_total"))
        self.progress.update(self.tasks[name], description=label, completed=info.get("bytes_done", 0),
                             total=info.get("bytes_total"))


def _all_cards() -> list[Any]:
    from w2sd_cli.pairs import get_registry

    return [e.card for e in get_registry().entries]


def _hf_cache() -> str | None:
    try:
        from w2sd_cli.store import hub

        return str(hub.cache_dir())
    except ImportError:
        return None


def _plan_dict(plan: Any) -> dict[str, Any]:
    return {"pair": plan.pair, "missing_bytes": plan.missing_bytes,
            "space": [{"folder": str(f), "needed": n, "free": free} for f, n, free in plan.space()],
            "models": [{"key": m.key, "source": m.source, "commit": m.commit, "target": str(m.target),
                        "files": [f.__dict__ for f in m.files]} for m in plan.models]}


def _print_plan(plan: Any) -> None:
    from w2sd_cli.cli.output import err_console, table
    from w2sd_cli.store import human

    rows = [[m.key, f.name, human(f.size) if f.size is not None else "?",
             "here" if f.present else (f"partial {human(f.partial)}" if f.partial else "to download")]
            for m in plan.models for f in m.files]
    unknown = any(f.size is None and not f.present for m in plan.models for f in m.files)
    title = f"{plan.pair}: {human(plan.missing_bytes)}{' + files of unknown size' if unknown else ''} to download"
    err_console.print(table(title, ["model", "file", "size", "status"], rows))
    for folder, need, free in plan.space():
        err_console.print(f"{folder}: needs {human(need)}, {human(free)} free")
