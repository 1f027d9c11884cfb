"""cache ls / verify / prune over a real store filled from a local server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.store_fakes import FakeServer, safetensors_bytes, sha256
from w2sd_cli.cards import PairCard, parse_card
from w2sd_cli.store import execute_prune, model_status, plan_prune, pull, store_items, verify
from w2sd_cli.store.layout import blob_dir, part_path, quarantine_dir

A, B = safetensors_bytes(1000, seed=1), safetensors_bytes(1000, seed=2)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("W2SD_MIN_FREE_MB", "1")
    fake = FakeServer(files={"/a": A, "/b": B}).start()
    yield fake
    fake.stop()


def card(name: str, fake: FakeServer, path: str, data: bytes) -> PairCard:
    return parse_card({"schema": 1, "name": name, "kind": "k", "description": "d",
                       "models": {"m": {"url": fake.url(path), "sha256": sha256(data), "size": len(data)}}})


def test_ls_shows_presence_size_and_verification(server: FakeServer) -> None:
    a = card("pa", server, "/a", A)
    [before] = model_status([a])
    assert (before.present, before.verified) == (False, False)
    pull(a)
    [after] = model_status([a])
    assert (after.present, after.verified, after.size, after.pair, after.key) == (True, True, len(A), "pa", "m")
    [item] = [i for i in store_items([a]) if i.kind == "blob"]
    assert item.used_by == ("pa",) and item.size == len(A)


def test_verify_rehashes_and_reports_a_corrupt_file(server: FakeServer) -> None:
    a = card("pa", server, "/a", A)
    assert [r.status for r in verify([a])] == ["missing"]  # pinned by the card, not pulled yet
    [path] = pull(a)
    assert [r.status for r in verify([a])] == ["ok"]
    path.write_bytes(A[:-1] + b"\x01")
    [result] = verify([a])
    assert result.status == "mismatch" and result.expected == sha256(A) and result.got == sha256(path.read_bytes())
    assert not model_status([a])[0].verified


def test_prune_plans_first_and_deletes_only_what_no_pair_needs(server: FakeServer) -> None:
    a, b = card("pa", server, "/a", A), card("pb", server, "/b", B)
    pull(a)
    pull(b)
    orphan_part = part_path("f" * 64)
    orphan_part.write_bytes(b"x" * 10)
    needed_part = part_path(sha256(b"wanted"))
    needed_part.write_bytes(b"y" * 10)
    wanted = parse_card({"schema": 1, "name": "pc", "kind": "k", "description": "d",
                         "models": {"m": {"url": server.url("/c"), "sha256": sha256(b"wanted")}}})
    quarantine_dir().mkdir(parents=True)
    (quarantine_dir() / "bad.part").write_bytes(b"z" * 5)
    plan = plan_prune([a, wanted])  # pair pb was removed
    assert {(i.kind, i.path.name) for i in plan.items} == {
        ("blob", sha256(B)), ("partial", orphan_part.name), ("quarantine", "bad.part"), ("lockfile", "pb.json")}
    assert blob_dir(sha256(B)).exists()  # planning deletes nothing
    freed = execute_prune(plan)
    assert freed == plan.bytes > len(B)
    assert not blob_dir(sha256(B)).exists() and not orphan_part.exists()
    assert blob_dir(sha256(A)).exists() and needed_part.exists()
    assert plan_prune([a, wanted]).items == ()
