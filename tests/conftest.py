"""Shared fixtures: one torch thread, no network, a private W2SD_HOME and HF cache per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# huggingface_hub reads these at import time: set them before anything imports it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets an empty W2SD_HOME and HF_HOME and no user plugins."""
    home = tmp_path_factory.mktemp("w2sd-home")
    monkeypatch.setenv("W2SD_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.delenv("W2SD_DEBUG", raising=False)
    monkeypatch.delenv("W2SD_LOAD_PLUGINS", raising=False)
    fresh_plugins()
    yield home
    fresh_plugins()


def fresh_plugins() -> None:
    """Forget the cached plugin host, pair registry and Typer app."""
    from w2sd_cli.testing import reset

    reset()
