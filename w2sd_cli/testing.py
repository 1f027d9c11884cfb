"""Helpers for testing w2sd plugins, shipped with w2sd: install a plugin in-process, reset, build tiny models.

Use in a plugin's own tests::

    import pytest

    from w2sd_cli.pairs import get_registry
    from w2sd_cli.testing import installed_plugin, reset

    @pytest.fixture(autouse=True)
    def fresh():
        reset()
        yield
        reset()

    def test_my_card_is_listed():
        import my_plugin

        with installed_plugin(my_plugin, "my-plugin"):
            assert get_registry().get("my-card").plugin == "my-plugin"

The tiny-model builders import torch, diffusers and transformers inside the functions, so importing this
module stays cheap. Nothing here downloads anything.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from w2sd_cli.plugins import Host, build_host, use_host
from w2sd_cli.plugins import reset as _reset_host

WORDS = ("a", "an", "the", "red", "green", "blue", "cat", "dog", "car", "house", "tree", "photo", "of", "on", "in")
"""The default vocabulary of ``tiny_tokenizer``."""


def reset() -> None:
    """Forget the process-wide plugin host, the pair registry and the Typer app: the next use builds new ones."""
    _reset_host()
    from w2sd_cli.cli import build_app

    build_app.cache_clear()


def install_plugin(plugin: object, name: str = "test-plugin", *, entry_points: bool = False) -> Host:
    """Make a fresh host with the built-ins plus ``plugin`` the process-wide one; call ``reset()`` when done.

    Args:
        plugin: a module or object with ``@hookimpl`` functions.
        name: the plugin's name (what ``plugin:name`` lookups and ``w2sd plugins`` show).
        entry_points: also load the installed entry points (off: the test sees only built-ins and ``plugin``).

    Returns:
        The host; ``host.records[name]`` says whether the plugin registered cleanly.
    """
    host = build_host(load_entry_points=entry_points)
    host.add(plugin, name, "installed by w2sd_cli.testing")
    use_host(host)
    from w2sd_cli.cli import build_app

    build_app.cache_clear()
    return host


@contextmanager
def installed_plugin(plugin: object, name: str = "test-plugin", *, entry_points: bool = False) -> Iterator[Host]:
    """``install_plugin`` for the length of a ``with`` block (or a fixture's ``yield``), then ``reset()``."""
    try:
        yield install_plugin(plugin, name, entry_points=entry_points)
    finally:
        reset()


def fake_distribution(site: Path, module: str, source: str, *, entry_name: str | None = None,
                      version: str = "1.0") -> Path:
    """Write ``module.py`` and a ``.dist-info`` with an entry point in group ``w2sd`` into folder ``site``.

    Put ``site`` on ``sys.path`` (pytest: ``monkeypatch.syspath_prepend(site)``) and ``importlib.metadata``
    finds it like any installed distribution. ``module`` must be a valid identifier.

    Returns:
        ``site``.
    """
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    dist = site / f"{module}-{version}.dist-info"  # wheel naming: the name may not contain '-'
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(f"[w2sd]\n{entry_name or module} = {module}\n")
    return site


def tiny_tokenizer(words: Iterable[str] = WORDS, max_length: int = 16) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` (lower-cased, ``<bos> ... <eos>``, padded with ``<pad>``)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", *dict.fromkeys(words)])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=max_length)


def tiny_text_encoder(vocab_size: int, seed: int = 0, width: int = 32, max_length: int = 16) -> Any:
    """A randomly initialised two-layer ``CLIPTextModel`` (pad 0, bos 2, eos 3: ``tiny_tokenizer``'s ids)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width,
                            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=max_length,
                            projection_dim=width, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    return CLIPTextModel(config).eval()


def tiny_unet(seed: int = 0, cross_attention_dim: int = 32, in_channels: int = 4, sample_size: int = 8) -> Any:
    """A randomly initialised ``UNet2DConditionModel`` of a few thousand parameters (latent space by default)."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet: Any = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=sample_size, in_channels=in_channels,
        out_channels=in_channels, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross_attention_dim,
        norm_num_groups=2)
    return unet.eval()


def tiny_vae(seed: int = 0) -> Any:
    """A randomly initialised ``AutoencoderKL`` with 4 latent channels and a 2× downscale."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae: Any = AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=2)
    return vae.eval()


def save_tiny_sd(folder: Path, seed: int = 0, words: Iterable[str] = WORDS) -> Path:
    """Save a tiny Stable-Diffusion-1.x-style pipeline folder (UNet seeded by ``seed``; 16×16 images).

    A card can point a model at it with ``path:``; two folders with different seeds make a weak/strong pair.
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    tokenizer = tiny_tokenizer(words)
    pipe: Any = StableDiffusionPipeline(
        vae=tiny_vae(0), text_encoder=tiny_text_encoder(len(tokenizer)), tokenizer=tokenizer,
        unet=tiny_unet(seed), scheduler=DDIMScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
            set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder
