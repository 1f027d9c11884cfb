"""`w2sd report`: the analysis as JSON, matplotlib plots and one self-contained HTML page.

The page inlines everything (plots and a weak | strong | W2SD grid as base64 PNGs), so it can be mailed
or attached to a CI run and opened anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2sd_cli.bench.analysis import SMALL_N, Report, Row, analyse
from w2sd_cli.bench.headline import LABELS, headline, verdict_facts
from w2sd_cli.bench.manifest import merge as merge_parts
from w2sd_cli.bench.manifest import read_lines
from w2sd_cli.bench.runner import read_plan
from w2sd_cli.files import atomic_path, ensure_writable, write_text_atomic
from w2sd_cli.outputs import load_output

COLOURS = {"weak": "#7f7f7f", "strong": "#1f77b4", "w2sd": "#d62728", "extrapolate": "#2ca02c",
           "first-order": "#9467bd", "equal-nfe": "#ff7f0e"}
"""One fixed colour per method in every plot and on the page."""
SPARE_COLOURS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf")
GRID_PROMPTS = 8
GRID_SEEDS = 32
THUMB = 160


def colour(method: str, methods: list[str] | None = None) -> str:
    """The method's fixed colour (plugin methods take spare colours in the run's order)."""
    if method in COLOURS:
        return COLOURS[method]
    others = [m for m in (methods or [method]) if m not in COLOURS]
    return SPARE_COLOURS[others.index(method) % len(SPARE_COLOURS)] if method in others else SPARE_COLOURS[0]


@dataclass
class ReportFiles:
    """What `w2sd report` wrote."""

    folder: Path
    json: Path
    plots: list[Path] = field(default_factory=list)
    html: Path | None = None


def build(run_dir: Path, out: Path | None = None, *, plots: bool = True,
          page: bool = True) -> tuple[Report, ReportFiles]:
    """Merge the run's manifest parts, analyse its scores and write ``report.json``, plots and ``index.html``."""
    plan = read_plan(run_dir)
    ensure_writable(out or run_dir / "report", "the report folder")  # before any analysis or plotting
    merge_parts(run_dir, plan["ids"])
    report = analyse(run_dir)
    folder = out or run_dir / "report"
    folder.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(folder, folder / "report.json")
    write_text_atomic(files.json, json.dumps({**report.as_dict(), "headline": headline(report)}, indent=1,
                                             default=str) + "\n")
    if plots:
        files.plots = write_plots(report, folder)
    if page:
        files.html = write_html(report, run_dir, plan, files.plots, folder / "index.html")
    return report, files


def shown_columns(report: Report) -> list[str]:
    """Each metric's primary column, then diversity columns (what plots and the summary show)."""
    chosen = [c for c in report.primary.values() if c in report.metrics]
    chosen += [m for m in report.metrics if m.endswith(".diversity")]
    return chosen or report.metrics


def ordered_columns(report: Report) -> list[str]:
    """Every column, primary ones first, then diversity, then the other (secondary) keys."""
    first = shown_columns(report)
    return first + [c for c in report.metrics if c not in first]


