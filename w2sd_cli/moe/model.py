"""DiT-MoE (Fei et al., arXiv 2407.11633) written for w2sd, torch only, with per-call expert routing.

Module names and parameter shapes follow the published model code (github.com/feizc/DiT-MoE,
``models.py``), so its checkpoints load unchanged: a DiT whose MLPs are sparse mixtures of SwiGLU
experts plus one always-on shared expert; the router scores experts with a softmax and mixes the
chosen experts' outputs with their *unnormalised* softmax weights.

The routing is an argument of ``forward`` (``Routing``), never state on the module, so one network
serves the strong side (each token's top-k experts), the weak side (its bottom-k) and a seeded
random-k control without copying weights. With k = all experts every mode is the dense mix
``sum_e softmax_e(x) expert_e(x)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from w2sd_cli.moe.config import PRESETS, ROUTING_MODES, DiTMoEConfig, RoutingMode

__all__ = ["PRESETS", "DiTMoE", "DiTMoEConfig", "Routing", "RoutingMode", "select_experts"]


@dataclass(frozen=True)
class Routing:
    """Which experts each token uses in one forward call.

    Attributes:
        mode: ``top`` (the trained routing: the k highest router scores), ``bottom`` (the k lowest)
            or ``random`` (k experts drawn uniformly per token from a generator seeded with ``seed``).
        k: experts per token; ``None`` = the config's ``experts_per_token``.
        seed: seed of the random mode; the same call with the same seed routes the same way.
        renormalize: rescale the chosen experts' softmax weights to sum to 1 (the published gate
            does not: ``norm_topk_prob = False``).
    """

    mode: RoutingMode = "top"
    k: int | None = None
    seed: int = 0
    renormalize: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ROUTING_MODES:
            raise ValueError(f"routing mode must be one of {', '.join(ROUTING_MODES)}, got {self.mode!r}")
        if self.k is not None and self.k < 1:
            raise ValueError(f"routing k must be at least 1, got {self.k}")


def select_experts(scores: Tensor, mode: RoutingMode, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Indices ``(tokens, k)`` of the experts each token uses, from router probabilities ``(tokens, E)``."""
    if mode == "top":
        return scores.topk(k, dim=-1).indices
    if mode == "bottom":
        return scores.topk(k, dim=-1, largest=False).indices
    draws = torch.rand(scores.shape, generator=generator, device=scores.device)
    return draws.topk(k, dim=-1).indices


class SwiGLU(nn.Module):
    """One expert: ``down(silu(gate(x)) * up(x))``, no biases (published ``MoeMLP``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Router(nn.Module):
    """Linear router without bias; ``scores`` are the softmax over experts."""

    def __init__(self, dim: int, num_experts: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def scores(self, tokens: Tensor) -> Tensor:
        return F.linear(tokens, self.weight).softmax(dim=-1)


class SparseMoE(nn.Module):
    """Routed SwiGLU experts plus one shared expert that every token uses."""

    def __init__(self, dim: int, config: DiTMoEConfig) -> None:
        super().__init__()
        self.default_k = config.experts_per_token
        self.experts = nn.ModuleList(SwiGLU(dim, config.mlp_ratio * dim) for _ in range(config.num_experts))
        self.gate = Router(dim, config.num_experts)
        self.shared_experts = SwiGLU(dim, config.shared_ratio * dim)

    def forward(self, x: Tensor, routing: Routing, generator: torch.Generator | None = None) -> Tensor:
        tokens = x.reshape(-1, x.shape[-1])
        scores = self.gate.scores(tokens)
        k = routing.k or self.default_k
        if k > len(self.experts):
            raise ValueError(f"routing k = {k} exceeds the {len(self.experts)} experts of this network")
        chosen = select_experts(scores, routing.mode, k, generator)
        weights = scores.gather(-1, chosen)
        if routing.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        routed = torch.zeros_like(tokens)
        for index, expert in enumerate(self.experts):
            rows, slots = (chosen == index).nonzero(as_tuple=True)
            if rows.numel():
                routed.index_add_(0, rows, expert(tokens[rows]) * weights[rows, slots, None])
        return (routed + self.shared_experts(tokens)).reshape(x.shape)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm's layout: 3 × heads × head_dim)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Block(nn.Module):
    """Attention then sparse MoE, both modulated by the conditioning (adaLN with gates)."""

    def __init__(self, config: DiTMoEConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, config.num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.moe = SparseMoE(dim, config)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, routing: Routing, generator: torch.Generator | None) -> Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_a.unsqueeze(1) * self.attn(_modulate(self.norm1(x), shift_a, scale_a))
        return x + gate_m.unsqueeze(1) * self.moe(_modulate(self.norm2(x), shift_m, scale_m), routing, generator)


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens with one strided convolution."""

    def __init__(self, config: DiTMoEConfig) -> None:
        super().__init__()
        p = config.patch_size
        self.proj = nn.Conv2d(config.in_channels, config.hidden_size, kernel_size=p, stride=p)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of the timestep (cos half first, 256 of them) through a 2-layer MLP."""

    def __init__(self, dim: int, frequencies: int = 256) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        half = self.frequencies // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        features = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(features.to(dtype))


class LabelEmbedder(nn.Module):
    """Class label to vector; row ``num_classes`` is the null class of classifier-free guidance."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)
        nn.init.normal_(self.embedding_table.weight, std=0.02)

    def forward(self, labels: Tensor) -> Tensor:
        return self.embedding_table(labels)


