"""Pair cards: small YAML documents validated by a strict pydantic schema (``schema: 1``).

A card names a pair, its kind, where its models come from and what each side (strong, weak,
final) sets. Kinds validate their own ``options`` with a model of their own.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_serializer,
    model_serializer,
    model_validator,
)

from w2sd_cli.errors import CardError

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"


class Strict(BaseModel):
    """Base of every card model: unknown fields are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Mirror(Strict):
    """Another source of the same file: a URL, or one file of a Hub repo. The model's ``sha256`` applies."""

    url: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    subfolder: str | None = None
    filename: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Mirror:
        if bool(self.url) == bool(self.repo_id):
            raise ValueError("a mirror gives exactly one of url, repo_id")
        if self.url and not self.url.startswith(("https://", "http://")):
            raise ValueError("a mirror url must start with https:// (or http:// for local servers)")
        if self.repo_id and not self.filename:
            raise ValueError("a Hub mirror names one file: give filename")
        if self.url and (self.revision or self.subfolder or self.filename):
            raise ValueError("a url mirror takes no revision, subfolder or filename")
        return self

    @field_serializer("url")
    def _redacted_url(self, url: str | None, info: SerializationInfo) -> str | None:
        return _redact(url, info)


class ModelRef(Strict):
    """Where one model (a folder or a file) comes from: exactly one of ``repo_id``, ``url``, ``path``.

    Hub references go through huggingface_hub into the standard HF cache. URL references are
    streamed into w2sd's content-addressed store and must pin ``sha256`` (and should give ``size``).
    Local paths are relative to the card's folder unless absolute; ``~`` is expanded.
    """

    repo_id: str | None = None
    revision: str | None = Field(None, description="commit sha (pinned) or branch/tag")
    subfolder: str | None = None
    filename: str | None = Field(None, description="one file of the repo instead of a folder")
    allow_patterns: list[str] | None = None
    url: str | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    size: int | None = Field(None, gt=0)
    path: str | None = None
    format: Literal["diffusers", "single-file", "lora", "controlnet", "dit-moe", "vae", "toy"] = "diffusers"
    notes: str | None = None
    mirrors: list[Mirror] = Field(default_factory=list, description="other sources of the same file, tried in "
                                  "order when the first refuses; needs sha256")

    @model_validator(mode="after")
    def _one_source(self) -> ModelRef:
        sources = [s for s in ("repo_id", "url", "path") if getattr(self, s)]
        if len(sources) != 1:
            raise ValueError(f"give exactly one of repo_id, url, path (got {sources or 'none'})")
        if self.url and not self.url.startswith(("https://", "http://")):
            raise ValueError("url must start with https:// (or http:// for local servers)")
        if self.url and not self.sha256:
            raise ValueError("a url source must pin its sha256")
        if self.mirrors and not self.sha256:
            raise ValueError("a model with mirrors must pin its sha256 (every mirror must serve the same bytes)")
        if self.mirrors and (self.path or (self.repo_id and not self.filename)):
            raise ValueError("mirrors are for single files: a url, or a Hub repo_id with filename")
        return self

    @field_serializer("url")
    def _redacted_url(self, url: str | None, info: SerializationInfo) -> str | None:
        return _redact(url, info)

    @model_serializer(mode="wrap")
    def _without_empty_mirrors(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Cards without mirrors dump (and digest) exactly as before the field existed."""
        data = handler(self)
        if isinstance(data, dict) and not data.get("mirrors"):
            data.pop("mirrors", None)
        return data


def _redact(url: str | None, info: SerializationInfo) -> str | None:
    """Recorded and printed forms of a card (recipes, ``pairs show``) carry no credentials; pass
    ``context={"secrets": True}`` to dump a card that must be read back whole."""
    if url is None or (isinstance(info.context, dict) and info.context.get("secrets")):
        return url
    from w2sd_cli.store.redact import redact_url

    return redact_url(url)


class MixtureSpec(Strict):
    """An isotropic Gaussian mixture given by weights, means and stds (analytic pairs)."""

    weights: list[float] = Field(min_length=1)
    means: list[list[float]] = Field(min_length=1)
    stds: list[float] | float

    @model_validator(mode="after")
    def _shapes(self) -> MixtureSpec:
        if len(self.weights) != len(self.means):
            raise ValueError(f"{len(self.weights)} weights for {len(self.means)} means")
        if len({len(m) for m in self.means}) != 1:
            raise ValueError("all means must have the same dimension")
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError("weights must be non-negative and not all zero")
        stds = self.stds if isinstance(self.stds, list) else [self.stds]
        if any(s <= 0 for s in stds) or (isinstance(self.stds, list) and len(stds) != len(self.means)):
            raise ValueError("stds must be positive, one per component or one for all")
        return self


class Side(BaseModel):
    """What one side of the pair (strong, weak or final) sets, as the card writes it.

    The card's kind validates the knobs with its own side model (``PairKind.side_model``, ``PairKind.sides``), so
    a plugin kind can add knobs; here only their names are checked (``model``, ``lora`` and ``control`` must name
    one of the card's models). Reading an unset knob as an attribute gives ``None``.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    def knobs(self) -> dict[str, Any]:
        """The knobs the card sets, as written."""
        return dict(self.__pydantic_extra__ or {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            return super().__getattr__(name)  # type: ignore[misc]
        return (self.__pydantic_extra__ or {}).get(name)

    @model_validator(mode="after")
    def _knob_names(self) -> Side:
        for key in self.knobs():
            if not re.match(r"^[a-z][a-z0-9_]*$", key):
                raise ValueError(f"{key!r} is not a knob name (lower-case letters, digits and _)")
        return self


LEGACY_SIDE_KNOBS = ("model", "lora", "lora_scale", "cfg", "prompt", "negative_prompt", "control", "control_scale",
                     "experts", "mixture")
"""The knobs every side was dumped with before kinds owned their sides: the digest keeps that canonical form, so
an unchanged card keeps its digest."""


class Source(Strict):
    """Where the pair comes from: the paper table, a licence, a link."""

    paper: str | None = None
    licence: str | None = None
    url: str | None = None
    notes: str | None = None


class Defaults(Strict):
    """Sampling defaults; command-line flags override them."""

    steps: int = Field(50, ge=1, le=1000)
    lam: int | None = Field(None, ge=0, description="reflected steps; default steps - 1")
    rounds: int = Field(1, ge=1, le=10)
    width: int | None = Field(None, ge=8)
    height: int | None = Field(None, ge=8)
    seed: int = Field(0, ge=0)
    samples: int | None = Field(None, ge=1, description="analytic pairs: how many samples")

    @model_validator(mode="after")
    def _lam_fits(self) -> Defaults:
        if self.lam is not None and self.lam > self.steps:
            raise ValueError(f"lam ({self.lam}) cannot exceed steps ({self.steps})")
        return self


class PairCard(Strict):
    """One weak/strong pair. ``kind`` picks the plugin code that turns the card into denoisers."""

    schema_version: Literal[1] = Field(alias="schema")
    name: str = Field(pattern=NAME_PATTERN)
    aliases: list[str] = []
    kind: str
    description: str
    source: Source = Source()
    models: dict[str, ModelRef] = {}
    strong: Side = Side()
    weak: Side = Side()
    final: Side = Side()
    defaults: Defaults = Defaults()
    metrics: list[str] = Field([], description="metrics that score every output (e.g. shapes-checker)")
    options: dict[str, Any] = {}

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    _digest: str | None = PrivateAttr(default=None)
    _origin: str = PrivateAttr(default="<card>")

    @property
    def origin(self) -> str:
        """Where the card was read from (a file path or ``plugin NAME``), for error messages."""
        return self._origin

    @model_validator(mode="after")
    def _references_resolve(self) -> PairCard:
        for alias in self.aliases:
            if not re.match(NAME_PATTERN, alias):
                raise ValueError(f"alias {alias!r} must match {NAME_PATTERN}")
        for side_name in ("strong", "weak", "final"):
            side: Side = getattr(self, side_name)
            for knob in ("model", "lora", "control"):
                key = side.knobs().get(knob)
                if key is not None and key not in self.models:
                    known = ", ".join(sorted(self.models)) or "none"
                    raise ValueError(f"{side_name}.{knob} names model {key!r}, not in models ({known})")
        return self

    def model_copy(self, *, update: Any = None, deep: bool = False) -> PairCard:
        """A copy; a changed copy forgets the digest recorded when the card was read."""
        copy = super().model_copy(update=update, deep=deep)
        if update:
            copy._digest = None
        return copy

    def digest(self) -> str:
        """A short sha256 of the card's canonical JSON as written (local paths before they are made absolute,
        so the digest does not depend on where the card is installed): what a result was made with."""
        if self._digest is not None:
            return self._digest
        data = self.model_dump(mode="json", by_alias=True)
        for name in ("strong", "weak", "final"):
            data[name] = _canonical_side(getattr(self, name).knobs())
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _canonical_side(knobs: dict[str, Any]) -> dict[str, Any]:
    side: dict[str, Any] = {**dict.fromkeys(LEGACY_SIDE_KNOBS), **knobs}
    if side.get("guidance") is None:
        side.pop("guidance", None)
    if isinstance(side.get("mixture"), dict):  # as the mixture model dumped it: floats, stds as written
        m = side["mixture"]
        side["mixture"] = {"weights": _floats(m.get("weights")), "means": [_floats(x) for x in m.get("means") or []],
                           "stds": _floats(m.get("stds"))}
    for key in ("lora_scale", "cfg", "control_scale"):
        if isinstance(side.get(key), int) and not isinstance(side[key], bool):
            side[key] = float(side[key])
    return side


def _floats(value: Any) -> Any:
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def parse_card(data: Any, origin: str = "<card>", base_dir: Path | None = None) -> PairCard:
    """Validate a card from already-loaded data; errors list every bad field with its path.

    Args:
        data: the mapping read from YAML (or built by a plugin).
        origin: where it came from, named in errors (a file path or ``plugin NAME``).
        base_dir: folder that relative ``path`` sources are resolved against.

    Returns:
        The validated card, with local paths made absolute.
    """
    if not isinstance(data, dict):
        raise CardError(f"{origin}: a pair card must be a YAML mapping, got {type(data).__name__}.")
    try:
        card = PairCard.model_validate(data)
    except ValidationError as err:
        raise CardError(format_validation_error(err, origin)) from None
    if base_dir is not None:
        digest = card.digest()
        card = _absolute_paths(card, base_dir)
        card._digest = digest  # the copy made by _absolute_paths forgot it
    card._origin = origin
    return card


def load_card(path: Path) -> PairCard:
    """Read and validate one YAML card file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CardError(f"{path}: cannot read the card ({err}).") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise CardError(f"{path}: not valid YAML: {err}. Fix the file or remove it.") from None
    return parse_card(data, str(path), path.parent)


def format_validation_error(err: ValidationError, origin: str, prefix: str = "") -> str:
    """One paragraph naming every bad field by its path (under ``prefix``, e.g. ``strong``)."""
    problems = []
    for item in err.errors():
        where = ".".join([prefix] * bool(prefix) + [str(p) for p in item["loc"]]) or "(card)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling against `w2sd pairs show` of a built-in card)"
        problems.append(f"{where}: {msg}")
    return f"{origin}: invalid pair card: " + "; ".join(problems) + "."


def absolute_model_paths(models: dict[str, ModelRef], base_dir: Path) -> dict[str, ModelRef]:
    """``models`` with local ``path`` sources made absolute against ``base_dir`` (``~`` expanded)."""
    resolved = {}
    for key, ref in models.items():
        if ref.path is not None:
            p = Path(ref.path).expanduser()
            ref = ref.model_copy(update={"path": str(p if p.is_absolute() else (base_dir / p).resolve())})
        resolved[key] = ref
    return resolved


def _absolute_paths(card: PairCard, base_dir: Path) -> PairCard:
    return card.model_copy(update={"models": absolute_model_paths(card.models, base_dir)})
