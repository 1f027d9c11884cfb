"""Which share of the work this process does: ``--shard i/N``, torchrun/accelerate or SLURM variables.

Every rank computes the same split on its own from the run plan, with no collective call: the bench deals
the grid's canonical positions out (``Grid.owner``), never a gathered list. ``Shard.take`` splits a list of
ids the same exact way (sorted, round-robin) for callers that hold one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from w2sd_cli.errors import InputError


@dataclass(frozen=True)
class Shard:
    """Rank ``rank`` of ``world`` processes; ``local_rank`` picks the GPU; ``source`` says what set it."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    source: str = "single process"

    def take(self, ids: Sequence[str]) -> list[str]:
        """This rank's ids: every ``world``-th id in sorted order, starting at ``rank``."""
        return sorted(ids)[self.rank::self.world]


def parse_shard(spec: str) -> Shard:
    """``"i/N"`` with ``0 <= i < N``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if match is None or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise InputError(f"--shard {spec!r}: write i/N with 0 <= i < N, e.g. --shard 0/4.")
    return Shard(int(match.group(1)), int(match.group(2)), 0, "--shard")


def detect_shard(env: Mapping[str, str] | None = None, explicit: str | None = None) -> Shard:
    """This process's shard: ``explicit`` (``--shard``), else torchrun/accelerate's ``RANK``/``WORLD_SIZE``,
    else a SLURM job array (``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``, times ``SLURM_NTASKS``
    tasks of one step), else the whole grid.
    """
    env = os.environ if env is None else env
    if explicit:
        return parse_shard(explicit)
    if _int(env, "WORLD_SIZE", 1) > 1:
        rank, world = _int(env, "RANK", 0), _int(env, "WORLD_SIZE", 1)
        return _checked(Shard(rank, world, _int(env, "LOCAL_RANK", 0), "RANK/WORLD_SIZE (torchrun, accelerate)"))
    tasks, procid = _int(env, "SLURM_NTASKS", 1), _int(env, "SLURM_PROCID", 0)
    if "SLURM_ARRAY_TASK_ID" in env:
        index = _int(env, "SLURM_ARRAY_TASK_ID", 0) - _int(env, "SLURM_ARRAY_TASK_MIN", 0)
        if "SLURM_ARRAY_TASK_COUNT" in env:
            count = _int(env, "SLURM_ARRAY_TASK_COUNT", 1)
        elif "SLURM_ARRAY_TASK_MAX" in env and _int(env, "SLURM_ARRAY_TASK_STEP", 1) == 1:
            count = _int(env, "SLURM_ARRAY_TASK_MAX", 0) - _int(env, "SLURM_ARRAY_TASK_MIN", 0) + 1
        else:
            raise InputError("This SLURM array does not say how many tasks it has; pass --shard "
                             "$SLURM_ARRAY_TASK_ID/N (ids 0..N-1).")
        return _checked(Shard(index * tasks + procid, count * tasks, _int(env, "SLURM_LOCALID", 0), "SLURM array"))
    if tasks > 1:
        return _checked(Shard(procid, tasks, _int(env, "SLURM_LOCALID", 0), "SLURM_PROCID/SLURM_NTASKS"))
    return Shard()


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer.") from None


def _checked(shard: Shard) -> Shard:
    if not 0 <= shard.rank < shard.world:
        raise InputError(f"rank {shard.rank} is outside 0..{shard.world - 1} (from {shard.source}).")
    return shard
