"""Reward-model metrics loaded through metric cards: PickScore, HPSv2.1, the LAION aesthetic predictor, ImageReward.

A metric card (``registry/metrics/NAME.yaml``, overridable in ``$W2SD_HOME/metrics``) names its models as
``ModelRef``s, fetched and verified by the store like a pair's. Pickle checkpoints (HPSv2.1, the aesthetic
MLP, ImageReward) load only with ``--allow-pickle``, and then with ``torch.load(weights_only=True)``.
ImageReward's model is built in ``imagereward.py``.
Models load once per process (``load`` is cached on the card and device).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, ValidationError

from w2sd_cli.cards import ModelRef, Strict, absolute_model_paths, format_validation_error
from w2sd_cli.errors import CardError, ModelError, OfflineError
from w2sd_cli.paths import home, registry_dir

from .base import MetricLoad
from .imagereward import ImageReward as ImageReward  # the metric's old home; builtins name it here
from .openclip import open_clip_to_transformers


class MetricCard(Strict):
    """Where a metric's models come from, and how to read them."""

    schema_version: Literal[1] = Field(alias="schema")
    name: str
    description: str
    models: dict[str, ModelRef]
    options: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None


def metric_card(name: str) -> MetricCard:
    """The user's card ``$W2SD_HOME/metrics/NAME.yaml`` if there is one, else the shipped one."""
    for folder in (home() / "metrics", registry_dir() / "metrics"):
        path = folder / f"{name}.yaml"
        if path.is_file():
            try:
                card = MetricCard.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
            except ValidationError as err:
                raise CardError(format_validation_error(err, str(path))) from None
            except (OSError, yaml.YAMLError) as err:
                raise CardError(f"{path}: cannot read this metric card ({err}).") from None
            return _absolute(card, path.parent)
    raise CardError(f"metric {name!r} has no card: put one at {home() / 'metrics' / (name + '.yaml')}.")


def _absolute(card: MetricCard, base: Path) -> MetricCard:
    return card.model_copy(update={"models": absolute_model_paths(card.models, base)})


def locate_model(card: MetricCard, key: str, options: MetricLoad) -> Path:
    """One model of a metric card, downloaded and verified if needed."""
    from w2sd_cli.store import locate

    try:
        return Path(locate(card.models[key], offline=options.offline, allow_pickle=options.allow_pickle,
                           pair=lock_name(card.name), key=key))
    except OfflineError:
        ref = card.models[key]
        where = str(ref.path or ref.repo_id or ref.url) + (f", file {ref.filename}" if ref.filename else "")
        user = home() / "metrics" / f"{card.name}.yaml"
        local = (f"set `path:` on its models in {user}" if user.is_file() else
                 f"copy the card {registry_dir() / 'metrics' / (card.name + '.yaml')} to {user} and set `path:` "
                 "on each of its models")
        raise OfflineError(f"Metric {card.name}: model {key!r} ({where}) is not downloaded and w2sd is offline, so "
                           f"it made no network call. Run `w2sd pull --metrics {card.name}` (or the same `w2sd eval "
                           f"... --metric {card.name}`) once online to fetch it; or, to use files you already have, "
                           f"{local}.") from None


def lock_name(metric: str) -> str:
    """The lock file that pins a metric's Hub commits and hashes (``$W2SD_HOME/lock/metric-NAME.json``), so
    that what `w2sd pull --metrics NAME` fetched is found, and checked, offline."""
    return f"metric-{metric}"


def load_weights(path: Path, allow_pickle: bool) -> dict[str, Any]:
    """A state dict from a safetensors file or (opted in) a pickle checkpoint; unwraps ``state_dict``."""
    from w2sd_cli.store.safety import check_weights_file, load_pickle_checkpoint

    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.pt")) + sorted(path.glob("*.pth"))
        if not files:
            raise ModelError(f"{path}: no weights file in this folder.")
        path = files[0]
    if check_weights_file(path, allow_pickle) == "safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        state = load_pickle_checkpoint(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a state dict.")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _quiet() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()


def clean_text(text: str) -> str:
    """open_clip's (HPSv2's) text cleaning before tokenizing: ftfy's fixes when ftfy is installed (else NFC),
    HTML entities unescaped twice, runs of whitespace made one space, lower case."""
    import html
    import re
    import unicodedata

    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        text = unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


