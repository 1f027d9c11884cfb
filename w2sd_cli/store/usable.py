"""Whether a downloaded file can be loaded as weights, and the message for one that is broken at its source."""

from __future__ import annotations

from pathlib import Path

from w2sd_cli.store.safety import NotWeightsError, check_weights_file, sniff


def unusable_reason(path: Path, expect_weights: bool = False) -> str | None:
    """Why ``path`` cannot be loaded as weights (truncated safetensors, an HTML page...), or ``None``.

    A file that looks like safetensors is always checked; other content only when ``expect_weights`` (a
    weights file by name). Pickle checkpoints count as usable here: they are refused at use without
    ``--allow-pickle``.
    """
    with path.open("rb") as fh:
        kind = sniff(fh.read(64))
    if kind != "safetensors" and not expect_weights:
        return None
    try:
        check_weights_file(path, allow_pickle=True)
    except NotWeightsError as err:
        return err.why
    return None


def broken_at_source(label: str, source: str, why: str, moved: Path) -> str:
    """The message for a file that downloaded intact but cannot be used as weights."""
    return (f"{label} from {source} is not usable weights: {why}. Its sha256 matches what the source lists, so "
            f"downloading it again gives the same bytes: the file is broken at the source. It was moved to {moved} "
            "and not recorded. Point the card at another revision, file or url (or add a `mirrors:` entry), or "
            "ask the model's author for a fixed file.")
