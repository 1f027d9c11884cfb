"""`w2sd gen` as a library call: resolve the pair, check its card, fetch its models, run its kind."""

from __future__ import annotations

from typing import TYPE_CHECKING

from w2sd_cli.errors import Interrupted
from w2sd_cli.kinds.base import GenRequest, GenResult
from w2sd_cli.pairs import PairEntry, PairRegistry, get_registry

if TYPE_CHECKING:
    from w2sd_cli.sampling import Callback

DEFAULT_PAIR = "shapes"


def generate(pair: str, request: GenRequest, observer: Callback | None = None,
             registry: PairRegistry | None = None) -> tuple[PairEntry, GenResult]:
    """Run one generation request against a named pair.

    Args:
        pair: a pair name, alias or ``plugin:name``.
        request: the user's request (``None`` fields take the card's defaults).
        observer: per-phase progress callback.
        registry: the pair registry (default: the process-wide one).

    Returns:
        The pair's entry and what its kind produced.
    """
    registry = registry or get_registry()
    entry = registry.get(pair)
    kind = registry.kind(entry.card)
    kind.check(entry.card)
    resolved = request.resolved(entry.card)
    try:
        return entry, kind.generate(entry.card, resolved, observer)
    except KeyboardInterrupt:
        raise Interrupted("Interrupted: no partial output was kept. Run the same command again.") from None