def pad_to_square(image: Any, size: int) -> Any:
    """open_clip's ``ResizeMaxSize`` (HPSv2's evaluation transform): bicubic resize of the longest side to
    ``size``, then centred black padding to ``size`` × ``size``; nothing is cropped."""
    from PIL import Image

    image = image.convert("RGB")
    scale = size / max(image.size)
    if scale != 1.0:
        width, height = round(image.width * scale), round(image.height * scale)
        image = image.resize((width, height), Image.Resampling.BICUBIC)
        canvas = Image.new("RGB", (size, size), (0, 0, 0))
        canvas.paste(image, ((size - width) // 2, (size - height) // 2))
        image = canvas
    return image


class Clip:
    """A CLIP model with its tokenizer and image processor: unit image and text embeddings.

    ``pad`` swaps the processor's resize-and-centre-crop for resize-longest-side-and-pad, and ``clean``
    cleans prompts first: HPSv2's preprocessing. PickScore and the aesthetic head keep the processor's.
    """

    def __init__(self, model: Any, processor_dir: Path, device: Any, *, pad: bool = False,
                 clean: bool = False) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer

        _quiet()
        self.model = model.to(device).eval()
        self.device = device
        self.pad, self.clean = pad, clean
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(processor_dir)
            self.images = AutoImageProcessor.from_pretrained(processor_dir)
        except (OSError, ValueError) as err:
            raise ModelError(f"cannot load the tokenizer and image processor in {processor_dir} ({err}).") from None

    def image_embeds(self, images: Sequence[Any]) -> Any:
        import torch

        if self.pad:
            size = int(self.model.config.vision_config.image_size)
            pixels = self.images(images=[pad_to_square(im, size) for im in images], do_resize=False,
                                 do_center_crop=False, return_tensors="pt")["pixel_values"]
        else:
            pixels = self.images(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
        out = getattr(out, "pooler_output", out)
        return torch.nn.functional.normalize(out.float(), dim=-1)

    def text_embeds(self, prompts: Sequence[str]) -> Any:
        import torch

        limit = int(self.model.config.text_config.max_position_embeddings)
        texts = [clean_text(p) for p in prompts] if self.clean else list(prompts)
        tokens = self.tokenizer(texts, padding="max_length", truncation=True, max_length=limit,
                                return_tensors="pt")
        with torch.inference_mode():
            out = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                               attention_mask=tokens["attention_mask"].to(self.device))
        out = getattr(out, "pooler_output", out)
        return torch.nn.functional.normalize(out.float(), dim=-1)


@functools.cache
def _load_clip(kind: str, card_json: str, device: str, allow_pickle: bool, offline: bool,
               dtype: str | None = None) -> Clip:
    """Load once per process: ``clip`` (a transformers CLIPModel folder) or ``open-clip`` (weights + config)."""
    from transformers import CLIPConfig, CLIPModel

    card = MetricCard.model_validate_json(card_json)
    options = MetricLoad(device=device, offline=offline, allow_pickle=allow_pickle)
    processor = locate_model(card, "processor", options)
    if kind == "clip":
        folder = locate_model(card, "model", options)
        safetensors = any(folder.glob("*.safetensors"))
        if not safetensors and not (allow_pickle and any(folder.glob("*.bin"))):
            raise ModelError(f"metric {card.name}: no safetensors weights in {folder}. If the model only has a "
                             "pytorch_model.bin (a pickle), add \"*.bin\" to the card's allow_patterns and pass "
                             "--allow-pickle.")
        try:
            model = CLIPModel.from_pretrained(folder, use_safetensors=safetensors)
        except (OSError, ValueError) as err:
            raise ModelError(f"metric {card.name}: cannot load the CLIP model in {folder} ({err}).") from None
    else:
        config = CLIPConfig.from_pretrained(processor)
        model = CLIPModel(config)
        state = open_clip_to_transformers(load_weights(locate_model(card, "weights", options), allow_pickle))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ModelError(f"metric {card.name}: the weights do not fit the CLIP config "
                             f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]}).")
    if dtype is not None:
        import torch

        if dtype not in ("float32", "float16", "bfloat16"):
            from w2sd_cli.errors import InputError

            raise InputError(f"--dtype {dtype!r}: use float32, float16 or bfloat16.")
        scale = model.logit_scale.detach().float().clone()
        model = model.to(getattr(torch, dtype))
        model.logit_scale = torch.nn.Parameter(scale, requires_grad=False)  # exp(4.6052) in bf16 is 99, not 100
    hps = kind == "open-clip"
    return Clip(model, processor, _device(device), pad=hps, clean=hps)


