"""One torch thread for tiny CPU work, unless the user chose a count.

torch splits every CPU op over all cores (OpenMP) by default. The tiny pairs' ops (the shapes pair's
1 M-parameter UNet at 32×32, the closed-form mixtures) are too small to split well, and when another process
holds a core, torch's threads wait for each other at every op: on a 2-core machine with one core busy, the
shapes pair sampled 51× slower with torch's default 2 threads than with 1, and the gmm-2d pair 5× slower
(``benchmarks/bench_threads.py``). So w2sd runs tiny pairs on one thread on the CPU.

The user's choice wins: ``W2SD_THREADS=N`` sets the count for these pairs, and an ``OMP_NUM_THREADS`` or
``MKL_NUM_THREADS`` already in the environment is left to torch. torch is imported inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from w2sd_cli.errors import InputError

ENV = "W2SD_THREADS"
TORCH_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
SMALL_WORK_THREADS = 1


def threads_for_small_work(environ: Mapping[str, str] | None = None) -> int | None:
    """The thread count tiny CPU work should use, or ``None`` to leave torch's setting as the user made it.

    Raises:
        InputError: ``W2SD_THREADS`` is neither a positive integer nor ``auto``.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(ENV, "").strip()
    if raw and raw.lower() != "auto":
        try:
            count = int(raw)
        except ValueError:
            count = 0
        if count < 1:
            raise InputError(f"{ENV}={raw!r} is not a thread count: set a positive integer, or `auto` (one thread "
                             "for tiny pairs on the CPU unless OMP_NUM_THREADS is set).")
        return count
    if any(environ.get(name, "").strip() for name in TORCH_ENV):
        return None
    return SMALL_WORK_THREADS


def limit_threads_for_small_work(device: Any = "cpu") -> int | None:
    """Set torch's thread count for a tiny pair on ``device`` (only the CPU is touched).

    Args:
        device: where the pair runs: ``"cpu"``, ``"cuda:0"``, a ``torch.device`` or ``None`` (the CPU).

    Returns:
        The count torch had before, when this changed it (to restore later), else ``None``.
    """
    if device is not None and not str(device).startswith("cpu"):
        return None
    count = threads_for_small_work()
    if count is None:
        return None
    import torch

    previous = int(torch.get_num_threads())
    if previous == count:
        return None
    torch.set_num_threads(count)
    return previous


@contextmanager
def small_work_threads(device: Any = "cpu") -> Iterator[None]:
    """:func:`limit_threads_for_small_work` for a block; torch's count is restored after it (the Python API
    may load a large pair next in the same process)."""
    previous = limit_threads_for_small_work(device)
    try:
        yield
    finally:
        if previous is not None:
            import torch

            torch.set_num_threads(previous)