def write_plots(report: Report, folder: Path) -> list[Path]:
    """``metric-vs-nfe.png`` (mean per method against its NFE) and ``win-rate.png`` (vs strong)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    columns = shown_columns(report)
    if not columns:
        return []
    written = [_save(nfe_figure(report, columns), folder / "metric-vs-nfe.png")]
    others = [m for m in report.methods if m != "strong"]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(columns) * max(1, len(others))), 3.4))
    width = 0.8 / max(1, len(others))
    for n, method in enumerate(others):
        for i, col in enumerate(columns):
            row = report.row(method, col)
            rate = row.vs_strong.win_rate if row and row.vs_strong else None
            x = i + n * width
            if rate is None:
                ax.text(x, 0.02, "n/a", ha="center", fontsize=7)
                continue
            # a zero rate still gets a visible stub and its label, never an empty slot
            ax.bar([x], [max(rate, 0.012)], width, color=colour(method, report.methods),
                   label=LABELS.get(method, method) if i == 0 else None)
            ax.text(x, max(rate, 0.012) + 0.02, f"{rate:.0%}", ha="center", fontsize=7)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks([i + width * (len(others) - 1) / 2 for i in range(len(columns))], columns, fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(f"win rate vs strong (per {report.unit}; ties half)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(_save(fig, folder / "win-rate.png"))
    plt.close("all")
    return written


def nfe_figure(report: Report, columns: list[str]) -> Any:
    """Each method's mean (with its 95% interval) against its NFE, one panel per column; methods that land
    on the same point share one label ("W2SD = first-order") instead of printing over each other."""
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.4), squeeze=False)
    for ax, col in zip(axes[0], columns, strict=True):
        points: dict[tuple[float, float], list[str]] = {}
        for method in report.methods:
            row = report.row(method, col)
            nfe = report.cost[method]["nfe"]
            if row is None or row.mean is None or nfe is None:
                continue
            low = row.mean - row.low if row.low is not None else 0.0
            high = row.high - row.mean if row.high is not None else 0.0
            ax.errorbar([nfe], [row.mean], yerr=[[low], [high]], fmt="o", markersize=8, capsize=4,
                        color=colour(method, report.methods), label=LABELS.get(method, method))
            points.setdefault((round(nfe, 6), round(row.mean, 9)), []).append(LABELS.get(method, method))
        for (nfe, mean), names in points.items():
            ax.annotate(" = ".join(names), (nfe, mean), textcoords="offset points", xytext=(6, 4), fontsize=8)
        direction = next((r.direction for r in report.rows if r.metric == col), 1)
        better = {1: "higher is better", -1: "lower is better"}.get(direction, "no better direction")
        ax.set_ylabel(f"mean {col} per {report.unit} ({better})", fontsize=8)
        ax.set_xlabel("NFE per item")
        ax.set_title(f"{col} (bars: 95% CI)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    return path


def summary_rows(report: Report, columns: list[str] | None = None,
                 rows: list[Row] | None = None) -> tuple[list[str], list[list[Any]]]:
    """The table: per metric column and method the mean, Δ vs strong [95% CI], win rate, wins/ties/losses,
    NFE, s/item."""
    header = ["metric", "method", "mean", "Δ vs strong", "95% CI", "win rate", "W/T/L", "NFE", "s/item", "n"]
    body = []
    chosen = rows if rows is not None else report.rows
    if columns is not None:
        chosen = sorted((r for r in chosen if r.metric in columns), key=lambda r: columns.index(r.metric))
    for row in chosen:
        c = row.vs_strong
        interval = f"[{c.low:+.4g}, {c.high:+.4g}]" if c and c.low is not None and c.high is not None else None
        cost = report.cost.get(row.method, {})
        body.append([row.metric + (f" ({row.category})" if row.category else ""), row.method, row.mean,
                     f"{c.diff:+.4g}" if c and c.diff is not None else None, interval, c.win_rate if c else None,
                     f"{c.wins}/{c.ties}/{c.losses}" if c and c.wins is not None else None,
                     cost.get("nfe"), cost.get("seconds"), row.n])
    return header, body


def write_html(report: Report, run_dir: Path, plan: dict[str, Any], plots: list[Path], path: Path) -> Path:
    """One self-contained page: the verdict first, then run facts, the tables, the plots and the image grid."""
    columns = ordered_columns(report)
    primary = set(report.primary.values())
    header, body = summary_rows(report, columns, sorted(report.rows, key=lambda r: columns.index(r.metric)))
    parts = [f"<h1>w2sd report: {_e(report.pair)}</h1>", _verdict_html(report), _legend(report.methods),
             f"<p>{report.done} of {report.total} items"
             f"{f' ({report.failed} failed, see failures.rank-*.jsonl)' if report.failed else ''}; "
             f"unit of comparison: {report.unit}; "
             f"steps {plan['settings'].get('steps')}, λ {plan['settings'].get('lam')}; "
             f"prompts: {_e(str(plan['prompt_set'].get('name')))} ({len(plan['prompts'])}); "
             f"seeds: {_e(str(plan['seeds']))}. Δ is paired against <b>strong</b> with a percentile-bootstrap 95% "
             "interval over the (prompt, seed) items both sides have; W/T/L counts units where the method is better, "
             "equal, worse, and win rate is wins plus half the ties. Metrics where no direction is better (e.g. "
             "saturation or diversity) get neither.</p>",
             "<h2>All numbers</h2><p>Primary metrics (bold) first, then diversity and the secondary keys.</p>",
             _table(header, body, [r[0] in primary for r in body])]
    if report.categories:
        shown = shown_columns(report)
        cat_header, cat_body = summary_rows(report, shown, sorted(
            (r for r in report.categories if r.metric in shown), key=lambda r: (shown.index(r.metric), r.category)))
        parts += ["<h2>Per category</h2>", _table(cat_header, cat_body)]
    parts += ["<h2>Plots</h2>"] + [f'<img alt="{_e(p.stem)}" src="{_data_uri(p.read_bytes())}">' for p in plots]
    parts += ["<h2>Images</h2>", _grid(run_dir, plan, report)]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>w2sd report</title><style>"
            "body{font-family:sans-serif;margin:24px;background:#fff;color:#111}"
            "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}"
            "th{background:#e8eef7}img{max-width:100%;margin:4px}.grid td{text-align:center;vertical-align:top}"
            "tr.primary td{font-weight:bold}#verdict{border:2px solid #333;padding:8px 16px;margin:12px 0}"
            "#verdict li{margin:6px 0;font-size:16px}.better{color:#11691f}.worse{color:#a31515}"
            ".unclear{color:#555}.warn{color:#8a5a00;font-weight:bold}.swatch{display:inline-block;width:14px;"
            "height:14px;margin:0 4px 0 12px;vertical-align:middle}.ok{color:#11691f}.bad{color:#a31515}"
            "details{margin:4px 0}</style></head><body>" + "\n".join(parts) + "</body></html>\n")
    write_text_atomic(path, page)
    return path


def _verdict_html(report: Report) -> str:
    """The headline: one item per primary metric, then the run's completeness, unscorable share and cost."""
    found = headline(report)
    facts = "".join(f"<p class='fact'>{_e(line)}</p>" for line in verdict_facts(report))
    if not found:
        return ("<section id='verdict'><h2>Verdict</h2><p>No verdict: the run needs W2SD and strong items scored by "
                f"a metric (`w2sd eval`).</p>{facts}</section>")
    items = []
    for result in found:
        units = result.get("units")
        warn = (f" <span class='warn'>Only {units} {report.unit}s back this (fewer than {SMALL_N}): "
                "treat it as a hint.</span>" if units is not None and units < SMALL_N else "")
        items.append(f"<li class='{_e(result['verdict'])}' data-metric='{_e(result['metric'])}'>"
                     f"{_e(result['sentence'])}{warn}</li>")
    return f"<section id='verdict'><h2>Verdict: W2SD vs strong</h2><ul>{''.join(items)}</ul>{facts}</section>"


