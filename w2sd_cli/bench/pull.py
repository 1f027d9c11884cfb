"""What `w2sd pull` fetches besides a pair's models, so that `pairs check`, `bench`, `eval` and `report` then
run with the network off: the prompt set `pairs check PAIR` uses and, on request (``--metrics``), the weights
of metrics. Downloads go through the store (resumable, verified); nothing is printed here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2sd_cli.errors import CardError, DownloadError, OfflineError

Progress = Callable[[dict[str, Any]], None]


@dataclass
class Extras:
    """What was fetched: prompt sets by name, and each metric's model paths by key."""

    prompts: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, dict[str, str]] = field(default_factory=dict)
    check_metrics: dict[str, str] = field(default_factory=dict)  # pair -> the metric `pairs check` scores with
    prompt_failures: dict[str, str] = field(default_factory=dict)  # prompt set -> why it could not be fetched

    def as_dict(self) -> dict[str, Any]:
        return {"prompts": self.prompts, "metrics": self.metrics, "check_metrics": self.check_metrics,
                "prompt_failures": self.prompt_failures}

    def summary(self) -> list[str]:
        """Lines for the terminal: what is ready offline, and what `pairs check` would still need."""
        lines = [f"prompt set {name} ready" for name in self.prompts]
        lines += [f"prompt set {name} (for `w2sd pairs check`) could not be fetched: {why} The models are ready; "
                  "run the same `w2sd pull` again when the network is back to have `pairs check` work offline."
                  for name, why in self.prompt_failures.items()]
        lines += [f"metric {name}: {len(paths)} model(s) ready" for name, paths in self.metrics.items()]
        lines += [f"`w2sd pairs check {pair}` scores with {metric}: add `--metrics {metric}` to have it offline"
                  for pair, metric in self.check_metrics.items() if metric not in self.metrics and _has_card(metric)]
        return lines


def metric_list(text: str | None) -> list[str]:
    """``"hpsv2, pickscore,imagereward"`` as names in order, without repeats or blanks."""
    names = [n.strip() for n in (text or "").split(",")]
    return list(dict.fromkeys(n for n in names if n))


def pull_extras(pairs: Sequence[str], metrics: Sequence[str], *, offline: bool = False,
                progress: Progress | None = None) -> Extras:
    """Fetch each pair's `pairs check` prompt set and every named metric's models (pickles are downloaded, and
    refused later at use without ``--allow-pickle``). A prompt set that cannot be fetched is recorded in
    ``prompt_failures`` (the pair's models are what `pull` is for); a metric asked for that fails raises.

    Args:
        pairs: pair names or aliases.
        metrics: metric names (``w2sd eval --list``); one without a metric card has nothing to download.
        offline: make no network call: only check that everything is already here.
        progress: the store's download callbacks.
    """
    from w2sd_cli.bench.metrics.base import get_metric

    for name in metrics:
        get_metric(name)  # an unknown name fails before any download, with close names
    extras = Extras()
    for pair in pairs:
        prompts, metric = check_defaults(pair)
        if metric is not None:
            extras.check_metrics[pair] = metric
        if prompts is not None:
            try:
                path = fetch_prompt_set(prompts, offline=offline, progress=progress)
            except (DownloadError, OfflineError) as err:  # the pair's models are pulled: say so, and what is missing
                extras.prompt_failures[prompts] = str(err)
                continue
            if path is not None:
                extras.prompts[prompts] = str(path)
    for name in metrics:
        extras.metrics[name] = {key: str(path) for key, path in fetch_metric(name, offline, progress).items()}
    return extras


def check_defaults(pair: str) -> tuple[str | None, str | None]:
    """The prompt set and metric `w2sd pairs check PAIR` uses when given none; (None, None) when the pair's
    kind is not installed (its models can still be pulled, and `pairs check` will say what is missing)."""
    from w2sd_cli.bench.check import defaults_for
    from w2sd_cli.errors import W2SDError
    from w2sd_cli.pairs import get_registry

    registry = get_registry()
    entry = registry.get(pair)
    try:
        kind = registry.kind(entry)
    except W2SDError:
        return None, None
    return defaults_for(entry.card, kind)


def fetch_prompt_set(name: str, *, offline: bool = False, progress: Progress | None = None) -> Path | None:
    """The downloaded file of a registry prompt set (fetched if missing); None for a shipped or local file."""
    from w2sd_cli.bench.prompts import fetch_card, prompt_cards

    card = prompt_cards().get(name)
    return None if card is None else fetch_card(card, offline, progress)


def fetch_metric(name: str, offline: bool = False, progress: Progress | None = None) -> dict[str, Path]:
    """Every model of a metric's card, downloaded and verified; {} for a metric without a card."""
    from w2sd_cli.bench.metrics.reward import lock_name, metric_card
    from w2sd_cli.store import locate

    if not _has_card(name):
        return {}
    card = metric_card(name)
    return {key: Path(locate(ref, offline=offline, allow_pickle=True, progress=_keyed(progress, key),
                             pair=lock_name(name), key=key))
            for key, ref in card.models.items()}


def _has_card(name: str) -> bool:
    from w2sd_cli.bench.metrics.reward import metric_card

    try:
        metric_card(name)
    except CardError as err:
        if "has no card" in str(err):
            return False
        raise
    return True


def _keyed(progress: Progress | None, key: str) -> Progress | None:
    """Per-file events tagged with the model key, so two models' same-named files get their own bars."""
    if progress is None:
        return None
    observer = progress
    return lambda info: observer({"key": key, **info})
