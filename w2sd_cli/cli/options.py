"""Option aliases shared by every command, so ``--seed``/``--steps``/``--device`` read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from w2sd_cli.cli.complete import pair_names

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
Seed = Annotated[int | None, typer.Option("--seed", min=0, help="Random seed (default: the card's).")]
Steps = Annotated[int | None, typer.Option("--steps", min=1, max=1000, help="Sampling steps T.")]
Lambda = Annotated[int | None, typer.Option("--lambda", min=0, help="Reflected steps λ (default: T - 1).")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
Offline = Annotated[bool, typer.Option("--offline", help="Make no network call; fail if a model is missing.")]
PairName = Annotated[str, typer.Argument(help="Pair name, alias or plugin:name.", autocompletion=pair_names)]