def _legend(methods: list[str]) -> str:
    swatches = "".join(f"<span class='swatch' style='background:{colour(m, methods)}'></span>"
                       f"{_e(LABELS.get(m, m))}" for m in methods)
    return f"<p class='legend'>Method colours (every plot):{swatches}</p>"


def _table(header: list[str], body: list[list[Any]], bold: list[bool] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    rows = "".join(("<tr class='primary'>" if bold and bold[n] else "<tr>")
                   + "".join(f"<td>{_e(_fmt(v))}</td>" for v in row) + "</tr>" for n, row in enumerate(body))
    return f"<table><tr>{head}</tr>{rows}</table>"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _grid(run_dir: Path, plan: dict[str, Any], report: Report) -> str:
    """The first prompts, every method side by side; the first seed open, every other seed one click away.

    Under each image: the primary score of each metric, as ✓/✗ for 0/1 checkers (``shapes-checker``)."""
    lines = read_lines(run_dir / "manifest.jsonl")
    by_key = {(ln["prompt_index"], ln["seed"], ln["method"]): ln for ln in lines}
    marks = _marks(run_dir, report)
    methods = list(plan["methods"])
    head = "".join(f"<th style='border-bottom:4px solid {colour(m, methods)}'>{_e(LABELS.get(m, m))}</th>"
                   for m in methods)
    blocks = []
    for prompt in plan["prompts"][:GRID_PROMPTS]:
        seeds = sorted({s for (i, s, _m) in by_key if i == prompt["index"]})
        if not seeds:
            continue
        rows = []
        for seed in seeds[:GRID_SEEDS]:
            cells = []
            for method in methods:
                line = by_key.get((prompt["index"], seed, method))
                cells.append(f"<td><img alt='{_e(method)} seed {seed}' src='{_thumbnail(run_dir, line, plan)}'>"
                             f"<br>{marks.get(line['id'], '')}</td>" if line else "<td>-</td>")
            rows.append(f"<tr><td>seed {seed}</td>{''.join(cells)}</tr>")
        table = f"<table class='grid'><tr><th>seed</th>{head}</tr>{rows[0]}</table>"
        more = ""
        if len(rows) > 1:
            more = (f"<details><summary>{len(rows) - 1} more seed{'s' if len(rows) > 2 else ''}</summary>"
                    f"<table class='grid'><tr><th>seed</th>{head}</tr>{''.join(rows[1:])}</table></details>")
        cut = (f"<p>Seeds after the first {GRID_SEEDS} are in {_e(str(run_dir / 'items'))}.</p>"
               if len(seeds) > GRID_SEEDS else "")
        caption = prompt["text"] or "(no prompt)"
        blocks.append(f"<h3>{_e(caption)}</h3>{table}{more}{cut}")
    if not blocks:
        return "<p>No finished items to show.</p>"
    return "".join(blocks)


def _marks(run_dir: Path, report: Report) -> dict[str, str]:
    """Per item id a short HTML note of its primary scores (✓/✗ where a metric only gives 0 or 1)."""
    from w2sd_cli.bench.analysis import load_values

    values, _metas, _diversity = load_values(run_dir)
    columns = [c for c in report.primary.values() if c in report.metrics]
    binary = {c for c in columns if all(v.get(c) in (None, 0.0, 1.0) for v in values.values())}
    notes: dict[str, str] = {}
    for item, scores in values.items():
        bits = []
        for col in columns:
            if col not in scores:
                continue
            if col in binary:
                ok = scores[col] == 1.0
                bits.append(f"<span class='{'ok' if ok else 'bad'}' title='{_e(col)}'>{'✓' if ok else '✗'} "
                            f"{_e(col)}</span>")
            else:
                bits.append(f"<span title='{_e(col)}'>{_e(col)} {scores[col]:.4g}</span>")
        notes[item] = "<br>".join(bits)
    return notes


def _thumbnail(run_dir: Path, line: dict[str, Any], plan: dict[str, Any]) -> str:
    output = load_output(run_dir / line["file"])
    buffer = io.BytesIO()
    if line.get("output") == "samples":
        _sample_plot(output, buffer)
    else:
        from PIL import Image

        image = output.copy()
        scale = THUMB / max(image.size)
        resample = Image.Resampling.NEAREST if max(image.size) <= 64 else Image.Resampling.LANCZOS
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
        image.save(buffer, format="PNG")
    return _data_uri(buffer.getvalue())


def _sample_plot(samples: Any, buffer: io.BytesIO) -> None:
    """A histogram (1-D) or scatter (2-D) of a sample set."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(2.6, 2.2))
    if samples.shape[1] == 1:
        ax.hist(samples[:, 0], bins=60, color="#4a7ab5")
    else:
        ax.scatter(samples[:3000, 0], samples[:3000, 1], s=1, color="#4a7ab5")
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
