"""Content-based weights checks: safetensors by default, pickle only when allowed and then weights-only."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from tests.store_fakes import safetensors_bytes
from w2sd_cli.cards import parse_card
from w2sd_cli.errors import ModelError
from w2sd_cli.store import check_weights_file, load_pickle_checkpoint, locate, sniff


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_safetensors_is_recognised_whatever_the_extension(tmp_path: Path) -> None:
    assert check_weights_file(write(tmp_path / "model.ckpt", safetensors_bytes(10))) == "safetensors"


@pytest.mark.parametrize(("body", "why"), [
    (b"<!DOCTYPE html><html>Log in</html>", "HTML page"),
    (b'{"error": "Unauthorized"}', "JSON document"),
    (b"\x00" * 64, "neither safetensors nor a pickle"),
])
def test_text_and_junk_saved_as_safetensors_are_refused(tmp_path: Path, body: bytes, why: str) -> None:
    with pytest.raises(ModelError, match=why):
        check_weights_file(write(tmp_path / "model.safetensors", body))


def test_truncated_or_unparsable_safetensors_is_refused(tmp_path: Path) -> None:
    good = safetensors_bytes(100)
    with pytest.raises(ModelError, match="truncated"):
        check_weights_file(write(tmp_path / "cut.safetensors", good[:-40]))
    broken = good[:8] + b"{not json" + good[17:]
    with pytest.raises(ModelError, match="not valid JSON"):
        check_weights_file(write(tmp_path / "bad.safetensors", broken))


def test_pickle_is_refused_by_default_and_loaded_weights_only_when_allowed(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"  # a pickle hiding behind the safe extension
    torch.save({"w": torch.ones(3)}, path)
    assert sniff(path.read_bytes()[:64]) == "pickle"
    with pytest.raises(ModelError, match="--allow-pickle"):
        check_weights_file(path)
    assert check_weights_file(path, allow_pickle=True) == "pickle"
    assert torch.equal(load_pickle_checkpoint(path)["w"], torch.ones(3))


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_a_pickle_with_code_is_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"w": _Evil()}, protocol=2))
    assert check_weights_file(path, allow_pickle=True) == "pickle"
    with pytest.raises(ModelError, match="will not unpickle"):
        load_pickle_checkpoint(path)


def test_locate_checks_local_files_by_content(tmp_path: Path) -> None:
    path = tmp_path / "lora.safetensors"
    torch.save({"w": torch.ones(1)}, path)
    card = parse_card({"schema": 1, "name": "loc", "kind": "k", "description": "d",
                       "models": {"lora": {"path": str(path), "format": "lora"}}})
    with pytest.raises(ModelError, match="pickle checkpoint"):
        locate(card.models["lora"], pair="loc", key="lora")
    assert locate(card.models["lora"], allow_pickle=True, pair="loc", key="lora") == path
