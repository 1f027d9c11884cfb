"""Issue 12 against a real local server: containment, tokens, redaction, escaping, prune, free space,
pull after a mismatch, environment values, bad paths and mirrors (URL sources, in process)."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.store_fakes import FakeServer, Fault, civitai_server, safetensors_bytes, sha256
from w2sd_cli.cards import PairCard, parse_card
from w2sd_cli.cli import build_app
from w2sd_cli.errors import DownloadError, InputError, ModelError
from w2sd_cli.store import execute_prune, fetch, layout, locate, plan_prune, pull, redact_url
from w2sd_cli.store.layout import blob_dir, find_blob, part_path, quarantine_dir

PAYLOAD = safetensors_bytes(20_000)
SHA = sha256(PAYLOAD)
PATH = "/api/download/models/7"
RUNNER = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    fake = civitai_server(monkeypatch, {PATH: PAYLOAD})
    yield fake
    fake.stop()


def card(url: str, sha: str = SHA, name: str = "civ", **extra: object) -> PairCard:
    return parse_card({"schema": 1, "name": name, "kind": "lora-scale", "description": "t",
                       "models": {"lora": {"url": url, "sha256": sha, "format": "lora", **extra}}})


def user_card(home: Path, text: str, name: str = "civ") -> Path:
    (home / "pairs").mkdir(exist_ok=True)
    path = home / "pairs" / f"{name}.yaml"
    path.write_text(text)
    build_app.cache_clear()
    from w2sd_cli import plugins

    plugins.reset()
    return path


def card_yaml(url: str, sha: str = SHA, name: str = "civ") -> str:
    """A diffusers pair whose LoRA comes from ``url`` (its base is a local folder)."""
    base = Path(os.environ["W2SD_HOME"]) / "base"
    base.mkdir(exist_ok=True)
    return (f"schema: 1\nname: {name}\nkind: diffusers\ndescription: test\nmodels:\n"
            f"  base: {{path: '{base}'}}\n"
            f"  lora: {{url: '{url}', sha256: {sha}, format: lora}}\n"
            "strong: {model: base, lora: lora, lora_scale: 0.8}\nweak: {lora_scale: -1.5}\n")


def invoke(*args: str) -> object:
    return RUNNER.invoke(build_app(), list(args))


# 1. containment --------------------------------------------------------------------------------------------

def test_1_a_link_in_quarantine_to_a_user_file_is_pruned_as_a_link_and_the_file_survives(
        server: FakeServer, tmp_path: Path) -> None:
    mine = tmp_path / "my-weights.safetensors"
    mine.write_bytes(PAYLOAD)
    folder = tmp_path / "my-folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    quarantine_dir().mkdir(parents=True)
    (quarantine_dir() / "link-to-file").symlink_to(mine)
    (quarantine_dir() / "link-to-folder").symlink_to(folder)
    plan = plan_prune([])
    assert {i.path.name for i in plan.items} == {"link-to-file", "link-to-folder"}
    execute_prune(plan)
    assert mine.read_bytes() == PAYLOAD and (folder / "keep.txt").read_text() == "mine"
    assert list(quarantine_dir().iterdir()) == []


def test_1_a_store_file_that_is_a_link_to_a_user_file_is_never_moved(server: FakeServer, tmp_path: Path) -> None:
    c = card(server.url(PATH))
    [path] = pull(c)
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(safetensors_bytes(20_000, seed=5))  # the user's own, different weights
    path.unlink()
    path.symlink_to(mine)
    with pytest.raises(ModelError, match="outside the folders w2sd manages") as err:
        locate(c.models["lora"], pair="civ", key="lora")
    assert "left it alone" in str(err.value)
    assert mine.read_bytes() == safetensors_bytes(20_000, seed=5)
    assert not quarantine_dir().exists() or list(quarantine_dir().iterdir()) == []
    execute_prune(plan_prune([]))  # the blob is unused now: its link goes, the user's file stays
    assert mine.exists()


# 2. tokens ----------------------------------------------------------------------------------------------------

def test_2_the_token_never_follows_a_redirect_to_another_port_or_scheme(
        server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    other = FakeServer(files={"/blob": PAYLOAD}).start()  # same host name, another port
    try:
        monkeypatch.setenv("CIVITAI_TOKEN", "s3cret-token")
        monkeypatch.setenv("W2SD_TOKEN_OVER_HTTP_LOOPBACK", "1")
        server.fault(PATH, Fault(redirect=other.url("/blob")))
        assert locate(card(server.url(PATH)).models["lora"]).read_bytes() == PAYLOAD
        assert server.log[0].headers.get("authorization") == "Bearer s3cret-token"
        assert "authorization" not in other.log[0].headers
    finally:
        other.stop()


def test_2_no_token_over_plain_http_without_the_loopback_override(
        server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVITAI_TOKEN", "s3cret-token")
    server.fault(PATH, Fault(need_token="s3cret-token"))
    with pytest.raises(DownloadError, match="only over https") as err:
        locate(card(server.url(PATH)).models["lora"])
    assert "authorization" not in server.log[0].headers
    assert "s3cret-token" not in str(err.value)


def test_2_a_token_in_a_redirect_location_never_appears_in_a_message(
        server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVITAI_TOKEN", "s3cret-token")
    monkeypatch.setenv("W2SD_TOKEN_OVER_HTTP_LOOPBACK", "1")
    dead = FakeServer().start()
    port = dead.port
    dead.stop()  # the storage host the redirect names is down
    server.fault(PATH, Fault(redirect=f"http://localhost:{port}/files/s3cret-token/model.safetensors"))
    with pytest.raises(DownloadError, match="Cannot reach") as err:
        locate(card(server.url(PATH)).models["lora"])
    assert "s3cret-token" not in str(err.value) and "/files/***/model.safetensors" in str(err.value)


# 3. redaction ----------------------------------------------------------------------------------------------

def test_3_a_url_token_reaches_the_server_but_no_record_or_printout(
        server: FakeServer, isolated_home: Path) -> None:
    url = server.url(PATH).replace("http://", "http://user:pw@") + "?token=abc123secret&type=Model"
    assert redact_url(url) == server.url(PATH) + "?token=***&type=Model"
    user_card(isolated_home, card_yaml(url))
    done = invoke("pull", "civ")
    assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    assert server.requests(PATH)[0].path == PATH and "abc123secret" not in json.dumps(
        [s.headers for s in server.log])  # sent as the query, never as a header
    shown = invoke("pairs", "show", "civ", "--json")
    text = shown.stdout + invoke("pairs", "show", "civ").stderr  # type: ignore[attr-defined]
    assert "abc123secret" not in text and "pw@" not in text and "token=***" in text
    lock = (isolated_home / "lock" / "civ.json").read_text()
    assert "abc123secret" not in lock
    c = card(url)
    recorded = c.models["lora"].model_dump(mode="json", exclude_none=True)  # what an image recipe stores
    assert "abc123secret" not in json.dumps(recorded) and "abc123secret" not in c.digest()
    assert c.models["lora"].model_dump(context={"secrets": True})["url"] == url


# 4. escaping ---------------------------------------------------------------------------------------------------

def test_4_markup_and_links_from_a_server_are_printed_literally(server: FakeServer, isolated_home: Path) -> None:
    body = b'{"error": "[/] [link=https://evil.example]SUCCESS[/link] [bold green]ok[/] \\u001b]8;;x\\u0007"}'
    server.fault(PATH, Fault(status=500, body=body, content_type="application/json"))
    user_card(isolated_home, card_yaml(server.url(PATH)))
    result = invoke("pull", "civ")
    err = result.stderr  # type: ignore[attr-defined]
    assert result.exit_code == 1, err  # type: ignore[attr-defined]
    assert "[/] [link=https://evil.example]SUCCESS[/link] [bold green]ok[/]" in err
    assert "\x1b" not in err and "Traceback" not in err and err.count("error:") == 1


def test_4_a_card_problem_with_markup_is_shown_literally(isolated_home: Path) -> None:
    user_card(isolated_home, "schema: 1\nname: Bad\nkind: k\ndescription: d\n", name="[b][link=x]bad")
    result = invoke("pairs", "list")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    err = " ".join(result.stderr.split())  # type: ignore[attr-defined]
    assert "warning:" in err and "[b][link=x]bad.yaml" in err


# 5. prune and invalid cards ------------------------------------------------------------------------------

def test_5_prune_keeps_the_models_and_lock_of_a_present_but_invalid_card(
        server: FakeServer, isolated_home: Path) -> None:
    path = user_card(isolated_home, card_yaml(server.url(PATH)))
    done = invoke("pull", "civ")
    assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    path.write_text(path.read_text().replace("kind: diffusers", "kind: diffusers\nstrenght: 1"))  # a typo
    user_card(isolated_home, path.read_text())
    result = invoke("cache", "prune", "--yes")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert blob_dir(SHA).exists() and (isolated_home / "lock" / "civ.json").exists()
    assert "kept 2 item(s)" in result.stderr and "does not validate" in result.stderr  # type: ignore[attr-defined]
    path.unlink()
    user_card(isolated_home, "schema: 1\nname: other\nkind: k\ndescription: d\n", name="other")
    assert invoke("cache", "prune", "--yes").exit_code == 0  # type: ignore[attr-defined]
    assert not blob_dir(SHA).exists()


# 6. broken weights (URL) ---------------------------------------------------------------------------------

def test_6_a_pinned_truncated_safetensors_is_never_stored_as_verified(server: FakeServer) -> None:
    cut = PAYLOAD[:-100]
    server.files["/cut"] = cut
    c = card(server.url("/cut"), sha=sha256(cut))
    with pytest.raises(ModelError, match=r"broken at the source.*mirrors") as err:
        pull(c)
    assert "truncated" in str(err.value)
    assert find_blob(sha256(cut)) is None and not (layout.home() / "lock" / "civ.json").exists()
    assert len(list(quarantine_dir().iterdir())) == 1


# 7. free space from Content-Length --------------------------------------------------------------------

def test_7_free_space_is_checked_against_content_length_when_the_card_has_no_size(
        server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("W2SD_MIN_FREE_MB", str(10**12))  # a reserve no disk has
    with pytest.raises(DownloadError, match=r"needs 80\.1 kB more .* Nothing was downloaded"):
        locate(card(server.url(PATH)).models["lora"])
    assert not part_path(SHA).exists() and find_blob(SHA) is None


# 8. one pull after a mismatch ---------------------------------------------------------------------------

def test_8_one_pull_after_verify_finds_a_mismatch_ends_with_a_good_file(
        server: FakeServer, isolated_home: Path) -> None:
    user_card(isolated_home, card_yaml(server.url(PATH)))
    done = invoke("pull", "civ")
    assert done.exit_code == 0, done.output  # type: ignore[attr-defined]
    blob = find_blob(SHA)
    assert blob is not None
    blob.write_bytes(PAYLOAD[:-1] + b"\x01")
    verified = invoke("cache", "verify", "civ")
    assert verified.exit_code == 1 and "fetched again" in verified.stderr  # type: ignore[attr-defined]
    pulled = invoke("pull", "civ")
    assert pulled.exit_code == 0, pulled.stderr  # type: ignore[attr-defined]
    assert find_blob(SHA).read_bytes() == PAYLOAD  # type: ignore[union-attr]
    assert invoke("cache", "verify", "civ").exit_code == 0  # type: ignore[attr-defined]


# 11. clean paragraphs --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value"), [("W2SD_DOWNLOAD_TIMEOUT", "soon"), ("W2SD_MIN_FREE_MB", "lots"),
                                             ("W2SD_LOCK_TIMEOUT", "forever"), ("W2SD_LOCK_TIMEOUT", "-5")])
def test_11_a_bad_environment_value_is_one_clean_paragraph(
        server: FakeServer, isolated_home: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    user_card(isolated_home, card_yaml(server.url(PATH)))
    monkeypatch.setenv(name, value)
    result = invoke("pull", "civ")
    err = result.stderr  # type: ignore[attr-defined]
    assert result.exit_code == 1 and f"{name}={value!r}" in err and "bug in w2sd" not in err, err


def test_11_lock_timeout_takes_units(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from w2sd_cli.store.settings import lock_timeout

    monkeypatch.setenv("W2SD_LOCK_TIMEOUT", "1h")
    assert lock_timeout() == 3600.0
    assert locate(card(server.url(PATH)).models["lora"]).read_bytes() == PAYLOAD
    monkeypatch.setenv("W2SD_LOCK_TIMEOUT", "1 d")
    with pytest.raises(InputError, match="not a duration"):
        lock_timeout()


def test_11_efbig_is_a_clean_download_error(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def too_big(fh: object, chunk: bytes) -> None:
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(fetch, "write_chunk", too_big)
    with pytest.raises(DownloadError, match="file too large"):
        locate(card(server.url(PATH)).models["lora"])


def test_11_a_url_ending_in_dotdot_is_stored_safely_and_leaves_no_staging(server: FakeServer) -> None:
    prompts = b"a cat\na dog\n"  # a prompt set, fetched the way `w2sd bench` fetches one
    server.files["/a/.."] = prompts
    stored = fetch.fetch_url(server.url("/a/.."), sha256(prompts))
    assert stored.read_bytes() == prompts and stored.parent == blob_dir(sha256(prompts))
    assert stored.name not in ("..", ".")
    assert [p.name for p in blob_dir(SHA).parent.iterdir()] == [sha256(prompts)]  # no .staging left


def test_11_a_card_filename_that_leaves_the_repo_is_refused_cleanly(isolated_home: Path) -> None:
    c = parse_card({"schema": 1, "name": "p", "kind": "k", "description": "d",
                    "models": {"m": {"repo_id": "org/x", "filename": "../.."}}})
    with pytest.raises(ModelError, match="would leave the repository"):
        locate(c.models["m"], offline=True, pair="p", key="m")


# 12. mirrors and help ------------------------------------------------------------------------------------

def test_12_a_mirror_with_the_same_sha256_is_used_when_the_source_refuses(
        server: FakeServer, isolated_home: Path) -> None:
    server.fault(PATH, Fault(need_token="nobody-has-it"))
    server.files["/mirror/lora.safetensors"] = PAYLOAD
    c = card(server.url(PATH), mirrors=[{"url": server.url("/mirror/lora.safetensors")}])
    [path] = pull(c)
    assert path.read_bytes() == PAYLOAD
    assert [s.path for s in server.log] == [PATH, "/mirror/lora.safetensors"]
    lock = json.loads((isolated_home / "lock" / "civ.json").read_text())["models"]["lora"]
    assert lock["source"].endswith("/mirror/lora.safetensors")
    server.log.clear()
    assert locate(c.models["lora"], pair="civ", key="lora").read_bytes() == PAYLOAD and server.log == []


def test_12_all_sources_refusing_lists_each_reason(server: FakeServer) -> None:
    server.fault(PATH, Fault(need_token="x"))
    c = card(server.url(PATH), mirrors=[{"url": server.url("/nope.safetensors")}])
    with pytest.raises(DownloadError, match=r"No source .*\(1\).*CIVITAI_TOKEN.*\(2\).*404"):
        pull(c)


def test_12_pull_help_documents_both_tokens() -> None:
    result = invoke("pull", "--help")
    text = " ".join(result.output.split())  # type: ignore[attr-defined]
    assert "CIVITAI_TOKEN" in text and "HF_TOKEN" in text and "https" in text


def test_12_mirrors_need_a_pinned_sha256() -> None:
    from w2sd_cli.errors import CardError

    with pytest.raises(CardError, match="must pin its sha256"):
        parse_card({"schema": 1, "name": "p", "kind": "k", "description": "d", "models": {
            "m": {"repo_id": "org/x", "filename": "a.safetensors", "mirrors": [{"url": "https://x/a"}]}}})
    assert "mirrors" not in card("https://x/a").models["lora"].model_dump()  # old digests stay as they were