class _ClipMetric:
    """Shared loading for the CLIP-based metrics."""

    name = ""
    loader = "clip"
    directions: ClassVar[dict[str, int]] = {"score": 1}

    def __init__(self) -> None:
        self.options = MetricLoad()

    def load(self, options: MetricLoad) -> None:
        self.options = options
        self.clip()

    def card(self) -> MetricCard:
        return metric_card(self.name)

    def clip(self) -> Clip:
        card = self.card()
        return _load_clip(self.loader, card.model_dump_json(by_alias=True, context={"secrets": True}),
                          self.options.device, self.options.allow_pickle, self.options.offline, self.options.dtype)

    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> list[dict[str, float]]:
        return self.score_and_embed(images, prompts)[0]

    def embed(self, images: Sequence[Any]) -> Any:
        return self.clip().image_embeds(images).cpu().numpy()

    def score_and_embed(self, images: Sequence[Any], prompts: Sequence[str]) -> tuple[list[dict[str, float]], Any]:
        clip = self.clip()
        image, text = clip.image_embeds(images), clip.text_embeds(prompts)
        values = self.values(clip, image, text)
        return [{"score": float(v)} for v in values.tolist()], image.cpu().numpy()

    def values(self, clip: Clip, image: Any, text: Any) -> Any:
        return (image * text).sum(-1)


class PickScore(_ClipMetric):
    """PickScore v1: CLIP-H fine-tuned on Pick-a-Pic preferences; logit-scaled image-text similarity."""

    name = "pickscore"
    summary = "PickScore v1 (yuvalkirstain/PickScore_v1): exp(logit_scale) · cos(image, prompt), about 18-23"

    def values(self, clip: Clip, image: Any, text: Any) -> Any:
        return clip.model.logit_scale.exp().float().cpu() * (image * text).sum(-1).cpu()


class HPSv2(_ClipMetric):
    """HPSv2.1: open_clip ViT-H-14 fine-tuned on human preferences; 100 · cos(image, prompt)."""

    name = "hpsv2"
    loader = "open-clip"
    summary = "HPSv2.1 (xswu/HPSv2, open_clip ViT-H-14 weights, pickle: needs --allow-pickle): 100 · cos, about 25-35"

    def values(self, clip: Clip, image: Any, text: Any) -> Any:
        return 100 * (image * text).sum(-1).cpu()


class Aesthetic(_ClipMetric):
    """The LAION aesthetic predictor v2: a linear MLP over unit CLIP ViT-L/14 image embeddings (about 1-10)."""

    name = "aesthetic"
    summary = "LAION aesthetic predictor v2 (sac+logos+ava1 linear MLP on CLIP ViT-L/14; pickle: --allow-pickle)"

    def values(self, clip: Clip, image: Any, text: Any) -> Any:
        head = _load_head(self.card().model_dump_json(by_alias=True, context={"secrets": True}),
                          self.options.allow_pickle, self.options.offline)
        return head(image.cpu())

    def score_and_embed(self, images: Sequence[Any], prompts: Sequence[str]) -> tuple[list[dict[str, float]], Any]:
        clip = self.clip()
        image = clip.image_embeds(images)
        values = self.values(clip, image, None)
        return [{"score": float(v)} for v in values.tolist()], image.cpu().numpy()


@functools.cache
def _load_head(card_json: str, allow_pickle: bool, offline: bool) -> Any:
    """The aesthetic MLP as a callable: its Linear layers in index order. v2 has no activations; with the
    card option ``activation: relu`` a ReLU follows every hidden layer (the reference's ReLU variant)."""
    import torch

    card = MetricCard.model_validate_json(card_json)
    state = load_weights(locate_model(card, "head", MetricLoad(offline=offline, allow_pickle=allow_pickle)),
                         allow_pickle)
    indices = sorted({int(k.split(".")[1]) for k in state if k.startswith("layers.") and k.endswith(".weight")})
    if not indices:
        raise ModelError(f"metric {card.name}: the head weights have no `layers.N.weight` tensors.")
    layers = [(state[f"layers.{i}.weight"].float(), state[f"layers.{i}.bias"].float()) for i in indices]
    relu = card.options.get("activation") == "relu"

    def head(x: Any) -> Any:
        for n, (weight, bias) in enumerate(layers):
            x = x @ weight.T + bias
            if relu and n < len(layers) - 1:
                x = torch.relu(x)
        return x[:, 0]

    return head


def describe(metric: Any) -> dict[str, Any]:
    """What a metric is, for `w2sd eval --list`."""
    return {"name": metric.name, "summary": getattr(metric, "summary", ""),
            "inputs": getattr(metric, "inputs", "image"), "directions": getattr(metric, "directions", {}),
            "diversity": callable(getattr(metric, "embed", None))}


def dump(card: MetricCard) -> str:
    return json.dumps(card.model_dump(mode="json", by_alias=True), sort_keys=True)
