"""DiT-MoE model: routing per call, the dense-mix identity, published key layout, strict loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from w2sd_cli.errors import ModelError
from w2sd_cli.moe.checkpoint import load_network, read_state_dict, save_network
from w2sd_cli.moe.config import PRESETS, DiTMoEConfig
from w2sd_cli.moe.model import DiTMoE, Routing, SparseMoE, parameter_count

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def net() -> DiTMoE:
    torch.manual_seed(0)
    return DiTMoE(TINY).eval()


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, TINY.in_channels, TINY.input_size, TINY.input_size, generator=g)
    return x, torch.tensor([700.0, 20.0]), torch.tensor([3, TINY.num_classes])


def _layer() -> tuple[SparseMoE, torch.Tensor]:
    torch.manual_seed(2)
    layer = SparseMoE(16, DiTMoEConfig(hidden_size=16, num_heads=2, num_experts=5, experts_per_token=2))
    return layer, torch.randn(3, 7, 16)


def _oracle(layer: SparseMoE, x: torch.Tensor, pick: str, k: int) -> torch.Tensor:
    """Token by token: the chosen experts' softmax-weighted outputs plus the shared expert."""
    tokens = x.reshape(-1, x.shape[-1])
    rows = []
    for token in tokens:
        scores = torch.softmax(layer.gate.weight @ token, dim=0)
        order = torch.argsort(scores, descending=pick == "top")[:k]
        out = layer.shared_experts(token)
        for e in order.tolist():
            out = out + scores[e] * layer.experts[e](token)
        rows.append(out)
    return torch.stack(rows).reshape(x.shape)


@torch.no_grad()
def test_top_and_bottom_routing_match_a_token_by_token_oracle() -> None:
    layer, x = _layer()
    for mode in ("top", "bottom"):
        torch.testing.assert_close(layer(x, Routing(mode)), _oracle(layer, x, mode, 2), atol=1e-6, rtol=1e-5)


@torch.no_grad()
def test_all_experts_equals_the_dense_softmax_mix_in_every_mode() -> None:
    layer, x = _layer()
    tokens = x.reshape(-1, 16)
    scores = torch.softmax(tokens @ layer.gate.weight.T, dim=-1)
    dense = sum(scores[:, e, None] * expert(tokens) for e, expert in enumerate(layer.experts))
    expected = (dense + layer.shared_experts(tokens)).reshape(x.shape)
    for mode in ("top", "bottom", "random"):
        torch.testing.assert_close(layer(x, Routing(mode, k=5)), expected, atol=1e-6, rtol=1e-5)


