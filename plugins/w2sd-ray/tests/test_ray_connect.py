"""With no address, the executor starts its own local Ray instance, whatever a killed head left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest


def test_the_target_is_the_address_then_ray_address_then_a_new_local_instance(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from w2sd_ray.executor import ray_target

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_target(None) == "local" and ray_target("") == "local"
    assert ray_target("head:6379") == "head:6379"
    monkeypatch.setenv("RAY_ADDRESS", "ray://cluster:10001")
    assert ray_target(None) == "ray://cluster:10001"


def test_a_stale_current_cluster_file_does_not_stop_a_local_run() -> None:
    temp = tempfile.mkdtemp(prefix="w2r", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    try:
        (Path(temp) / "ray").mkdir()
        (Path(temp) / "ray" / "ray_current_cluster").write_text("127.0.0.1:9\n")  # a head that was killed
        script = textwrap.dedent("""
            from w2sd_ray.executor import _connect
            ray, mine = _connect(None)
            print(mine, int(ray.cluster_resources().get("CPU", 0)) >= 1)
            ray.shutdown()
        """)
        env = {**os.environ, "RAY_TMPDIR": temp, "RAY_AUTH_MODE": "disabled"}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split()[-2:] == ["True", "True"]
    finally:
        shutil.rmtree(temp, ignore_errors=True)
