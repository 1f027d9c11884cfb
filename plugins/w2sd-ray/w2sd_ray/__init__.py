"""w2sd on Ray: ``w2sd bench PAIR --executor ray [-X address=HOST:PORT]`` renders a grid on a Ray cluster.

One actor per GPU (or per CPU on a cluster without GPUs) loads the pair once and renders batches of items;
the driver alone writes outputs and manifest lines, so workers need no shared folder. Ray is imported only
when the executor runs: registering it costs nothing for `w2sd --help`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from w2sd_cli.plugin import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_executors(register: Callable[[Any], None]) -> None:
    from w2sd_ray.executor import RayExecutor

    register(RayExecutor())