@torch.no_grad()
def test_whole_network_top_bottom_random_differ_and_k_all_agrees(net: DiTMoE, inputs: tuple) -> None:
    x, t, y = inputs
    top, bottom = net(x, t, y, Routing("top")), net(x, t, y, Routing("bottom"))
    assert top.shape == (2, TINY.out_channels, TINY.input_size, TINY.input_size)
    assert (top - bottom).abs().max() > 1e-3
    assert torch.equal(net(x, t, y), top), "default routing is the trained top-k"
    every = [net(x, t, y, Routing(m, k=TINY.num_experts)) for m in ("top", "bottom", "random")]
    torch.testing.assert_close(every[0], every[1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(every[0], every[2], atol=1e-6, rtol=1e-5)


@torch.no_grad()
def test_random_routing_is_seeded_per_call_and_leaves_no_state(net: DiTMoE, inputs: tuple) -> None:
    x, t, y = inputs
    first = net(x, t, y, Routing("random", seed=5))
    top = net(x, t, y, Routing("top"))
    assert torch.equal(net(x, t, y, Routing("random", seed=5)), first)
    assert not torch.equal(net(x, t, y, Routing("random", seed=6)), first)
    assert torch.equal(net(x, t, y, Routing("top")), top), "a random call must not change later calls"


def test_routing_rejects_bad_values(net: DiTMoE, inputs: tuple) -> None:
    x, t, y = inputs
    with pytest.raises(ValueError, match="exceeds"):
        net(x, t, y, Routing("top", k=TINY.num_experts + 1))
    with pytest.raises(ValueError, match="routing mode"):
        Routing("worst")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_heads"):
        DiTMoEConfig(hidden_size=30, num_heads=4)


def test_state_dict_uses_the_published_names_and_shapes() -> None:
    config = PRESETS["DiT-MoE-S/2-8E2A"]
    with torch.device("meta"):
        state = DiTMoE(config).state_dict()
    expected = {
        "x_embedder.proj.weight": (384, 4, 2, 2),
        "t_embedder.mlp.0.weight": (384, 256),
        "t_embedder.mlp.2.bias": (384,),
        "y_embedder.embedding_table.weight": (1001, 384),
        "pos_embed": (1, 256, 384),
        "blocks.0.attn.qkv.weight": (1152, 384),
        "blocks.0.attn.proj.bias": (384,),
        "blocks.0.adaLN_modulation.1.weight": (2304, 384),
        "blocks.0.moe.gate.weight": (8, 384),
        "blocks.11.moe.experts.7.gate_proj.weight": (1536, 384),
        "blocks.11.moe.experts.7.down_proj.weight": (384, 1536),
        "blocks.3.moe.shared_experts.up_proj.weight": (768, 384),
        "final_layer.adaLN_modulation.1.weight": (768, 384),
        "final_layer.linear.weight": (32, 384),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert len(state) == 8 + 12 * (4 + 2 + 1 + 3 * 9) + 4
    # dit_moe_s_8E2A.pt is ~0.80 GB of fp32: the same parameter count.
    assert parameter_count(config) == 199_307_552


@torch.no_grad()
def test_safetensors_round_trip(tmp_path: Path, net: DiTMoE, inputs: tuple) -> None:
    x, t, y = inputs
    path = tmp_path / "tiny.safetensors"
    save_network(net, path)
    loaded = load_network(path, TINY)
    assert torch.equal(loaded(x, t, y, Routing("bottom")), net(x, t, y, Routing("bottom")))


@torch.no_grad()
def test_training_checkpoint_pickle_loads_its_ema_weights(tmp_path: Path, net: DiTMoE, inputs: tuple) -> None:
    x, t, y = inputs
    path = tmp_path / "ckpt.pt"
    torch.save({"ema": net.state_dict(), "model": {"junk": torch.zeros(1)}}, path)
    with pytest.raises(ModelError, match="--allow-pickle"):
        load_network(path, TINY)
    assert torch.equal(load_network(path, TINY, allow_pickle=True)(x, t, y), net(x, t, y))


def test_pickles_with_objects_are_never_unpickled(tmp_path: Path, net: DiTMoE) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"model": net.state_dict(), "args": Path("x")}, path)
    with pytest.raises(ModelError, match="will not unpickle"):
        read_state_dict(path, allow_pickle=True)


@pytest.mark.parametrize("change", ["missing", "extra", "shape"])
def test_mismatched_checkpoints_are_refused_naming_the_key(tmp_path: Path, net: DiTMoE, change: str) -> None:
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in net.state_dict().items()}
    key = "blocks.1.moe.experts.2.up_proj.weight"
    if change == "missing":
        del state[key]
    elif change == "extra":
        key = "blocks.1.moe.experts.9.up_proj.weight"
        state[key] = torch.zeros(1)
    else:
        state[key] = torch.zeros(3, 3)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelError, match=key.replace(".", r"\.")) as err:
        load_network(path, TINY)
    assert {"missing": "missing keys", "extra": "unexpected keys", "shape": "wrong shapes"}[change] in str(err.value)


def test_wrong_architecture_is_refused(tmp_path: Path, net: DiTMoE) -> None:
    path = tmp_path / "tiny.safetensors"
    save_network(net, path)
    with pytest.raises(ModelError, match="wrong shapes"):
        load_network(path, DiTMoEConfig.from_mapping({"num_experts": 4, "hidden_size": 64}, TINY))


def test_a_model_folder_must_hold_one_weights_file_or_name_it(tmp_path: Path, net: DiTMoE) -> None:
    from w2sd_cli.moe.checkpoint import find_weights

    save_network(net, tmp_path / "a.safetensors")
    (tmp_path / "README.md").write_text("not weights")
    assert find_weights(tmp_path) == tmp_path / "a.safetensors"
    save_network(net, tmp_path / "b.safetensors")
    with pytest.raises(ModelError, match=r"a\.safetensors, b\.safetensors; name it with `filename:`"):
        find_weights(tmp_path)
    assert find_weights(tmp_path, "b.safetensors") == tmp_path / "b.safetensors"
