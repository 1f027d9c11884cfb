"""Gated Hub repos (SD3.5, FLUX.1-dev): a 401/403 names the page where the licence is accepted and HF_TOKEN.

Runs the real huggingface_hub against the fake Hub on 127.0.0.1 (tests/store_fakes.py), in subprocesses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.store_fakes import FakeServer, Fault, safetensors_bytes
from tests.test_store_hub import run

FILES = {"model_index.json": b'{"_class_name": "FluxPipeline"}',
         "transformer/diffusion_pytorch_model.safetensors": safetensors_bytes(1000)}
CARD: dict[str, Any] = {"schema": 1, "name": "gated", "kind": "flow", "description": "t",
                        "models": {"base": {"repo_id": "org/gated"}}}


@pytest.fixture
def hub() -> Iterator[FakeServer]:
    fake = FakeServer().start()
    fake.add_repo("org/gated", dict(FILES))
    yield fake
    fake.stop()


def refuse(hub: FakeServer, status: int, gated: bool = True) -> None:
    commit = hub.repos["org/gated"].commit
    headers = {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model org/gated is restricted."} \
        if gated else {}
    for path in FILES:
        hub.fault(f"/org/gated/resolve/{commit}/{path}", Fault(status=status, body=b'{"error": "restricted"}',
                                                               content_type="application/json", headers=headers,
                                                               times=20))


def test_gated_repo_without_a_token_names_the_licence_page_and_hf_token(hub: FakeServer, isolated_home: Path) -> None:
    refuse(hub, 401)
    out = run("pull", isolated_home, hub, card=CARD, env={"HF_TOKEN": ""})
    message = out["message"]
    assert out["error"] == "DownloadError"
    assert f"Open {hub.url('')}/org/gated," in message and "accept the licence" in message
    assert "No token is set" in message and "HF_TOKEN" in message and f"{hub.url('')}/settings/tokens" in message
    assert "\n" not in message  # one paragraph
    assert not (isolated_home / "hf" / "hub" / "models--org--gated" / "snapshots" / hub.repos["org/gated"].commit /
                "transformer").exists()


def test_gated_repo_with_a_refused_token_says_to_accept_with_that_account(hub: FakeServer,
                                                                          isolated_home: Path) -> None:
    refuse(hub, 403)
    message = run("pull", isolated_home, hub, card=CARD)["message"]
    assert "is gated (HTTP 403)" in message and f"{hub.url('')}/org/gated" in message
    assert "HF_TOKEN (or your `hf auth login` token) is set" in message and "hf_s3cret" not in message


def test_a_plain_401_on_a_file_still_points_at_the_licence_page(hub: FakeServer, isolated_home: Path) -> None:
    refuse(hub, 401, gated=False)
    message = run("pull", isolated_home, hub, card=CARD)["message"]
    assert "HTTP 401" in message and "if the repository is gated" in message
    assert f"{hub.url('')}/org/gated" in message and "HF_TOKEN" in message
