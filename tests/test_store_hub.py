"""Hub references against a fake Hub on 127.0.0.1, through the real huggingface_hub, in subprocesses.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import, so every call runs in a fresh process
(tests/store_hub_client.py) with the endpoint pointing at the server this test started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.store_fakes import FakeServer, Fault, safetensors_bytes, sha256

CLIENT = Path(__file__).with_name("store_hub_client.py")
WEIGHTS = safetensors_bytes(50_000)
FILES = {
    "model_index.json": b'{"_class_name": "Fake"}',
    "unet/config.json": b'{"sample_size": 8}',
    "unet/diffusion_pytorch_model.safetensors": WEIGHTS,
    "README.md": b"not wanted",
}
CARD: dict[str, Any] = {"schema": 1, "name": "tiny", "kind": "pipeline", "description": "t",
                        "models": {"base": {"repo_id": "org/tiny", "allow_patterns": ["model_index.json", "unet/*"]}}}


@pytest.fixture
def hub() -> Iterator[FakeServer]:
    fake = FakeServer().start()
    fake.add_repo("org/tiny", dict(FILES))
    yield fake
    fake.stop()


def hub_env(home: Path, hub: FakeServer, offline: bool = False) -> dict[str, str]:
    return os.environ | {
        "HF_ENDPOINT": hub.url(""), "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HOME": str(home / "hf"),
        "W2SD_HOME": str(home), "HF_TOKEN": "hf_s3cret", "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5", "W2SD_MIN_FREE_MB": "1",
        "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1",
    }


def run(op: str, home: Path, hub: FakeServer, card: dict[str, Any] = CARD, offline: bool = False,
        key: str = "base", env: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    env = hub_env(home, hub, offline) | (env or {})
    request = {"op": op, "card": card, "key": key, **extra}
    done = subprocess.run([sys.executable, str(CLIENT), json.dumps(request)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def snapshot(home: Path, hub: FakeServer) -> Path:
    return home / "hf" / "hub" / "models--org--tiny" / "snapshots" / hub.repos["org/tiny"].commit


def test_pull_lands_in_the_hf_cache_records_the_commit_and_then_works_offline(
        hub: FakeServer, isolated_home: Path) -> None:
    plan = run("plan", isolated_home, hub)["plan"][0]
    assert plan["commit"] == hub.repos["org/tiny"].commit
    assert {f["name"]: (f["size"], f["present"]) for f in plan["files"]} == {
        "model_index.json": (23, False), "unet/config.json": (18, False),
        "unet/diffusion_pytorch_model.safetensors": (len(WEIGHTS), False)}
    out = run("pull", isolated_home, hub)
    root = snapshot(isolated_home, hub)
    assert out["paths"] == [str(root)] and out["events"] > 0
    assert (root / "unet/diffusion_pytorch_model.safetensors").read_bytes() == WEIGHTS
    assert not (root / "README.md").exists()
    lock = json.loads((isolated_home / "lock" / "tiny.json").read_text())["models"]["base"]
    assert lock["commit"] == hub.repos["org/tiny"].commit
    assert lock["files"]["unet/diffusion_pytorch_model.safetensors"]["sha256"] == sha256(WEIGHTS)
    lfs = [s for s in hub.log if s.path.startswith("/lfs/")]
    assert lfs and all(s.host == "localhost" and "authorization" not in s.headers for s in lfs)
    assert any(s.headers.get("authorization") == "Bearer hf_s3cret" for s in hub.log if s.host == "127.0.0.1")
    hub.stop()
    again = run("locate", isolated_home, hub, offline=True)
    assert again["paths"] == [str(root)]


def test_offline_and_missing_names_the_pull_command_without_any_request(
        hub: FakeServer, isolated_home: Path) -> None:
    out = run("locate", isolated_home, hub, offline=True)
    assert out["error"] == "OfflineError" and "`w2sd pull tiny`" in out["message"]
    assert hub.log == []


def test_lfs_body_cut_mid_stream_is_resumed_in_the_same_run(hub: FakeServer, isolated_home: Path) -> None:
    path = f"/lfs/{sha256(WEIGHTS)}"
    hub.fault(path, Fault(cut_after=80_000))
    out = run("pull", isolated_home, hub)
    assert "error" not in out, out
    assert (snapshot(isolated_home, hub) / "unet/diffusion_pytorch_model.safetensors").read_bytes() == WEIGHTS
    # w2sd's downloader resumes the cut body with Range from the byte it reached.
    assert [s.headers.get("range") for s in hub.requests(path)] == [None, "bytes=80000-"]


def test_html_instead_of_weights_is_refused_and_the_rerun_succeeds(hub: FakeServer, isolated_home: Path) -> None:
    hub.fault(f"/lfs/{sha256(WEIGHTS)}", Fault(body=b"<html><body>Sign in</body></html>", content_type="text/html"))
    out = run("pull", isolated_home, hub)
    assert out["error"] == "DownloadError"
    weights = snapshot(isolated_home, hub) / "unet/diffusion_pytorch_model.safetensors"
    assert not weights.exists()
    assert (snapshot(isolated_home, hub) / "model_index.json").exists()  # finished files are kept
    assert "error" not in run("pull", isolated_home, hub)
    assert weights.read_bytes() == WEIGHTS


def test_a_corrupted_cache_file_is_quarantined_and_downloaded_again(hub: FakeServer, isolated_home: Path) -> None:
    run("pull", isolated_home, hub)
    weights = snapshot(isolated_home, hub) / "unet/diffusion_pytorch_model.safetensors"
    blob = weights.resolve()
    blob.write_bytes(WEIGHTS[:-4] + b"\0\0\0\0")
    out = run("locate", isolated_home, hub)  # quarantined and downloaded again in the same run
    assert "error" not in out, out
    assert len(list((isolated_home / "store" / "quarantine").iterdir())) == 1
    assert weights.read_bytes() == WEIGHTS


def test_missing_repo_is_a_clear_download_error(hub: FakeServer, isolated_home: Path) -> None:
    card = CARD | {"models": {"base": {"repo_id": "org/nope"}}}
    out = run("pull", isolated_home, hub, card=card)
    assert out["error"] == "DownloadError" and "does not exist or is private" in out["message"]
    assert "hf_s3cret" not in out["message"]


def test_a_tiny_pipeline_pulled_from_the_fake_hub_loads_and_generates_offline(
        hub: FakeServer, isolated_home: Path, tmp_path: Path) -> None:
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(tmp_path / "pipe")
    files = {p.relative_to(tmp_path / "pipe").as_posix(): p.read_bytes()
             for p in (tmp_path / "pipe").rglob("*") if p.is_file()}
    hub.add_repo("org/ddpm", files)
    card = CARD | {"name": "ddpm", "models": {"base": {"repo_id": "org/ddpm"}}}
    assert "error" not in run("pull", isolated_home, hub, card=card)
    hub.stop()
    out = run("generate", isolated_home, hub, card=card, offline=True)
    assert out.get("image") == [1, 8, 8, 3], out


def test_two_processes_pulling_the_same_repo_both_succeed(hub: FakeServer, isolated_home: Path) -> None:
    hub.fault(f"/lfs/{sha256(WEIGHTS)}", Fault(drip_s=0.001, times=2))
    env = os.environ | {
        "HF_ENDPOINT": hub.url(""), "HF_HUB_OFFLINE": "0", "HF_HOME": str(isolated_home / "hf"),
        "W2SD_HOME": str(isolated_home), "W2SD_MIN_FREE_MB": "1", "PYTHONPATH": os.pathsep.join(sys.path),
    }
    request = json.dumps({"op": "pull", "card": CARD, "key": "base"})
    children = [subprocess.Popen([sys.executable, str(CLIENT), request], env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [json.loads(c.communicate(timeout=120)[0].strip().splitlines()[-1]) for c in children]
    assert all("error" not in o for o in outs), outs
    assert (snapshot(isolated_home, hub) / "unet/diffusion_pytorch_model.safetensors").read_bytes() == WEIGHTS
    assert len(hub.requests(f"/lfs/{sha256(WEIGHTS)}")) == 1  # the second waited on huggingface_hub's lock
