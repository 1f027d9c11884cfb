"""`w2sd pull PAIR...` and `w2sd cache ls|verify|prune`: the model store, from the command line."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from w2sd_cli.cli.complete import pair_names
from w2sd_cli.cli.options import JsonFlag, Offline
from w2sd_cli.cli.progress import DownloadProgress

DryRun = Annotated[bool, typer.Option("--dry-run", help="Show the plan (files, sizes) and change nothing.")]


PULL_HELP = """Download and verify every model of the pairs (resumable; checks free space first).

Also fetches the prompt set `w2sd pairs check PAIR` uses and, with --metrics hpsv2,pickscore,imagereward,
those metrics' weights, so that `pairs check`, `bench`, `eval` and `report` then run with the network off.

Missing files download a few at a time. A cut, a full disk, Ctrl-C or a killed process keeps partial files
(URL and Hub alike), and running the same command again resumes them.

Credentials come from the environment and are sent only to the origin they are for, over https:
CIVITAI_TOKEN (an API key from https://civitai.com/user/account) for civitai downloads that need a login, and
HF_TOKEN (or `hf auth login`) for gated or private Hugging Face repos. W2SD_DOWNLOAD_TIMEOUT (seconds, or
30s/5m/1h) stops a silent connection; W2SD_MIN_FREE_MB is the spare space kept on each disk.
"""


def register(app: typer.Typer) -> None:
    app.command("pull", help=PULL_HELP)(pull)
    cache_app = typer.Typer(no_args_is_help=True, help="What w2sd downloaded: list, verify, prune.")
    cache_app.command("ls")(ls)
    cache_app.command("verify")(verify)
    cache_app.command("prune")(prune)
    app.add_typer(cache_app, name="cache")


def pull(pairs: Annotated[list[str] | None, typer.Argument(help="Pair names or aliases.",
                                                           autocompletion=pair_names)] = None,
         metrics: Annotated[str | None, typer.Option("--metrics", help="Also fetch these metrics' weights "
                                                     "(comma-separated, e.g. hpsv2,pickscore,imagereward).")] = None,
         dry_run: DryRun = False, offline: Offline = False, json_output: JsonFlag = False) -> None:
    """Download and verify every model of the pairs, the prompt set `pairs check` uses, and metrics on request."""
    from w2sd_cli import store
    from w2sd_cli.bench.pull import metric_list, pull_extras
    from w2sd_cli.cli.output import err_console, print_json, styled
    from w2sd_cli.errors import InputError, Interrupted
    from w2sd_cli.pairs import get_registry

    pairs, wanted = pairs or [], metric_list(metrics)
    if not pairs and not wanted:
        raise InputError("Name a pair (`w2sd pairs list`) or metrics (--metrics hpsv2,pickscore) to pull.")
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
            extras = pull_extras([c.name for c in cards], wanted, offline=offline, progress=bar.observe)
    except KeyboardInterrupt:
        raise Interrupted(f"Interrupted. Finished files are kept, and each partial download (URL or Hub) resumes "
                          f"where it stopped when you run `w2sd pull {' '.join(pairs)}` again.") from None
    if json_output:
        print_json({"pulled": done, **extras.as_dict()})
        return
    for name, paths in done.items():
        err_console.print(styled(("✓", "green"), f" {name}: {len(paths)} model(s) ready"))
    for line in extras.summary():
        err_console.print(styled(("✓", "green") if line.endswith("ready") else ("·", "yellow"), f" {line}"))


def ls(json_output: JsonFlag = False) -> None:
    """List pairs' models (here or not, size, verified) and w2sd's own store."""
    from w2sd_cli import store
    from w2sd_cli.cli.output import err_console, print_json, table

    cards = _all_cards()
    models = store.model_status(cards)
    items = store.store_items(cards, _other_users())
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
    broken = sorted({r.pair for r in results if r.status == "unusable"})
    if bad or broken:
        said = []
        if bad:
            said.append(f"Files of {', '.join(bad)} do not match their recorded sha256 (see above). Run `w2sd pull "
                        f"{' '.join(bad)}`: downloaded copies are quarantined and fetched again in the same run "
                        "(a changed file of your own is left alone and named).")
        if broken:
            said.append(f"Files of {', '.join(broken)} match their hashes but are not usable weights. Run `w2sd "
                        f"pull {' '.join(broken)}`: it moves them aside and says whether the source itself is "
                        "broken (then point the card at another source or a mirror).")
        raise ModelError(" ".join(said))


def prune(dry_run: DryRun = False, yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
          json_output: JsonFlag = False) -> None:
    """Delete what no pair needs from w2sd's store (plan first; the HF cache is left to `hf cache`)."""
    from w2sd_cli import store
    from w2sd_cli.cli.output import err_console, print_json, table, warn

    plan = store.plan_prune(_all_cards(), _invalid_cards(), _other_users())
    if json_output:
        print_json({"delete": [i.as_dict() for i in plan.items], "bytes": plan.bytes, "dry_run": dry_run,
                    "kept_for_invalid_cards": [{**i.as_dict(), "card": origin} for i, origin in plan.kept]})
    for origin in [] if json_output else dict.fromkeys(o for _, o in plan.kept):
        names = [i.path.name for i, o in plan.kept if o == origin]
        warn(f"kept {len(names)} item(s) ({', '.join(names)}) because {origin} names them but does not validate "
             "right now; fix that card (`w2sd pairs list` shows why), or delete it to let prune free them.")
    if not json_output and not plan.items:
        err_console.print("Nothing to prune: every file in w2sd's store is needed by a pair.")
    elif not json_output:
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


def _all_cards() -> list[Any]:
    from w2sd_cli.pairs import get_registry

    return [e.card for e in get_registry().entries]


def _other_users() -> dict[str, list[str]]:
    """What prompt sets and metrics (not pairs) need, never pruned: ``{sha256 or lock name: ["prompts:NAME"]}``.

    Read from the prompt-set and metric card files' text (shipped and the user's), so a card that does not
    validate right now still keeps its files; a metric card also keeps its lock file (``metric-NAME.json``),
    which is how ``w2sd pull --metrics`` finds its weights offline.
    """
    import re

    from w2sd_cli.bench.metrics.reward import lock_name
    from w2sd_cli.paths import home, registry_dir

    users: dict[str, list[str]] = {}
    for what in ("prompts", "metrics"):
        for folder in (registry_dir() / what, home() / what):
            for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
                try:
                    text = path.read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                user = f"{what}:{path.stem}"
                for sha in dict.fromkeys(re.findall(r"\b[0-9a-f]{64}\b", text)):
                    users.setdefault(sha, []).append(user)
                if what == "metrics":
                    users.setdefault(lock_name(path.stem), []).append(user)
    return users


def _invalid_cards() -> list[tuple[str, str]]:
    """``(file, text)`` of the user's card files that exist but do not validate now."""
    from w2sd_cli.cards import load_card
    from w2sd_cli.errors import W2SDError
    from w2sd_cli.paths import user_pairs_dir

    folder = user_pairs_dir()
    out = []
    for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")) if folder.is_dir() else []:
        try:
            load_card(path)
        except W2SDError:
            try:
                out.append((str(path), path.read_text(encoding="utf-8", errors="replace")))
            except OSError:
                continue
    return out


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
