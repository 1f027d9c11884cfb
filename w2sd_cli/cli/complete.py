"""Shell completion of pair and metric names (``w2sd --install-completion``).

Completion runs on every Tab press, so it reads the cards and the metric table only (no torch) and never
fails: a broken plugin or card just completes nothing.
"""

from __future__ import annotations


def pair_names(incomplete: str) -> list[tuple[str, str]]:
    """Pair names and aliases starting with ``incomplete`` (``plugin:name`` once a colon is typed), with help."""
    try:
        from w2sd_cli.pairs import get_registry

        offers: dict[str, str] = {}
        for entry in sorted(get_registry().entries, key=lambda e: e.card.name):
            names = [entry.qualified_name] if ":" in incomplete else [entry.card.name, *entry.card.aliases]
            for name in names:
                offers.setdefault(name, f"{entry.card.kind}: {_first_line(entry.card.description)}")
    except Exception:
        return []
    return [(name, text) for name, text in offers.items() if name.startswith(incomplete)]


def metric_names(incomplete: str) -> list[tuple[str, str]]:
    """Metric names starting with ``incomplete``, with the metric's summary."""
    try:
        from w2sd_cli.bench.metrics.base import metric_registry

        metrics = metric_registry()
    except Exception:
        return []
    return [(name, _first_line(getattr(metrics[name], "summary", "") or type(metrics[name]).__name__))
            for name in sorted(metrics) if name.startswith(incomplete)]


def _first_line(text: str, width: int = 60) -> str:
    """The first sentence, cut to ``width`` (zsh and fish show it beside the name)."""
    sentence = " ".join(text.split()).split(". ")[0]
    return sentence if len(sentence) <= width else sentence[: width - 1] + "…"
