"""URL downloads against a real local server, one injected fault per test.

After every fault: nothing partial or wrong is accepted, nothing finished is lost, the next run succeeds.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store_fakes import FakeServer, Fault, safetensors_bytes, sha256
from w2sd_cli.cards import PairCard, parse_card
from w2sd_cli.errors import DownloadError, ModelError, OfflineError
from w2sd_cli.store import fetch, layout, locate, pairlock, plan_pull, pull
from w2sd_cli.store.layout import find_blob, part_path

PAYLOAD = safetensors_bytes(60_000)  # ~240 kB
SHA = sha256(PAYLOAD)
PATH = "/api/download/models/42"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer(files={PATH: PAYLOAD}).start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def civitai_is_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """127.0.0.1 plays civitai; ``localhost`` is a foreign storage host."""
    monkeypatch.setenv("W2SD_CIVITAI_HOSTS", "127.0.0.1")
    monkeypatch.setenv("W2SD_TOKEN_OVER_HTTP_LOOPBACK", "1")  # the local server speaks http
    monkeypatch.delenv("CIVITAI_TOKEN", raising=False)
    monkeypatch.setenv("W2SD_MIN_FREE_MB", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # URL downloads need no huggingface_hub: online in-process


def card(url: str, sha: str = SHA, size: int | None = len(PAYLOAD)) -> PairCard:
    model = {"url": url, "sha256": sha, "format": "lora"} | ({"size": size} if size else {})
    return parse_card({"schema": 1, "name": "civ", "kind": "lora-scale", "description": "t",
                       "models": {"lora": model}})


def get(fake: FakeServer) -> Path:
    c = card(fake.url(PATH))
    return locate(c.models["lora"], pair=c.name, key="lora")


def assert_clean_failure() -> None:
    """No blob accepted after a failed run."""
    assert find_blob(SHA) is None


def test_pull_stores_blob_records_lock_and_then_works_offline(server: FakeServer) -> None:
    events: list[dict] = []
    [path] = pull(card(server.url(PATH)), progress=events.append)
    assert path == layout.blob_dir(SHA) / "model.safetensors"
    assert path.read_bytes() == PAYLOAD
    files = [e for e in events if e["event"] == "file"]
    assert files[-1]["status"] == "done" and files[-1]["bytes_done"] == len(PAYLOAD)
    assert events[-1] == {"event": "done", "pair": "civ", "paths": {"lora": str(path)}}
    assert any(e["status"] == "downloading" and e["bytes_total"] == len(PAYLOAD) for e in files)
    entry = pairlock.read_lock("civ")["models"]["lora"]
    assert entry["files"] == {"model.safetensors": {"sha256": SHA, "size": len(PAYLOAD)}}
    server.stop()
    c = card(server.url(PATH))
    assert locate(c.models["lora"], offline=True, pair="civ", key="lora") == path


def test_offline_missing_names_the_pull_command_and_makes_no_request(server: FakeServer) -> None:
    c = card(server.url(PATH))
    with pytest.raises(OfflineError, match=r"`w2sd pull civ`"):
        locate(c.models["lora"], offline=True, pair="civ", key="lora")
    assert server.log == []


def test_body_cut_mid_stream_is_resumed_with_range(server: FakeServer) -> None:
    server.fault(PATH, Fault(cut_after=100_000))
    path = get(server)
    assert path.read_bytes() == PAYLOAD
    ranges = [s.headers.get("range") for s in server.requests(PATH)]
    assert ranges == [None, "bytes=100000-"]
    assert not part_path(SHA).exists()


def test_cut_every_time_keeps_the_part_and_the_next_run_resumes(server: FakeServer) -> None:
    server.fault(PATH, Fault(cut_after=20_000, times=20))
    with pytest.raises(DownloadError, match="keeps breaking off"):
        get(server)
    assert_clean_failure()
    kept = part_path(SHA).stat().st_size
    assert kept >= 20_000
    server.faults.clear()
    server.log.clear()
    assert get(server).read_bytes() == PAYLOAD
    assert server.requests(PATH)[0].headers["range"] == f"bytes={kept}-"


def test_server_gone_then_back(server: FakeServer) -> None:
    port = server.port
    server.stop()
    with pytest.raises(DownloadError, match="Cannot reach"):
        get(server)
    assert_clean_failure()
    back = FakeServer(files={PATH: PAYLOAD}).start(port)
    try:
        assert get(back).read_bytes() == PAYLOAD
    finally:
        back.stop()


def test_401_without_token_says_set_civitai_token_then_token_works(
        server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.fault(PATH, Fault(need_token="s3cret", times=2))
    with pytest.raises(DownloadError, match="set CIVITAI_TOKEN") as err:
        get(server)
    assert_clean_failure()
    assert not part_path(SHA).exists()
    monkeypatch.setenv("CIVITAI_TOKEN", "wrong-token")
    with pytest.raises(DownloadError, match="refused the token") as err:
        get(server)
    assert "wrong-token" not in str(err.value)
    monkeypatch.setenv("CIVITAI_TOKEN", "s3cret")
    assert get(server).read_bytes() == PAYLOAD


def test_403_from_another_host_sends_no_token(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVITAI_TOKEN", "s3cret")
    server.fault(PATH, Fault(status=403, body=b"Forbidden: s3cret", content_type="text/plain"))
    c = card(server.url(PATH, host="localhost"))
    with pytest.raises(DownloadError, match="refused access") as err:
        locate(c.models["lora"])
    assert "s3cret" not in str(err.value)
    assert "authorization" not in server.log[0].headers


def test_tiny_json_error_body_is_not_saved(server: FakeServer) -> None:
    server.fault(PATH, Fault(body=b'{"error":"Model requires login"}', content_type="application/json"))
    with pytest.raises(DownloadError, match=r"JSON message.*Model requires login.*CIVITAI_TOKEN"):
        get(server)
    assert_clean_failure()
    assert not part_path(SHA).exists()
    assert get(server).read_bytes() == PAYLOAD


def test_html_login_page_served_as_octet_stream_is_not_saved(server: FakeServer) -> None:
    page = b"<!DOCTYPE html><html><body>Please log in</body></html>"
    server.fault(PATH, Fault(body=page, content_type="application/octet-stream"))
    with pytest.raises(DownloadError, match="HTML page"):
        get(server)
    assert_clean_failure()
    assert not part_path(SHA).exists()
    assert get(server).read_bytes() == PAYLOAD


def test_wrong_sha256_quarantines_and_keeps_nothing(server: FakeServer) -> None:
    wrong = "0" * 64
    c = card(server.url(PATH), sha=wrong)
    with pytest.raises(ModelError, match=f"expected sha256 {wrong}.*got {SHA}"):
        locate(c.models["lora"])
    assert find_blob(wrong) is None and not part_path(wrong).exists()
    bad = list(layout.quarantine_dir().iterdir())  # fetched twice in the run, both copies kept
    assert len(bad) == 2 and all(b.read_bytes() == PAYLOAD for b in bad)
    assert get(server).read_bytes() == PAYLOAD


def test_slow_drip_times_out_then_next_run_resumes(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("W2SD_DOWNLOAD_TIMEOUT", "0.3")
    server.fault(PATH, Fault(cut_after=None, drip_s=0.6))
    with pytest.raises(DownloadError, match="sent nothing for"):
        get(server)
    assert_clean_failure()
    assert get(server).read_bytes() == PAYLOAD


def test_enospc_keeps_the_part_and_resumes(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    written = {"n": 0}
    real = fetch.write_chunk

    def disk_fills(fh: object, chunk: bytes) -> None:
        if written["n"] + len(chunk) > 150_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        written["n"] += len(chunk)
        real(fh, chunk)

    monkeypatch.setattr(fetch, "write_chunk", disk_fills)
    with pytest.raises(DownloadError, match=r"is full.*resumes"):
        get(server)
    assert_clean_failure()
    kept = part_path(SHA).stat().st_size
    assert 0 < kept <= 150_000
    monkeypatch.setattr(fetch, "write_chunk", real)
    server.log.clear()
    assert get(server).read_bytes() == PAYLOAD
    assert server.requests(PATH)[0].headers["range"] == f"bytes={kept}-"


def test_server_that_ignores_range_restarts_cleanly(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    part = part_path(SHA)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage-not-a-prefix")
    server.fault(PATH, Fault(ignore_range=True))
    assert get(server).read_bytes() == PAYLOAD


def test_free_space_is_checked_before_anything_is_downloaded(server: FakeServer) -> None:
    huge = card(server.url(PATH), size=10**16)
    plan = plan_pull(huge)
    assert plan.missing_bytes == 10**16
    with pytest.raises(DownloadError, match=r"needs 10000\.0 TB more .* free"):
        pull(huge)
    assert server.log == []


def test_redirect_to_a_foreign_host_does_not_carry_the_token(
        server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVITAI_TOKEN", "s3cret")
    server.files["/storage/blob"] = PAYLOAD
    server.fault(PATH, Fault(redirect=server.url("/storage/blob", host="localhost")))
    assert get(server).read_bytes() == PAYLOAD
    first, second = server.log
    assert first.host == "127.0.0.1" and first.headers["authorization"] == "Bearer s3cret"
    assert second.host == "localhost" and "authorization" not in second.headers


def _child(code: str, home: Path) -> subprocess.Popen[str]:
    env = os.environ | {"W2SD_HOME": str(home), "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_processes_pulling_the_same_file_download_it_once(server: FakeServer, isolated_home: Path) -> None:
    server.fault(PATH, Fault(drip_s=0.002, times=2))
    code = f"""
        from w2sd_cli.store.fetch import fetch_url
        print(fetch_url({server.url(PATH)!r}, {SHA!r}, size={len(PAYLOAD)}))
    """
    children = [_child(code, isolated_home) for _ in range(2)]
    outs = [c.communicate(timeout=60) for c in children]
    assert [c.returncode for c in children] == [0, 0], outs
    assert outs[0][0] == outs[1][0] == f"{layout.blob_dir(SHA) / 'model.safetensors'}\n"
    assert len(server.requests(PATH)) == 1
    assert find_blob(SHA).read_bytes() == PAYLOAD  # type: ignore[union-attr]


def test_sigint_mid_download_keeps_the_part_and_the_rerun_resumes(server: FakeServer, isolated_home: Path) -> None:
    server.fault(PATH, Fault(drip_s=0.01))
    child = _child(f"""
        from w2sd_cli.store.fetch import fetch_url
        fetch_url({server.url(PATH)!r}, {SHA!r}, size={len(PAYLOAD)})
    """, isolated_home)
    part = part_path(SHA)
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size > 10_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)
    assert child.returncode != 0 and "KeyboardInterrupt" in err
    assert_clean_failure()
    kept = part.stat().st_size
    assert 10_000 <= kept < len(PAYLOAD)
    server.log.clear()
    assert get(server).read_bytes() == PAYLOAD
    assert server.requests(PATH)[0].headers["range"] == f"bytes={kept}-"


def test_lock_left_by_a_killed_process_is_recovered(
        server: FakeServer, isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    child = _child(f"""
        import time
        from w2sd_cli.store.layout import blob_lock
        with blob_lock({SHA!r}):
            print("held", flush=True)
            time.sleep(60)
    """, isolated_home)
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    child.kill()
    child.wait(timeout=10)
    monkeypatch.setattr(layout, "LOCK_WAIT_S", 5.0)
    start = time.monotonic()
    assert get(server).read_bytes() == PAYLOAD
    assert time.monotonic() - start < 5


def test_a_corrupted_blob_is_found_quarantined_and_downloaded_again(server: FakeServer) -> None:
    path = get(server)
    time.sleep(0.01)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert get(server).read_bytes() == PAYLOAD  # quarantined and fetched again in the same call
    assert len(list(layout.quarantine_dir().iterdir())) == 1
    c = card(server.url(PATH))
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"corrupt or changed.*w2sd pull civ"):
        locate(c.models["lora"], offline=True, pair="civ", key="lora")  # offline: nothing to fetch it with


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root and mount rights; skipped elsewhere: the injected fault above covers it)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_really_full_disk_keeps_the_part_and_resumes_once_there_is_room(
        tiny_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = safetensors_bytes(400_000)  # 1.6 MB on a 1 MiB disk
    fake = FakeServer(files={"/big": big}).start()
    monkeypatch.setenv("W2SD_HOME", str(tiny_disk))
    try:
        c = card(fake.url("/big"), sha=sha256(big), size=None)  # no size in the card...
        with pytest.raises(DownloadError, match=r"needs 1\.6 MB more .* Nothing was downloaded"):
            locate(c.models["lora"])  # ...but the server's Content-Length is checked before writing
        assert not part_path(sha256(big)).exists()
        fake.fault("/big", Fault(hide_length=True))  # no Content-Length either: the disk really fills up
        with pytest.raises(DownloadError, match="is full"):
            locate(c.models["lora"])
        kept = part_path(sha256(big)).stat().st_size
        assert kept > 500_000 and find_blob(sha256(big)) is None
        subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_disk)], check=True)
        fake.log.clear()
        assert locate(c.models["lora"]).read_bytes() == big
        assert fake.log[0].headers["range"] == f"bytes={kept}-"
    finally:
        fake.stop()


def test_locate_also_checks_free_space_before_downloading(server: FakeServer) -> None:
    huge = card(server.url(PATH), size=10**16)
    with pytest.raises(DownloadError, match=r"needs 10000\.0 TB more"):
        locate(huge.models["lora"])
    assert server.log == []


def test_a_complete_part_left_by_a_crash_is_finished_without_downloading_again(server: FakeServer) -> None:
    part = part_path(SHA)
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD)
    c = card(server.url(PATH), size=None)  # unknown size: the server's 416 says the part is whole
    assert locate(c.models["lora"]).read_bytes() == PAYLOAD
    assert [s.headers.get("range") for s in server.log] == [f"bytes={len(PAYLOAD)}-"]
