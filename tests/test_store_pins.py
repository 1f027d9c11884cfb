"""A third fault round for Hub sources, through the real huggingface_hub against the fake Hub, in subprocesses:
card pins on Hub files, plain (non-LFS) files checked by size and git blob id, gzip bodies, spliced resumes,
ETags that contradict the listing, a locked commit gone upstream, and stale Hub partials."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from tests.store_fakes import FakeServer, Fault, blob_id, safetensors_bytes, sha256
from tests.test_store_hub import CARD, FILES, WEIGHTS, hub, run, snapshot  # noqa: F401 (hub: a fixture)
from tests.test_store_hub_resume import blobs, cli

LORA = safetensors_bytes(3000, seed=4)
OTHER = safetensors_bytes(3000, seed=5)


def quarantined(home: Path) -> list[Path]:
    folder = home / "store" / "quarantine"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def resolve_path(hub: FakeServer, name: str, repo: str = "org/tiny") -> str:  # noqa: F811
    return f"/{repo}/resolve/{hub.repos[repo].commit}/{name}"


# 1. a card's sha256 is enforced on Hub files ----------------------------------------------------------------

def test_1_a_pinned_hub_filename_whose_listing_differs_is_refused_before_any_byte(
        hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    hub.add_repo("org/pin", {"model.safetensors": OTHER})
    card = CARD | {"name": "pin", "models": {"m": {"repo_id": "org/pin", "filename": "model.safetensors",
                                                  "sha256": sha256(LORA), "format": "lora"}}}
    out = run("pull", isolated_home, hub, card=card)
    assert out.get("error") == "SourceMismatch" and f"pins {sha256(LORA)}" in out["message"], out
    assert hub.requests(f"/lfs/{sha256(OTHER)}") == []  # refused against the listing, before downloading
    assert not (isolated_home / "lock" / "pin.json").exists()


def test_1_a_hub_mirror_with_a_subfolder_cannot_serve_other_bytes_and_the_next_mirror_can(
        hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    hub.add_repo("org/copy", {"sub/lora.safetensors": OTHER})
    hub.add_repo("org/good", {"sub/lora.safetensors": LORA})
    hub.files["/civitai/1"] = LORA
    hub.fault("/civitai/1", Fault(need_token="nobody", times=10))
    mirror = {"repo_id": "org/copy", "subfolder": "sub", "filename": "lora.safetensors"}
    card = CARD | {"name": "mirrored", "models": {"lora": {
        "url": hub.url("/civitai/1"), "sha256": sha256(LORA), "format": "lora", "mirrors": [mirror]}}}
    out = run("pull", isolated_home, hub, card=card)
    assert out.get("error") == "ModelError" and "pins" in out["message"], out
    assert not (isolated_home / "lock" / "mirrored.json").exists()
    card["models"]["lora"]["mirrors"] = [mirror, mirror | {"repo_id": "org/good"}]
    out = run("pull", isolated_home, hub, card=card)
    assert "error" not in out, out
    assert Path(out["paths"][0]).read_bytes() == LORA
    lock = json.loads((isolated_home / "lock" / "mirrored.json").read_text())["models"]["lora"]
    assert lock["source"] == "hf:org/good/sub/lora.safetensors"
    assert [f["sha256"] for f in lock["files"].values()] == [sha256(LORA)]


# 2. plain Hub files: size, git blob id, identity encoding ------------------------------------------------------

def test_2_a_short_clean_config_answer_is_quarantined_and_fetched_again_in_the_same_run(
        hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    hub.fault(resolve_path(hub, "model_index.json"), Fault(body=FILES["model_index.json"][:-4], times=2))  # HEAD, GET
    out = run("pull", isolated_home, hub)
    assert "error" not in out, out
    assert (snapshot(isolated_home, hub) / "model_index.json").read_bytes() == FILES["model_index.json"]
    assert [p.read_bytes() for p in quarantined(isolated_home)] == [FILES["model_index.json"][:-4]]


def test_2_a_gzip_body_sent_despite_identity_is_refused_and_the_rerun_stores_the_real_bytes(
        hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    config = FILES["unet/config.json"]
    hub.fault(resolve_path(hub, "unet/config.json"),
              Fault(body=gzip.compress(config), headers={"Content-Encoding": "gzip"}, times=2))
    done = cli(isolated_home, hub, "pull", "tiny")
    assert done.returncode == 1 and "Content-Encoding 'gzip'" in " ".join(done.stderr.split()), done.stderr
    assert not (snapshot(isolated_home, hub) / "unet/config.json").exists()
    assert cli(isolated_home, hub, "pull", "tiny").returncode == 0
    assert (snapshot(isolated_home, hub) / "unet/config.json").read_bytes() == config


def test_2_a_resume_spliced_onto_other_bytes_is_caught_by_the_blob_id_and_healed(
        hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    config = FILES["unet/config.json"]
    folder = blobs(isolated_home)
    folder.mkdir(parents=True)
    (folder / f"{blob_id(config)}.w2sd-partial").write_bytes(b"XXXXXXX")  # bytes of some other file
    out = run("pull", isolated_home, hub)
    assert "error" not in out, out
    ranged = [s for s in hub.requests("unet/config.json") if "range" in s.headers]
    assert ranged and ranged[0].headers["range"] == "bytes=7-"  # it did resume, and caught the splice
    assert (snapshot(isolated_home, hub) / "unet/config.json").read_bytes() == config
    assert [p.read_bytes()[:7] for p in quarantined(isolated_home)] == [b"XXXXXXX"]


# 6. the HF-cache blob name (the ETag) must agree with the listing ------------------------------------------------

def test_6_an_etag_that_contradicts_the_listing_sha256_is_refused_and_no_blob_takes_its_name(
        hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    forged = sha256(b"another file")
    hub.etags["unet/diffusion_pytorch_model.safetensors"] = forged
    out = run("pull", isolated_home, hub)
    assert out.get("error") == "SourceMismatch" and f"ETag {forged}" in out["message"], out
    assert not (blobs(isolated_home) / forged).exists()
    assert hub.requests(f"/lfs/{sha256(WEIGHTS)}") == []


# 8. a locked commit gone upstream; stale Hub partials ----------------------------------------------------------

def test_8_a_locked_commit_gone_upstream_names_the_lock_file_and_what_to_do(
        hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    assert cli(isolated_home, hub, "pull", "tiny").returncode == 0
    old = hub.repos["org/tiny"].commit
    hub.repos["org/tiny"].commit = "f" * 40  # history rewritten: the recorded commit is gone
    import shutil

    shutil.rmtree(isolated_home / "hf")
    done = cli(isolated_home, hub, "pull", "tiny")
    text = " ".join(done.stderr.split())
    assert done.returncode == 1 and f"commit {old}" in text and "tiny.json" in text, text
    assert "None" not in text and "Delete that lock file" in text


def test_8_prune_deletes_a_stale_hub_partial_but_keeps_the_stored_prompt_sets(
        hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    assert cli(isolated_home, hub, "pull", "tiny").returncode == 0
    stale = blobs(isolated_home) / f"{sha256(b'an older upload')}.w2sd-partial"
    stale.write_bytes(b"x" * 1000)
    pickapic = "c6bca144fbb0e11d0b2a12bd5a275d8ac89bcc2da47e78d1fbc67a3335b99f91"  # registry/prompts/pickapic.yaml
    stored = isolated_home / "store" / "blobs" / pickapic / "test_unique_caption_zh.csv"
    stored.parent.mkdir(parents=True)
    stored.write_text("caption\na cat\n")
    listed = json.loads(cli(isolated_home, hub, "cache", "ls", "--json").stdout)["store"]
    assert {i["kind"]: i["used_by"] for i in listed if i["kind"] in ("blob", "hub-partial")} == {
        "blob": ["prompts:pickapic"], "hub-partial": []}
    pruned = cli(isolated_home, hub, "cache", "prune", "--yes", "--json")
    assert [Path(i["path"]).name for i in json.loads(pruned.stdout)["delete"]] == [stale.name]
    assert not stale.exists() and stored.exists()


def test_8_prune_keeps_what_metrics_need_their_lock_files_and_their_url_blobs(
        hub: FakeServer, isolated_home: Path) -> None:  # noqa: F811
    lock = isolated_home / "lock" / "metric-imagereward.json"  # what `w2sd pull --metrics imagereward` writes
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("{}")
    orphan = isolated_home / "lock" / "metric-no-such-metric.json"
    orphan.write_text("{}")
    card = isolated_home / "metrics" / "my-metric.yaml"  # a user's metric card with a URL model pinned by sha256
    card.parent.mkdir(parents=True)
    pinned = sha256(b"aesthetic head")
    card.write_text("name: my-metric\nmodels:\n"
                    f"  head: {{url: 'https://example.invalid/head.pth', sha256: {pinned}}}\n")
    stored = isolated_home / "store" / "blobs" / pinned / "head.pth"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"aesthetic head")
    pruned = cli(isolated_home, hub, "cache", "prune", "--yes", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert [Path(i["path"]).name for i in json.loads(pruned.stdout)["delete"]] == [orphan.name]
    assert lock.exists() and stored.exists() and not orphan.exists()
