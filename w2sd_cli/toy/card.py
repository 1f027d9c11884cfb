"""MODEL_CARD.md for a trained shapes pair: recipe, step counts, losses and checker scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from w2sd_cli.toy import components
from w2sd_cli.toy.world import ARTICLE_SHARE, BACKGROUND, COLOURS, HELD_OUT, POSITIONS, SHAPES

CARD_METHODS = ("weak", "strong", "w2sd")
CARD_CFG = 1.5
"""The CFG of every side in the shipped card (chosen on held-out items: plain strong is best near 1.5–2)."""
ATTRIBUTES = ("colour", "count", "shape", "position", "all")


def checker_scores(out: Path, per_prompt: int = 2) -> dict[str, dict[str, float]]:
    """Checker accuracy of weak, strong and W2SD on held-out items (DDIM 25 steps, CFG ``CARD_CFG``)."""
    from w2sd_cli.toy.evaluate import accuracy, evaluate, held_out_items, toy_card

    results = evaluate(toy_card(out / "strong", out / "weak", cfg=CARD_CFG), held_out_items(per_prompt), CARD_METHODS)
    return {m: {a: round(accuracy(r, a), 3) for a in ATTRIBUTES} for m, r in results.items()}


def write_model_card(out: Path, record: dict[str, Any], scores: dict[str, dict[str, float]] | None = None) -> None:
    """Write ``out/MODEL_CARD.md``; scores are computed unless given."""
    if scores is None:
        scores = checker_scores(out)
    n_items = 36 * 2
    history = record.get("loss_history", [])
    shown = history[:: max(1, len(history) // 10)]
    shown += [h for h in history[-1:] if h not in shown]
    loss_rows = "\n".join(f"| {h['step']} | {h['loss']:.4f} | {h['minutes']} |" for h in shown)
    score_rows = "\n".join(f"| {m} | " + " | ".join(f"{s[a]:.2f}" for a in ATTRIBUTES) + " |"
                           for m, s in scores.items())
    held = ", ".join("/".join(t) for t in sorted(HELD_OUT))
    weak_share = round(100 * record['weak_step'] / record['steps'])
    text = f"""# shapes: w2sd's embedded default pair

Two checkpoints of one small pixel-space text-to-image model, trained by `python -m w2sd_cli.toy.train`
on CPU with one thread. **strong** = the EMA at the end of training (step {record['steps']}),
**weak** = the EMA at step {record['weak_step']} ({weak_share}% of training), the autoguidance recipe.

## Data ("shapes world", `w2sd_cli/toy/world.py`)
32×32 RGB scenes rendered from a seed: one to three equal shapes ({', '.join(SHAPES)}; 7–9 px) in one colour
({', '.join(COLOURS)}) on a flat background {BACKGROUND}, grouped {', '.join(POSITIONS)}. Captions read
"two red circles on the left" or "a blue square at the top" (a single shape is "a" in {round(100 * ARTICLE_SHARE)}% of
training captions and "one" in the rest); in training 10% are empty (for CFG), 15% leave the position out and 7%
the colour. Scenes are rendered on the fly (batch b of step s uses scene seeds s·b … s·b+b−1), so no image
repeats. Held out of training (never rendered there), 12 of 60 compositions: {held}.

## Models
- UNet: diffusers `UNet2DConditionModel`, channels {components.UNET_CONFIG['block_out_channels']}, one ResNet
  per level, cross-attention at 8×8, {record["unet_parameters"]:,} parameters; v-prediction.
- Text encoder: transformers `CLIPTextModel`, 2 layers, width {components.TEXT_WIDTH},
  {record['text_encoder_parameters']:,} parameters, trained jointly; word-level tokenizer built locally.
- Scheduler: DDIM config, cosine betas (`squaredcos_cap_v2`), `clip_sample` on, trailing spacing.
- Weights stored in fp16 safetensors.

## Training
AdamW lr {record['lr']} (200-step warm-up), batch {record['batch_size']}, grad-norm clip 1, EMA decay
{record['ema_decay']}, seed {record['seed']}, one torch thread: {record['steps']} steps in {record['minutes']}
minutes (final loss {record['final_loss']:.4f}). {record.get('how', 'The run was time-boxed (`--minutes`).')} To rebuild
these exact weights on any machine: `OMP_NUM_THREADS=1 python -m w2sd_cli.toy.train --out DIR --steps
{record['steps']} --weak-step {record['weak_step']}`.

| step | loss (mean of 200) | minutes |
|---|---|---|
{loss_rows}

## Checker scores (held-out compositions, {n_items} items, DDIM 25 steps, CFG {CARD_CFG} on every side, λ = 24)
| method | colour | count | shape | position | all four |
|---|---|---|---|---|---|
{score_rows}

Held-out captions of a single shape say "a" for one seed and "one" for the other.
{_previous(record.get('previous') or [])}
`benchmarks/bench_shapes.py` gives the full comparison with confidence intervals and diversity.
"""
    (out / "MODEL_CARD.md").write_text(text)
    (out / "checker_scores.json").write_text(json.dumps(scores, indent=1))


def _previous(releases: list[dict[str, Any]]) -> str:
    """The checker scores of earlier releases (``record["previous"]``), so the card keeps old and new."""
    parts = []
    for old in releases:
        rows = "\n".join(f"| {m} | " + " | ".join(f"{s[a]:.2f}" for a in ATTRIBUTES) + " |"
                         for m, s in old["scores"].items())
        parts.append(f"""
### Previous release: {old['release']}
| method | colour | count | shape | position | all four |
|---|---|---|---|---|---|
{rows}
""")
    return "".join(parts)
