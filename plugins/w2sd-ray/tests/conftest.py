"""One local Ray instance (2 CPUs, no dashboard) for the session; a private W2SD_HOME and fresh plugins per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local test instance: no token file in $HOME

import pytest


@pytest.fixture(autouse=True)
def fresh(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from w2sd_cli.testing import reset

    monkeypatch.setenv("W2SD_HOME", str(tmp_path_factory.mktemp("w2sd-home")))
    monkeypatch.delenv("W2SD_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("W2SD_RAY_ADDRESS", raising=False)
    reset()
    yield
    reset()


def start_local(ray: Any) -> None:
    """A Ray instance on this machine with 2 CPUs (so 2 CPU actors), unless one is running."""
    import logging

    if not ray.is_initialized():
        # address="local": a new instance even when a killed head left /tmp/ray/ray_current_cluster behind
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """Ray, with the local instance shared by every test that needs one (a test may swap it; see below)."""
    import ray

    start_local(ray)
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_plugin(ray_local: Any) -> Iterator[Any]:
    """The plugin registered in-process (installed or not), with the session's Ray instance (started again
    if a test replaced it with a cluster of its own)."""
    import w2sd_ray

    from w2sd_cli.testing import installed_plugin

    start_local(ray_local)
    with installed_plugin(w2sd_ray, "ray"):
        yield ray_local
