"""Issue 12 for Hub references, through the real huggingface_hub against the fake Hub, in subprocesses:
resume across runs, orphans, timeouts, parallel downloads with events, broken weights, bad paths, mirrors,
user files behind snapshot links, and `pairs show` after an unpinned pull."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.store_fakes import FakeServer, Fault, safetensors_bytes, sha256
from tests.test_store_hub import CARD, WEIGHTS, hub, hub_env, run, snapshot  # noqa: F401 (hub: a fixture)

LFS = f"/lfs/{sha256(WEIGHTS)}"
PARTIAL = f"{sha256(WEIGHTS)}.w2sd-partial"


def cli(home: Path, hub: FakeServer, *args: str, env: dict[str, str] | None = None,  # noqa: F811
        card: dict[str, Any] = CARD) -> subprocess.CompletedProcess[str]:
    """``w2sd ARGS`` as a real process, with ``card`` installed as a user card."""
    (home / "pairs").mkdir(exist_ok=True)
    (home / "pairs" / f"{card['name']}.yaml").write_text(json.dumps(card))
    return subprocess.run([sys.executable, "-m", "w2sd_cli", *args], env=hub_env(home, hub) | (env or {}),
                          capture_output=True, text=True, timeout=120)


def blobs(home: Path) -> Path:
    return home / "hf" / "hub" / "models--org--tiny" / "blobs"


# 9. Hub downloads resume across runs ---------------------------------------------------------------------

def test_9_a_hub_file_cut_every_time_keeps_its_partial_and_the_next_run_resumes_it(
        hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    hub.fault(LFS, Fault(cut_after=20_000, times=50))
    done = cli(isolated_home, hub, "pull", "tiny")
    assert done.returncode == 1 and "keeps breaking off" in done.stderr, done.stderr
    for noise in ("Trying to resume", "force_download", "Cannot reach the Hub", "bug in w2sd"):
        assert noise not in done.stderr  # item 11: one paragraph of ours, no huggingface_hub log lines
    kept = (blobs(isolated_home) / PARTIAL).stat().st_size
    assert kept >= 20_000
    listed = json.loads(cli(isolated_home, hub, "cache", "ls", "--json").stdout)["store"]
    assert [(i["kind"], i["used_by"]) for i in listed if i["kind"] == "hub-partial"] == [("hub-partial", ["tiny"])]
    hub.faults.clear()
    hub.log.clear()
    again = cli(isolated_home, hub, "pull", "tiny")
    assert again.returncode == 0, again.stderr
    assert hub.requests(LFS)[0].headers["range"] == f"bytes={kept}-"
    assert (snapshot(isolated_home, hub) / "unet/diffusion_pytorch_model.safetensors").read_bytes() == WEIGHTS
    assert not (blobs(isolated_home) / PARTIAL).exists()


def test_9_sigkill_mid_hub_download_resumes_and_huggingface_hubs_orphans_are_shown_and_pruned(
        hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    hub.fault(LFS, Fault(drip_s=0.01))
    (isolated_home / "pairs").mkdir()
    (isolated_home / "pairs" / "tiny.yaml").write_text(json.dumps(CARD))
    child = subprocess.Popen([sys.executable, "-m", "w2sd_cli", "pull", "tiny"], env=hub_env(isolated_home, hub),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    part = blobs(isolated_home) / PARTIAL
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size > 20_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    kept = part.stat().st_size
    orphan = blobs(isolated_home) / f"{sha256(b'gone')}.1a2b3c4d.incomplete"  # what a killed hf_hub_download leaves
    orphan.write_bytes(b"x" * 100)
    listed = json.loads(cli(isolated_home, hub, "cache", "ls", "--json").stdout)["store"]
    assert {i["kind"] for i in listed} >= {"hub-partial", "hub-orphan"}
    pruned = cli(isolated_home, hub, "cache", "prune", "--yes", "--json")
    assert [Path(i["path"]).name for i in json.loads(pruned.stdout)["delete"]] == [orphan.name]
    assert not orphan.exists() and part.exists()
    hub.faults.clear()
    hub.log.clear()
    assert cli(isolated_home, hub, "pull", "tiny").returncode == 0
    assert hub.requests(LFS)[0].headers["range"] == f"bytes={kept}-"


def test_9_download_timeout_governs_hub_downloads(hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    hub.fault(LFS, Fault(drip_s=1.0, times=5))
    start = time.monotonic()
    done = cli(isolated_home, hub, "pull", "tiny", env={"W2SD_DOWNLOAD_TIMEOUT": "0.3"})
    assert done.returncode == 1 and "sent nothing for 0.3 s" in done.stderr, done.stderr
    assert time.monotonic() - start < 30


# 10. parallel downloads with events -------------------------------------------------------------------

def test_10_ensure_models_downloads_a_pairs_files_in_parallel_with_per_file_and_overall_events(
        hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    other = safetensors_bytes(40_000, seed=3)
    hub.add_repo("org/other", {"model.safetensors": other})
    for data in (WEIGHTS, other):
        hub.fault(f"/lfs/{sha256(data)}", Fault(drip_s=0.002))
    card = CARD | {"models": {**CARD["models"], "extra": {"repo_id": "org/other"}}}
    out = run("ensure", isolated_home, hub, card=card, all_events=True)
    assert "error" not in out, out
    assert hub.peak >= 2  # two bodies were being sent at once
    events = out["events"]
    plan = events[0]
    assert plan["event"] == "plan" and plan["files"] == 4 and plan["bytes_total"] == len(WEIGHTS) + len(other) + 41
    files = [e for e in events if e["event"] == "file"]
    assert {e["key"] for e in files} == {"base", "extra"} and all(e["pair"] == "tiny" for e in files)
    overall = [e for e in events if e["event"] == "overall"]
    assert overall[-1]["bytes_done"] == overall[-1]["bytes_total"] == plan["bytes_total"]
    assert overall[-1]["files_done"] == overall[-1]["files_total"] == 4
    assert events[-1]["event"] == "done" and set(events[-1]["paths"]) == {"base", "extra"}


# 6. broken weights from the Hub ------------------------------------------------------------------------

def test_6_broken_hub_weights_are_never_recorded_or_shown_as_verified(
        hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    cut = safetensors_bytes(5000)[:-64]
    hub.add_repo("org/broken", {"model.safetensors": cut, "weights.bin": b"<!DOCTYPE html><html>login</html>"})
    card = CARD | {"name": "broken", "models": {"a": {"repo_id": "org/broken", "filename": "model.safetensors"},
                                               "b": {"repo_id": "org/broken", "filename": "weights.bin"}}}
    done = cli(isolated_home, hub, "pull", "broken", card=card)
    assert done.returncode == 1
    text = " ".join(done.stderr.split())
    assert "broken at the source" in text or "HTML page" in text, text
    lock = isolated_home / "lock" / "broken.json"
    assert not lock.exists() or not json.loads(lock.read_text()).get("models")
    models = json.loads(cli(isolated_home, hub, "cache", "ls", "--json", card=card).stdout)["models"]
    assert [m["verified"] for m in models if m["pair"] == "broken"] == [False, False]
    verified = cli(isolated_home, hub, "cache", "verify", "broken", "--json", card=card)
    assert "ok" not in [r["status"] for r in json.loads(verified.stdout)["results"]]
    again = cli(isolated_home, hub, "pull", "broken", card=card | {"models": {"a": card["models"]["a"]}})
    assert "broken at the source" in " ".join(again.stderr.split()) and "mirrors" in again.stderr


# 11. bad paths from the Hub ---------------------------------------------------------------------------------

def test_11_a_hub_listing_with_dotdot_or_absolute_paths_is_one_clean_paragraph(
        hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    hub.add_repo("org/evil", {"../../escape.safetensors": WEIGHTS})
    card = CARD | {"name": "evil", "models": {"a": {"repo_id": "org/evil"}}}
    done = cli(isolated_home, hub, "pull", "evil", card=card)
    assert done.returncode == 1 and "would leave the repository" in done.stderr, done.stderr
    assert done.stderr.count("error:") == 1 and "bug in w2sd" not in done.stderr
    assert not (isolated_home / "hf" / "escape.safetensors").exists()


# 1. a snapshot link to a user's own file ------------------------------------------------------------------

def test_1_a_snapshot_link_to_a_users_own_file_is_never_moved_or_deleted(
        hub: FakeServer, isolated_home: Path, tmp_path: Path) -> None:  # noqa: F811
    assert "error" not in run("pull", isolated_home, hub)
    entry = snapshot(isolated_home, hub) / "unet/diffusion_pytorch_model.safetensors"
    mine = tmp_path / "my-own.safetensors"
    mine.write_bytes(safetensors_bytes(50_000, seed=9))  # reused weights that differ from the lock's hash
    entry.unlink()
    entry.symlink_to(mine)
    out = run("locate", isolated_home, hub)
    assert out["error"] == "ModelError" and "left it alone" in out["message"]
    assert mine.read_bytes() == safetensors_bytes(50_000, seed=9)
    assert cli(isolated_home, hub, "cache", "prune", "--yes").returncode == 0
    assert mine.exists() and entry.is_symlink()


# 12. mirrors on the Hub, and `pairs show` after an unpinned pull ------------------------------------------

def test_12_a_hub_mirror_serves_a_url_model_that_needs_a_login(hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    lora = safetensors_bytes(3000, seed=4)
    hub.add_repo("org/lora-copy", {"lora.safetensors": lora})
    hub.files["/civitai/1"] = lora
    hub.fault("/civitai/1", Fault(need_token="nobody"))
    card = CARD | {"name": "mirrored", "models": {"lora": {
        "url": hub.url("/civitai/1"), "sha256": sha256(lora), "format": "lora",
        "mirrors": [{"repo_id": "org/lora-copy", "filename": "lora.safetensors"}]}}}
    out = run("pull", isolated_home, hub, card=card)
    assert "error" not in out, out
    assert Path(out["paths"][0]).read_bytes() == lora
    lock = json.loads((isolated_home / "lock" / "mirrored.json").read_text())["models"]["lora"]
    assert lock["source"] == "hf:org/lora-copy/lora.safetensors"
    hub.stop()
    assert run("locate", isolated_home, hub, card=card, offline=True, key="lora")["paths"] == out["paths"]


def test_12_pairs_show_says_here_for_an_unpinned_hub_model_after_pull(
        hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    card = CARD | {"kind": "diffusers", "strong": {"model": "base"}}
    before = json.loads(cli(isolated_home, hub, "pairs", "show", "tiny", "--json", card=card).stdout)
    assert before["models"][0]["status"] == "not downloaded"
    assert cli(isolated_home, hub, "pull", "tiny", card=card).returncode == 0
    after = json.loads(cli(isolated_home, hub, "pairs", "show", "tiny", "--json", card=card).stdout)
    assert after["models"][0]["status"] == "here (HF cache)"
