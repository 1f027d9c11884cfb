"""`w2sd pull` and `w2sd cache ls|verify|prune` through CliRunner and as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.store_fakes import FakeServer, Fault, safetensors_bytes, sha256
from w2sd_cli.cli import build_app

PAYLOAD = safetensors_bytes(5000)
RUNNER = CliRunner(env={"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"})


@pytest.fixture
def civ(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    """A user card ``civ`` whose one model is served by a local server."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("W2SD_MIN_FREE_MB", "1")
    fake = FakeServer(files={"/m": PAYLOAD}).start()
    (isolated_home / "pairs").mkdir()
    (isolated_home / "pairs" / "civ.yaml").write_text(
        "schema: 1\nname: civ\nkind: lora-scale\ndescription: test\nmodels:\n"
        f"  lora: {{url: '{fake.url('/m')}', sha256: {sha256(PAYLOAD)}, size: {len(PAYLOAD)}, format: lora}}\n")
    yield fake
    fake.stop()


def invoke(*args: str, input: str | None = None) -> object:
    return RUNNER.invoke(build_app(), list(args), input=input)


def test_pull_dry_run_lists_files_and_sizes_and_downloads_nothing(civ: FakeServer) -> None:
    result = invoke("pull", "civ", "--dry-run", "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    [plan] = json.loads(result.stdout)["plans"]  # type: ignore[attr-defined]
    assert plan["missing_bytes"] == len(PAYLOAD)
    assert plan["models"][0]["files"][0]["name"] == "m" and plan["models"][0]["files"][0]["present"] is False
    assert civ.log == []


def test_pull_then_ls_verify_and_prune(civ: FakeServer, isolated_home: Path) -> None:
    pulled = invoke("pull", "civ")
    assert pulled.exit_code == 0, pulled.output  # type: ignore[attr-defined]
    assert "civ: 1 model(s) ready" in pulled.stderr  # type: ignore[attr-defined]
    listed = json.loads(invoke("cache", "ls", "--json").stdout)  # type: ignore[attr-defined]
    [model] = [m for m in listed["models"] if m["pair"] == "civ"]
    assert model["present"] and model["verified"] and model["size"] == len(PAYLOAD)
    verified = invoke("cache", "verify", "civ")
    assert verified.exit_code == 0 and "ok" in verified.stderr  # type: ignore[attr-defined]
    dry = json.loads(invoke("cache", "prune", "--dry-run", "--json").stdout)  # type: ignore[attr-defined]
    assert dry["delete"] == [] and dry["dry_run"]
    (isolated_home / "pairs" / "civ.yaml").unlink()
    build_app.cache_clear()
    from w2sd_cli import plugins

    plugins.reset()
    dry = json.loads(invoke("cache", "prune", "--dry-run", "--json").stdout)  # type: ignore[attr-defined]
    assert {i["kind"] for i in dry["delete"]} == {"blob", "lockfile"}
    assert (isolated_home / "store" / "blobs" / sha256(PAYLOAD)).exists()
    pruned = invoke("cache", "prune", input="y\n")
    assert pruned.exit_code == 0, pruned.output  # type: ignore[attr-defined]
    assert not (isolated_home / "store" / "blobs" / sha256(PAYLOAD)).exists()


def test_verify_reports_a_mismatch_with_exit_code_1(civ: FakeServer, isolated_home: Path) -> None:
    invoke("pull", "civ")
    blob = next((isolated_home / "store" / "blobs" / sha256(PAYLOAD)).iterdir())
    blob.write_bytes(PAYLOAD[:-1] + b"\x07")
    result = invoke("cache", "verify")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert "mismatch" in result.stderr and "w2sd pull civ" in result.stderr  # type: ignore[attr-defined]


def test_pull_offline_fails_with_the_command_to_run(civ: FakeServer) -> None:
    result = invoke("pull", "civ", "--offline")
    assert result.exit_code == 1 and "`w2sd pull civ`" in result.stderr  # type: ignore[attr-defined]
    assert civ.log == []


def test_pull_as_a_real_subprocess(civ: FakeServer, isolated_home: Path) -> None:
    env = os.environ | {"W2SD_HOME": str(isolated_home), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "0"}
    done = subprocess.run([sys.executable, "-m", "w2sd_cli", "pull", "civ", "--json"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    [path] = json.loads(done.stdout)["pulled"]["civ"]
    assert Path(path).read_bytes() == PAYLOAD


def test_ctrl_c_during_pull_exits_130_and_the_rerun_resumes(civ: FakeServer, isolated_home: Path) -> None:
    civ.fault("/m", Fault(drip_s=0.02))
    env = os.environ | {"W2SD_HOME": str(isolated_home), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "0"}
    child = subprocess.Popen([sys.executable, "-m", "w2sd_cli", "pull", "civ"], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    part = isolated_home / "store" / "partial" / f"{sha256(PAYLOAD)}.part"
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size > 4096) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 130 and "resumes where it stopped" in err, err
    kept = part.stat().st_size
    assert 0 < kept < len(PAYLOAD)
    civ.log.clear()
    done = subprocess.run([sys.executable, "-m", "w2sd_cli", "pull", "civ"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert civ.log[0].headers["range"] == f"bytes={kept}-"