class FinalLayer(nn.Module):
    """Modulated layer norm and a linear map from tokens to patch pixels."""

    def __init__(self, config: DiTMoEConfig) -> None:
        super().__init__()
        dim, p = config.hidden_size, config.patch_size
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, p * p * config.out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


def sincos_positions(dim: int, grid_size: int) -> Tensor:
    """Fixed 2-D sin-cos position table ``(grid², dim)``: first half encodes the column, second the row."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(pos: Tensor) -> Tensor:
        angles = pos.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


class DiTMoE(nn.Module):
    """The DiT-MoE denoiser: ``forward(x, t, labels, routing) -> eps (and variance) channels``."""

    def __init__(self, config: DiTMoEConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.x_embedder = PatchEmbed(config)
        self.t_embedder = TimestepEmbedder(dim)
        self.y_embedder = LabelEmbedder(config.num_classes, dim)
        self.register_buffer("pos_embed", sincos_positions(dim, config.grid_size)[None])
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.final_layer = FinalLayer(config)

    @property
    def device(self) -> torch.device:
        return self.final_layer.linear.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.final_layer.linear.weight.dtype

    @property
    def null_label(self) -> int:
        """The label of the unconditional branch."""
        return self.config.num_classes

    def forward(self, x: Tensor, t: Tensor, labels: Tensor, routing: Routing | None = None) -> Tensor:
        """Predict ``(N, out_channels, H, W)`` from latents ``(N, C, H, W)``, timesteps and labels ``(N,)``.

        Args:
            x: noisy latents at ``input_size``.
            t: training timesteps (0..999), one per sample.
            labels: class labels; ``null_label`` for the unconditional branch.
            routing: which experts each token uses (default: the trained top-k).
        """
        routing = routing or Routing()
        generator = None
        if routing.mode == "random":
            generator = torch.Generator(device=x.device).manual_seed(routing.seed)
        tokens = self.x_embedder(x) + self.pos_embed.to(x.dtype)
        c = self.t_embedder(t.to(x.device), x.dtype) + self.y_embedder(labels.to(x.device))
        for block in self.blocks:
            tokens = block(tokens, c, routing, generator)
        return self._unpatchify(self.final_layer(tokens, c))

    def _unpatchify(self, tokens: Tensor) -> Tensor:
        n, g, p, c = tokens.shape[0], self.config.grid_size, self.config.patch_size, self.config.out_channels
        patches = tokens.reshape(n, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return patches.reshape(n, c, g * p, g * p)


def parameter_count(config: DiTMoEConfig) -> int:
    """Parameters of a network of this shape (pos_embed included, as in the published checkpoints)."""
    with torch.device("meta"):
        net = DiTMoE(config)
    return sum(t.numel() for t in net.state_dict().values())
