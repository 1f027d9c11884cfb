"""ImageReward parity: w2sd's scorer against the reference `image-reward` package on one random checkpoint.

The reference needs the transformers it was written for, so it runs in a separate, throw-away environment
outside the repository (never in CI), e.g.:

    python3.11 -m venv /tmp/ir-ref && /tmp/ir-ref/bin/pip install torch torchvision "transformers==4.30.2" \
        "timm==0.6.13" tqdm huggingface-hub && \
        /tmp/ir-ref/bin/pip install --no-deps --no-build-isolation fairscale==0.4.13 image-reward==1.5

Then, from the repository root (``--size full`` is the real ViT-L/16 + BERT-base architecture, about 1.8 GB
of float32 weights and a minute of CPU; ``tiny`` is the suite's fixture):

    python benchmarks/imagereward_parity.py make --size full --dir /tmp/ir-parity
    PYTHONPATH=. /tmp/ir-ref/bin/python benchmarks/imagereward_parity.py reference --size full --dir /tmp/ir-parity
    python benchmarks/imagereward_parity.py w2sd --dir /tmp/ir-parity
    python benchmarks/imagereward_parity.py compare --dir /tmp/ir-parity

Both sides score the same images and prompts (tests/imagereward_fixture.py) from the same ``ImageReward.pt``
(torch.save of a state dict laid out like THUDM's) and the same small local WordPiece vocabulary, which
stands in for bert-base-uncased (the reference fetches that by name; here it is redirected to the local
folder). For ``tiny`` the reference's hard-coded ViT-L and 768-wide head are swapped for the fixture's sizes.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.imagereward_fixture import PROMPTS, TINY, Sizes, images, write_checkpoint

SIZES = {"tiny": TINY, "full": Sizes()}


def reference(folder: Path, sizes: Sizes) -> list[float]:
    """Score with the reference package's own classes and its own loading (``strict=False``, so the key check
    below is what proves the layout matches)."""
    import importlib.util

    spec = importlib.util.find_spec("ImageReward")
    assert spec is not None and spec.submodule_search_locations, "image-reward is not installed here"
    _torchvision_transforms_only()
    root = Path(next(iter(spec.submodule_search_locations)))
    for name, where in (("ImageReward", root), ("ImageReward.models", root / "models")):
        package = types.ModuleType(name)  # skip the __init__s: they import ReFL, diffusers, OpenAI's clip...
        package.__path__ = [str(where)]
        sys.modules[name] = package
    from ImageReward import ImageReward as module  # type: ignore[import-not-found]
    from ImageReward.models.BLIP import blip, blip_pretrain, vit  # type: ignore[import-not-found]
    from transformers import BertTokenizer

    local = folder / "tokenizer"
    real = BertTokenizer.from_pretrained
    blip.BertTokenizer = types.SimpleNamespace(from_pretrained=lambda name, **kw: real(str(local), **kw))
    if sizes != SIZES["full"]:
        def small_vit(*args: Any, **kwargs: Any) -> tuple[Any, int]:
            return vit.VisionTransformer(img_size=224, patch_size=16, embed_dim=sizes.vision_width,
                                         depth=sizes.vision_depth, num_heads=sizes.vision_heads), sizes.vision_width

        class SmallHead(torch.nn.Module):
            def __init__(self, _: int) -> None:
                super().__init__()
                w = (sizes.text_width, *sizes.head)
                n = torch.nn
                self.layers = n.Sequential(n.Linear(w[0], w[1]), n.Dropout(0.2), n.Linear(w[1], w[2]), n.Dropout(0.2),
                                           n.Linear(w[2], w[3]), n.Dropout(0.1), n.Linear(w[3], w[4]),
                                           n.Linear(w[4], w[5]))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.layers(x)

        blip_pretrain.create_vit = small_vit
        module.MLP = SmallHead
    model = module.ImageReward(med_config=str(folder / "med" / "med_config.json"), device="cpu").eval()
    state = torch.load(folder / "ImageReward.pt", map_location="cpu")
    msg = model.load_state_dict(state, strict=False)
    assert not msg.missing_keys and not msg.unexpected_keys, msg
    with torch.no_grad():
        return [float(model.score(p, im)) for im, p in zip(images(len(PROMPTS)), PROMPTS, strict=True)]


def _torchvision_transforms_only() -> None:
    """Import torchvision even where its compiled ops do not load (a CUDA wheel beside a CPU torch): the
    reference needs only its PIL transforms, so the ops' fake-kernel registrations are skipped."""
    real = torch.library.register_fake
    torch.library.register_fake = lambda *args, **kwargs: (lambda fn: fn)  # type: ignore[assignment]
    try:
        import torchvision  # noqa: F401
    finally:
        torch.library.register_fake = real


def ours(folder: Path) -> list[float]:
    """Score with w2sd: the same files through the metric's loader (pickle read with weights_only=True)."""
    from w2sd_cli.bench.metrics.imagereward import build
    from w2sd_cli.bench.metrics.reward import load_weights

    state = load_weights(folder / "ImageReward.pt", allow_pickle=True)
    med = json.loads((folder / "med" / "med_config.json").read_text())
    model = build(state, med, folder / "tokenizer")
    return model.score(images(len(PROMPTS)), PROMPTS)


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["make", "reference", "w2sd", "compare"])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.step == "make":
        write_checkpoint(args.dir, SIZES[args.size], args.seed)
    elif args.step in ("reference", "w2sd"):
        scores = reference(args.dir, SIZES[args.size]) if args.step == "reference" else ours(args.dir)
        import transformers

        (args.dir / f"{args.step}.json").write_text(json.dumps(
            {"scores": scores, "torch": torch.__version__, "transformers": transformers.__version__}))
        print(args.step, scores)
    else:
        ref = json.loads((args.dir / "reference.json").read_text())
        got = json.loads((args.dir / "w2sd.json").read_text())
        diffs = [abs(a - b) for a, b in zip(ref["scores"], got["scores"], strict=True)]
        print(json.dumps({"reference": ref, "w2sd": got, "abs_diff": diffs, "max_abs_diff": max(diffs)}, indent=1))


if __name__ == "__main__":
    main()
