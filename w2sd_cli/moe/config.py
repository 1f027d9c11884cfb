"""Shapes of DiT-MoE networks, torch-free so cards can be checked without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

RoutingMode = Literal["top", "bottom", "random"]
ROUTING_MODES: tuple[RoutingMode, ...] = ("top", "bottom", "random")


@dataclass(frozen=True)
class DiTMoEConfig:
    """Shape of a DiT-MoE network (defaults: DiT-MoE-S/2-8E2A at 256², latent 32×32×4).

    Attributes:
        input_size: latent side length (image side / 8).
        patch_size: side of the square patches the latent is cut into.
        in_channels: latent channels.
        hidden_size, depth, num_heads: transformer width, blocks, attention heads.
        mlp_ratio: routed expert width = ``mlp_ratio * hidden_size``.
        shared_ratio: shared expert width = ``shared_ratio * hidden_size`` (published: 2).
        num_classes: class labels; one more embedding row holds the null class for CFG.
        num_experts: routed experts per block.
        experts_per_token: k of the trained top-k routing.
        learn_sigma: the network also outputs the variance channels (eps is the first half).
    """

    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: int = 4
    shared_ratio: int = 2
    num_classes: int = 1000
    num_experts: int = 8
    experts_per_token: int = 2
    learn_sigma: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.hidden_size % self.num_heads:
            problems.append(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.hidden_size % 4:
            problems.append(f"hidden_size {self.hidden_size} must be a multiple of 4 (2-D sin-cos positions)")
        if self.input_size % self.patch_size:
            problems.append(f"input_size {self.input_size} is not a multiple of patch_size {self.patch_size}")
        if not 1 <= self.experts_per_token <= self.num_experts:
            problems.append(f"experts_per_token {self.experts_per_token} must be in 1..num_experts")
        if min(self.input_size, self.patch_size, self.in_channels, self.depth, self.mlp_ratio,
               self.shared_ratio, self.num_classes) < 1:
            problems.append("sizes must be positive")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base: DiTMoEConfig | None = None) -> DiTMoEConfig:
        """A config from field values (unknown names are errors), starting from ``base``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DiT-MoE config fields {unknown}; known: {sorted(known)}")
        return replace(base or cls(), **data)


PRESETS: dict[str, DiTMoEConfig] = {
    "DiT-MoE-S/2-8E2A": DiTMoEConfig(),
    "DiT-MoE-S/2-16E2A": DiTMoEConfig(num_experts=16),
    "DiT-MoE-B/2-8E2A": DiTMoEConfig(hidden_size=768, num_heads=12),
    "DiT-MoE-XL/2-8E2A": DiTMoEConfig(hidden_size=1152, depth=28, num_heads=16),
    "tiny": DiTMoEConfig(input_size=8, hidden_size=32, depth=2, num_heads=2, num_classes=10, num_experts=4),
}
"""Published sizes (DiT-MoE README and ``DiT_models``) and a tiny one for tests."""
