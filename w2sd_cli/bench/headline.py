"""The verdict a report leads with: per primary metric, W2SD against strong in words (wins / ties / losses,
the controls beside it), and the facts that qualify every verdict (missing items, unscorable share, cost)."""

from __future__ import annotations

from typing import Any

from w2sd_cli.bench.analysis import Report, verdict

LABELS = {"weak": "weak", "strong": "strong", "w2sd": "W2SD", "extrapolate": "extrapolate",
          "first-order": "first-order", "equal-nfe": "equal-NFE"}
CONTROLS = ("extrapolate", "equal-nfe", "first-order")
"""The controls whose gains a verdict shows beside W2SD's: W2SD should beat what costs the same or less."""


def headline(report: Report, method: str = "w2sd") -> list[dict[str, Any]]:
    """Per primary metric, in reading order (the card's checker first, side effects last): the verdict of
    ``method`` against strong, the controls' differences, the scorable share and one plain sentence.

    A metric with no better direction gets no verdict; one that scored nothing says so instead."""
    if method not in report.methods or "strong" not in report.methods:
        return []
    found = []
    for name, col in report.primary.items():
        if col not in report.metrics:
            if name in report.scorable:
                found.append(_nothing_scored(report, name, col))
            continue
        result = verdict(report, col, method)
        if result["verdict"] == "unknown" or result["direction"] == 0:
            continue
        result["controls"] = _controls(report, col)
        if name in report.scorable:
            result["scorable"] = report.scorable[name]
        result["sentence"] = _sentence(result, report.unit)
        found.append(result)
    return found


def _nothing_scored(report: Report, name: str, col: str) -> dict[str, Any]:
    scored, given = report.scorable[name]
    return {"metric": col, "method": "w2sd", "verdict": "unscorable", "scorable": [scored, given],
            "sentence": f"Nothing could be scored on {name}: {scored} of {given} items are scorable (their prompts "
                        "use words the pair does not know), so there is no verdict."}


def _controls(report: Report, col: str) -> dict[str, dict[str, Any]]:
    out = {}
    for method in CONTROLS:
        row = report.row(method, col)
        if row is not None and row.vs_strong is not None and row.vs_strong.diff is not None:
            c = row.vs_strong
            out[method] = {"diff": c.diff, "low": c.low, "high": c.high, "wins": c.wins, "ties": c.ties,
                           "losses": c.losses}
    return out


def _delta(diff: float, low: float | None, high: float | None) -> str:
    interval = f" (95% CI {low:+.3g} to {high:+.3g})" if low is not None and high is not None else ""
    return f"Δ {diff:+.3g}{interval}"


def record(result: dict[str, Any], unit: str) -> str:
    """``4 wins, 12 ties, 0 losses over 16 prompts`` (never ties folded into a rate)."""
    return (f"{result['wins']} win{'s' * (result['wins'] != 1)}, {result['ties']} tie{'s' * (result['ties'] != 1)}, "
            f"{result['losses']} loss{'es' * (result['losses'] != 1)} over {result['units']} {unit}s")


def _sentence(result: dict[str, Any], unit: str) -> str:
    metric = result["metric"]
    better = {1: "higher is better", -1: "lower is better"}.get(result["direction"], "neither way is better")
    delta = _delta(result["diff"], result.get("low"), result.get("high"))
    if result.get("low") is None:
        delta += " (no interval: one unit)"
    pinned = result.get("best") if result.get("ceiling") else result.get("constant")
    if pinned is not None:
        text = (f"On {metric}, W2SD and strong both score {pinned:.4g} on every {unit}: this set cannot show a "
                "difference.")
    elif result["verdict"] == "better":
        text = f"W2SD beats strong on {metric} ({better}): {delta}; {record(result, unit)}."
    elif result["verdict"] == "worse":
        text = f"W2SD is worse than strong on {metric} ({better}): {delta}; {record(result, unit)}."
    else:
        text = (f"No clear difference between W2SD and strong on {metric} ({better}): {delta}; "
                f"{record(result, unit)}.")
    controls = [f"{LABELS.get(m, m)} {_delta(c['diff'], c['low'], c['high'])}"
                for m, c in (result.get("controls") or {}).items()]
    return text + (f" Controls vs strong: {'; '.join(controls)}." if controls else "")


def verdict_facts(report: Report) -> list[str]:
    """What qualifies every verdict: missing items, unpaired scores, unscorable items and the cost (NFE)."""
    lines = []
    missing = report.total - report.done
    if missing:
        lines.append(f"Incomplete run: {missing} of {report.total} planned items are missing"
                     f"{f' ({report.failed} failed)' if report.failed else ''}; comparisons pair only the "
                     "(prompt, seed) items both sides have (resume `w2sd bench` to fill the rest).")
    unpaired = max((r.vs_strong.unpaired for r in report.rows if r.method == "w2sd" and r.vs_strong), default=0)
    if unpaired:
        lines.append(f"{unpaired} scored item{'s' * (unpaired != 1)} of W2SD or strong "
                     f"{'has' if unpaired == 1 else 'have'} no partner with the same prompt and seed and "
                     f"{'is' if unpaired == 1 else 'are'} left out of the comparison.")
    for name, (scored, given) in report.scorable.items():
        if scored < given:
            lines.append(f"{name}: {given - scored} of {given} items ({(given - scored) / given:.0%}) are unscorable "
                         "(words the pair does not know) and left out of its accuracies.")
    costs = [f"{LABELS.get(m, m)} {report.cost[m]['nfe']:.0f}" for m in report.methods
             if report.cost.get(m, {}).get("nfe") is not None]
    strong, w2sd = (report.cost.get(m, {}).get("nfe") for m in ("strong", "w2sd"))
    if costs:
        ratio = f" (W2SD costs {w2sd / strong:.2g}× strong)" if strong and w2sd else ""
        lines.append(f"Cost, network evaluations (NFE) per item: {', '.join(costs)}{ratio}.")
    return lines
