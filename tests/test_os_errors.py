"""Ordinary disk conditions are one paragraph naming the path and the fix, never "This is a bug", and output
folders are checked before any model loads: a file in the path, /proc, a 300-byte name, a read-only and a full
tmpfs, an immutable folder, a folder without write permission (root with CAP_DAC_OVERRIDE dropped), and a
disk that fills up in the middle of a bench (every finished item kept, the resume completes)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests import bench_instant
from tests.bench_helpers import invoke, prompt_file
from w2sd_cli.bench.manifest import read_lines

RUNNER = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
ROOT = Path(__file__).parents[1]


def run_cli(*args: object) -> Any:
    from w2sd_cli.cli import build_app

    return RUNNER.invoke(build_app(), [str(a) for a in args])


def failed_with(result: Any, *needles: str) -> str:
    """The one-line message of a run that failed as an ordinary error mentioning every needle."""
    text = " ".join(result.output.split())
    assert result.exit_code == 1, text
    assert "This is a bug" not in text and "Unexpected error" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


@pytest.fixture
def spy_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every model load of `w2sd gen` (none may happen before the --out check)."""
    import w2sd_cli.api

    calls: list[str] = []
    real = w2sd_cli.api.load_pair

    def load_pair(pair: str, **kwargs: Any) -> Any:
        calls.append(pair)
        return real(pair, **kwargs)

    monkeypatch.setattr(w2sd_cli.api, "load_pair", load_pair)
    return calls


def _mount(target: Path, *options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(target)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount small tmpfs file systems under tmp_path (unmounted after the test)."""
    mounted: list[Path] = []

    def make(name: str, *options: str) -> Path:
        target = tmp_path / name
        _mount(target, *options)
        mounted.append(target)
        return target

    yield make
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


def fill(folder: Path) -> None:
    """Write into ``folder`` until its file system is full."""
    with (folder / "filler").open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass


def test_gen_out_inside_a_file_names_the_file_before_any_model_loads(tmp_path: Path, spy_loads: list[str]) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    result = run_cli("gen", "--pair", "gmm-1d", "--out", blocker / "pictures")
    failed_with(result, f"Cannot write the output folder {blocker / 'pictures'}: {blocker} is a file, not a folder.",
                "move that file away")
    assert spy_loads == []


def test_gen_out_under_proc_says_it_is_a_virtual_file_system(spy_loads: list[str]) -> None:
    result = run_cli("gen", "--pair", "gmm-1d", "--out", "/proc/w2sd-out/pictures")
    failed_with(result, "/proc/w2sd-out/pictures", "/proc is on a virtual file system",
                "Choose a folder on a real disk")
    assert spy_loads == []


def test_gen_out_that_is_a_file_path_png_inside_a_file(tmp_path: Path, spy_loads: list[str]) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    failed_with(run_cli("gen", "--pair", "gmm-1d", "--out", blocker / "cat.png"),
                f"Cannot write the output folder {blocker}: it is a file, not a folder")
    assert spy_loads == []


def test_bench_into_a_file_and_a_300_byte_name(tmp_path: Path) -> None:
    blocker = tmp_path / "run.txt"
    blocker.write_text("x")
    failed_with(run_cli("bench", "gmm-1d", "--out", blocker), f"Cannot write the bench run folder {blocker}: it is "
                "a file, not a folder")
    failed_with(run_cli("bench", "gmm-1d", "--out", blocker / "run"), f"{blocker} is a file, not a folder")
    long = tmp_path / ("a" * 300) / "run"
    text = failed_with(run_cli("bench", "gmm-1d", "--out", long), "too long for the file system",
                       "the longest part has 300 bytes", "Use a shorter path")
    assert str(tmp_path) in text
    assert not any(tmp_path.iterdir()) or list(tmp_path.iterdir()) == [blocker], "the check left nothing behind"


def test_eval_and_report_check_their_folders(tmp_path: Path) -> None:
    run = tmp_path / "run"
    invoke("bench", "gmm-1d", "--seeds", "0-1", "--samples", "64", "--steps", "4", "--methods", "strong,w2sd",
           "--out", run)
    (run / "scores").write_text("not a folder")
    failed_with(run_cli("eval", run), f"Cannot write the run's scores folder {run / 'scores'}: it is a file")
    (run / "scores").unlink()
    invoke("eval", run)
    blocker = tmp_path / "report.txt"
    blocker.write_text("x")
    failed_with(run_cli("report", run, "--out", blocker / "report"), f"{blocker} is a file, not a folder")


def test_a_read_only_file_system(tmpfs: Callable[..., Path], spy_loads: list[str]) -> None:
    ro = tmpfs("ro", "size=1m", "ro")
    failed_with(run_cli("bench", "gmm-1d", "--out", ro / "run"),
                f"Cannot write the bench run folder {ro / 'run'}: it is on a read-only file system",
                "remount it read-write")
    failed_with(run_cli("gen", "--pair", "gmm-1d", "--out", ro / "pictures"), "read-only file system")
    assert spy_loads == []


def test_a_full_disk_is_reported_before_the_run(tmpfs: Callable[..., Path], spy_loads: list[str]) -> None:
    full = tmpfs("full", "size=64k")
    fill(full)
    failed_with(run_cli("bench", "gmm-1d", "--out", full / "run"),
                f"Cannot write the bench run folder {full / 'run'}: the disk is full", "w2sd cache prune")
    failed_with(run_cli("gen", "--pair", "gmm-1d", "--out", full / "pictures"), "the disk is full")
    assert spy_loads == []
    assert sorted(p.name for p in full.iterdir()) == ["filler"], "no probe file or folder is left"


def test_a_disk_that_fills_during_a_bench_keeps_every_finished_item(tmp_path: Path,
                                                                     tmpfs: Callable[..., Path]) -> None:
    bench_instant.install()
    prompts = prompt_file(tmp_path, ["a fox", "a cat", "a hen"])
    disk = tmpfs("small", "size=40k")
    run = disk / "run"
    args = ("bench", "instant", "--prompts", prompts, "--seeds", "0-3", "--methods", "strong,w2sd", "--out", run)
    text = failed_with(run_cli(*args), "the disk is full", "the same command resumes")
    assert str(run) in text
    kept = read_lines(run / "manifest.rank-0.jsonl")
    assert 0 < len(kept) < 24
    subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
    invoke(*args)
    ids = [line["id"] for line in read_lines(run / "manifest.jsonl")]
    assert len(ids) == len(set(ids)) == 24
    assert {line["id"] for line in kept} <= set(ids)


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "frozen"
    folder.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=False)


def test_an_immutable_folder(immutable: Path) -> None:
    failed_with(run_cli("bench", "gmm-1d", "--out", immutable / "run"),
                f"Cannot write the bench run folder {immutable / 'run'}: the operation is not permitted",
                "immutable", "chattr -i")


def test_permission_denied_for_a_process_without_dac_override(tmp_path: Path) -> None:
    """Root ignores permission bits; a child with CAP_DAC_OVERRIDE dropped from its bounding set does not."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    done = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-m",
                           "w2sd_cli", "bench", "gmm-1d", "--out", str(locked / "run")],
                          capture_output=True, text=True, env=env, timeout=120)
    text = " ".join(done.stderr.split())
    assert done.returncode == 1, text
    assert "This is a bug" not in text
    assert f"Cannot write the bench run folder {locked / 'run'}: permission denied" in text
    assert "fix its permissions" in text


