"""What the report's verdict says: wins / ties / losses (never ties folded into "winning"), pairing on common
(prompt, seed) items with the missing ones named, the checker before side effects, the unscorable share, the
cost and the controls beside W2SD, "nothing could be scored" instead of a verdict on `scorable`, no win rate
for metrics with no direction, and an NFE plot with intervals, a y-label and one label per coinciding point."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import bench_instant
from tests.bench_helpers import invoke, invoke_json, prompt_file
from w2sd_cli.bench.analysis import Comparison, Report, Row, paired

METHODS = "weak,strong,w2sd,extrapolate"


def _run(tmp_path: Path, prompts: list[str], seeds: str = "0", metrics: tuple[str, ...] = ("level",),
         methods: str = METHODS) -> Path:
    bench_instant.install()
    run = tmp_path / "run"
    invoke("bench", "instant", "--prompts", prompt_file(tmp_path, prompts), "--seeds", seeds, "--methods", methods,
           "--out", run)
    invoke("eval", run, *(a for m in metrics for a in ("--metric", m)))
    return run


def _report(run: Path) -> dict[str, Any]:
    return invoke_json("report", run, "--no-plots")


def _verdict_box(report: dict[str, Any]) -> str:
    page = Path(report["files"]["html"]).read_text(encoding="utf-8")
    return page[page.index("id='verdict'"):page.index("</section>")]


def test_the_headline_counts_wins_ties_and_losses(tmp_path: Path) -> None:
    prompts = [f"prompt {n} w2sd+5" for n in range(4)] + [f"plain {n}" for n in range(12)]
    report = _report(_run(tmp_path, prompts))
    level = next(h for h in report["headline"] if h["metric"] == "level")
    assert (level["wins"], level["ties"], level["losses"], level["units"]) == (4, 12, 0, 16)
    assert "4 wins, 12 ties, 0 losses over 16 prompts" in level["sentence"]
    assert "winning" not in level["sentence"] and "winning" not in _verdict_box(report)
    table = invoke("report", tmp_path / "run", "--no-plots", "--no-html").output
    assert "4/12/0" in table


def _drop(run: Path, prompt: int, seed: int, method: str) -> None:
    """Forget one rendered item, as if the run had stopped before it."""
    lines = [json.loads(x) for x in (run / "manifest.jsonl").read_text().splitlines() if x.strip()]
    item = next(ln["id"] for ln in lines if (ln["prompt_index"], ln["seed"], ln["method"]) == (prompt, seed, method))
    for path in run.glob("manifest*.jsonl"):
        kept = [x for x in path.read_text().splitlines() if x.strip() and json.loads(x)["id"] != item]
        path.write_text("".join(k + "\n" for k in kept))


def test_pairs_only_common_prompt_seed_items_and_names_what_is_missing(tmp_path: Path) -> None:
    # w2sd = strong on every (prompt, seed); seed 1 scores one level higher than seed 0
    run = _run(tmp_path, ["a fox", "a cat", "a hen"], seeds="0-1")
    _drop(run, 0, 1, "strong")
    report = _report(run)
    w2sd = next(r for r in report["rows"] if r["metric"] == "level" and r["method"] == "w2sd")["vs_strong"]
    assert w2sd["diff"] == pytest.approx(0.0), "each side must average the same seeds"
    assert (w2sd["wins"], w2sd["ties"], w2sd["losses"]) == (0, 3, 0)
    assert w2sd["unpaired"] == 1
    box = _verdict_box(report)
    assert "Incomplete run: 1 of 24 planned items are missing" in box
    assert "1 scored item of W2SD or strong has no partner" in box


def test_the_checker_comes_first_with_cost_controls_and_unscorable_share(tmp_path: Path) -> None:
    prompts = [f"p{n} w2sd+3 extrapolate+12" for n in range(3)] + ["a red circle"]
    run = _run(tmp_path, prompts, metrics=("image-stats", "level", "shapes-checker"))
    report = _report(run)
    metrics = [h["metric"] for h in report["headline"]]
    assert metrics.index("level") < metrics.index("image-stats.clipped"), "side effects come last"
    level = next(h for h in report["headline"] if h["metric"] == "level")
    assert level["controls"]["extrapolate"]["diff"] == pytest.approx((2 + 2 + 2 - 10) / 4)
    assert "Controls vs strong: extrapolate Δ" in level["sentence"]
    box = _verdict_box(report)
    assert ("Cost, network evaluations (NFE) per item: weak 10, strong 10, W2SD 28, extrapolate 20 (W2SD costs "
            "2.8× strong)") in box
    assert "shapes-checker: 12 of 16 items (75%) are unscorable" in box


def test_no_scorable_prompt_says_so_instead_of_judging_scorable(tmp_path: Path) -> None:
    report = _report(_run(tmp_path, ["a fox", "a cat w2sd+4"], metrics=("shapes-checker",)))
    assert report["metrics"] == ["shapes-checker.scorable"]
    [only] = report["headline"]
    assert only["verdict"] == "unscorable" and only["scorable"] == [0, 8]
    assert only["sentence"].startswith("Nothing could be scored on shapes-checker: 0 of 8 items are scorable")
    assert "Nothing could be scored" in _verdict_box(report)


def test_metrics_with_no_direction_get_no_win_rate(tmp_path: Path) -> None:
    assert paired([1.0, 2.0, 3.0], [0.0, 2.0, 4.0], sign=0).win_rate is None
    counted = paired([1.0, 2.0, 3.0], [0.0, 2.0, 4.0], sign=1)
    assert (counted.wins, counted.ties, counted.losses, counted.win_rate) == (1, 1, 1, 0.5)
    report = _report(_run(tmp_path, ["a fox w2sd+5", "a cat"], metrics=("image-stats",)))
    saturation = next(r for r in report["rows"] if r["metric"] == "image-stats.saturation" and r["method"] == "w2sd")
    assert saturation["vs_strong"]["win_rate"] is None and saturation["vs_strong"]["wins"] is None
    assert "image-stats.saturation" not in [h["metric"] for h in report["headline"]]


def test_the_nfe_plot_has_intervals_a_y_label_and_one_label_per_point() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.container import ErrorbarContainer

    from w2sd_cli.bench.report import nfe_figure

    rows = [Row("strong", "level", 100.0, 8, 1, low=98.0, high=102.0),
            Row("w2sd", "level", 104.0, 8, 1, Comparison(4.0, 3.0, 5.0, 1.0, 8), low=102.0, high=106.0),
            Row("first-order", "level", 104.0, 8, 1, Comparison(4.0, 3.0, 5.0, 1.0, 8), low=102.0, high=106.0)]
    cost = {"strong": {"nfe": 25.0}, "w2sd": {"nfe": 73.0}, "first-order": {"nfe": 73.0}}
    report = Report("run", "p", ["strong", "w2sd", "first-order"], ["level"], {"level": "level"}, "prompt", 24, 24,
                    cost, rows=rows)
    [ax] = nfe_figure(report, ["level"]).axes
    assert sorted(t.get_text() for t in ax.texts) == ["W2SD = first-order", "strong"]
    assert "level" in ax.get_ylabel() and "higher is better" in ax.get_ylabel()
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3 and all(c.has_yerr for c in bars)


def test_the_cards_own_checker_leads_and_side_effects_close() -> None:
    from w2sd_cli.bench.analysis import ranked

    plan = {"card": {"metrics": ["shapes-checker"]}}
    assert ranked(["image-stats", "level", "shapes-checker"], plan) == ["shapes-checker", "level", "image-stats"]
    assert ranked(["image-stats", "hpsv2"], {"card": {}}) == ["hpsv2", "image-stats"]
