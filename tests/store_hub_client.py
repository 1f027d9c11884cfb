"""Run one store call in a fresh process (huggingface_hub reads HF_ENDPOINT/HF_HUB_OFFLINE at import).

Usage: python store_hub_client.py '{"op": "pull"|"locate"|"plan"|"generate", "card": {...}, "key": ..., ...}'
Prints one JSON line: {"paths": [...]} / {"plan": ...} / {"error": type, "message": ...}.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    from w2sd_cli.cards import parse_card
    from w2sd_cli.errors import W2SDError
    from w2sd_cli.store import ensure_models, locate, plan_pull, pull

    request = json.loads(sys.argv[1])
    card = parse_card(request["card"])
    events: list[dict] = []
    try:
        if request["op"] == "pull":
            out: dict = {"paths": [str(p) for p in pull(card, progress=events.append)]}
        elif request["op"] == "ensure":
            found = ensure_models(card, offline=False, observer=events.append, workers=request.get("workers", 3))
            out = {"paths": [str(p) for p in found.values()]}
        elif request["op"] == "plan":
            plan = plan_pull(card)
            out = {"plan": [{"key": m.key, "commit": m.commit, "files": [f.__dict__ for f in m.files]}
                            for m in plan.models]}
        else:
            key = request["key"]
            path = locate(card.models[key], pair=card.name, key=key, progress=events.append)
            out = {"paths": [str(path)]}
            if request["op"] == "generate":
                out["image"] = generate(path)
    except W2SDError as err:
        out = {"error": type(err).__name__, "message": str(err)}
    out["events"] = events if request.get("all_events") else len(events)
    print(json.dumps(out))


def generate(path: object) -> list[int]:
    """Load the pulled pipeline from disk (no network) and make one 2-step image."""
    import torch
    from diffusers import DDPMPipeline

    torch.set_num_threads(1)
    pipe = DDPMPipeline.from_pretrained(str(path), local_files_only=True)
    image = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                 output_type="np").images
    return list(image.shape)


if __name__ == "__main__":
    main()