@pytest.mark.parametrize(("code", "words"), [
    (errno.EDQUOT, "quota"), (errno.EFBIG, "ulimit -f"), (errno.EIO, "dmesg"), (errno.EMFILE, "ulimit -n"),
    (errno.EXDEV, "one disk"), (errno.ELOOP, "symbolic links"), (errno.EBUSY, "busy"),
    (errno.ENOENT, "does not exist"), (errno.EISDIR, "is a folder where a file is needed"),
])
def test_every_errno_has_its_own_fix_and_names_the_path(code: int, words: str) -> None:
    """The errnos no test here can cause for real (a quota, a failing disk...), through the one mapping."""
    from w2sd_cli.errors import PathError, from_os_error

    err = from_os_error(OSError(code, os.strerror(code), "/data/run/items/x.png"))
    assert isinstance(err, PathError)
    assert "/data/run/items/x.png" in str(err) and words in str(err)


def test_network_errors_name_the_url_with_its_secrets_masked() -> None:
    import socket

    from w2sd_cli.errors import DownloadError, from_os_error

    url = "https://user:pw@files.example/m.safetensors?X-Amz-Signature=abc123&token=t0k"
    for err, words in ((socket.gaierror(-2, "Name or service not known"), "does not resolve"),
                       (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "connection refused"),
                       (TimeoutError("timed out"), "did not answer in time")):
        mapped = from_os_error(err, url=url)
        assert isinstance(mapped, DownloadError) and words in str(mapped)
        assert "https://files.example/m.safetensors?X-Amz-Signature=***&token=***" in str(mapped)
        assert "abc123" not in str(mapped) and "pw@" not in str(mapped)


def test_a_real_bug_is_still_called_one_and_its_text_is_masked(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import w2sd_cli.api

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("https://h.example/x?sig=SECRET123")

    monkeypatch.setattr(w2sd_cli.api, "load_pair", broken)
    result = run_cli("gen", "--pair", "gmm-1d", "--out", tmp_path / "out")
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "This is a bug" in text
    assert "sig=***" in text and "SECRET123" not in text


def test_pull_into_a_read_only_model_store(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.store_fakes import FakeServer, safetensors_bytes, sha256

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("W2SD_MIN_FREE_MB", "0")
    payload = safetensors_bytes(500)
    fake = FakeServer(files={"/m": payload}).start()
    try:
        (isolated_home / "pairs").mkdir()
        (isolated_home / "pairs" / "civ.yaml").write_text(
            "schema: 1\nname: civ\nkind: lora-scale\ndescription: test\nmodels:\n"
            f"  lora: {{url: '{fake.url('/m')}', sha256: {sha256(payload)}, size: {len(payload)}, format: lora}}\n")
        store = isolated_home / "store"
        store.mkdir()
        _mount(store, "ro", "size=1m")
        try:
            failed_with(run_cli("pull", "civ"), f"Cannot write {store}", "read-only file system", "W2SD_HOME")
        finally:
            subprocess.run(["umount", "-l", str(store)], check=False)
    finally:
        fake.stop()
