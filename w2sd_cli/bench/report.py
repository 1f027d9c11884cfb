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

from w2sd_cli.bench.analysis import Report, Row, analyse
from w2sd_cli.bench.manifest import merge as merge_parts
from w2sd_cli.bench.manifest import read_lines
from w2sd_cli.bench.render import load_output
from w2sd_cli.bench.runner import read_plan
from w2sd_cli.files import atomic_path, write_text_atomic

GRID_METHODS = (("weak", "weak"), ("strong", "strong"), ("w2sd", "W2SD"))
GRID_PROMPTS = 8
THUMB = 256


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
    merge_parts(run_dir, plan["ids"])
    report = analyse(run_dir)
    folder = out or run_dir / "report"
    folder.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(folder, folder / "report.json")
    write_text_atomic(files.json, json.dumps(report.as_dict(), indent=1, default=str) + "\n")
    if plots:
        files.plots = write_plots(report, folder)
    if page:
        files.html = write_html(report, run_dir, plan, files.plots, folder / "index.html")
    return report, files


def shown_columns(report: Report) -> list[str]:
    """Each metric's primary column plus diversity columns (what plots and the summary show)."""
    chosen = list(report.primary.values())
    chosen += [m for m in report.metrics if m.endswith(".diversity")]
    return [c for c in report.metrics if c in chosen] or report.metrics


def write_plots(report: Report, folder: Path) -> list[Path]:
    """``metric-vs-nfe.png`` (mean per method against its NFE) and ``win-rate.png`` (vs strong)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    columns = shown_columns(report)
    if not columns:
        return []
    written = []
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.4), squeeze=False)
    for ax, col in zip(axes[0], columns, strict=True):
        for method in report.methods:
            row = report.row(method, col)
            nfe = report.cost[method]["nfe"]
            if row is None or row.mean is None or nfe is None:
                continue
            ax.scatter([nfe], [row.mean], s=36)
            ax.annotate(method, (nfe, row.mean), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("NFE per item")
        ax.set_title(col, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, folder / "metric-vs-nfe.png"))
    others = [m for m in report.methods if m != "strong"]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(columns) * max(1, len(others))), 3.4))
    width = 0.8 / max(1, len(others))
    for n, method in enumerate(others):
        rates = []
        for col in columns:
            row = report.row(method, col)
            rates.append(row.vs_strong.win_rate if row and row.vs_strong and row.vs_strong.win_rate is not None
                         else 0.0)
        ax.bar([i + n * width for i in range(len(columns))], rates, width, label=method)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks([i + width * (len(others) - 1) / 2 for i in range(len(columns))], columns, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"win rate vs strong (per {report.unit})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(_save(fig, folder / "win-rate.png"))
    plt.close("all")
    return written


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    return path


def summary_rows(report: Report, columns: list[str] | None = None,
                 rows: list[Row] | None = None) -> tuple[list[str], list[list[Any]]]:
    """The table: per metric column and method the mean, Δ vs strong [95% CI], win rate, NFE, s/item."""
    header = ["metric", "method", "mean", "Δ vs strong", "95% CI", "win rate", "NFE", "s/item", "n"]
    body = []
    for row in rows if rows is not None else report.rows:
        if columns is not None and row.metric not in columns:
            continue
        c = row.vs_strong
        interval = f"[{c.low:+.4g}, {c.high:+.4g}]" if c and c.low is not None and c.high is not None else None
        cost = report.cost.get(row.method, {})
        body.append([row.metric + (f" ({row.category})" if row.category else ""), row.method, row.mean,
                     f"{c.diff:+.4g}" if c and c.diff is not None else None, interval, c.win_rate if c else None,
                     cost.get("nfe"), cost.get("seconds"), row.n])
    return header, body


def write_html(report: Report, run_dir: Path, plan: dict[str, Any], plots: list[Path], path: Path) -> Path:
    """One self-contained page: run facts, the table, the plots and the comparison grid."""
    header, body = summary_rows(report)
    parts = [f"<h1>w2sd report: {_e(report.pair)}</h1>",
             f"<p>{report.done} of {report.total} items"
             f"{f' ({report.failed} failed, see failures.rank-*.jsonl)' if report.failed else ''}; "
             f"unit of comparison: {report.unit}; "
             f"steps {plan['settings'].get('steps')}, λ {plan['settings'].get('lam')}; "
             f"prompts: {_e(str(plan['prompt_set'].get('name')))} ({len(plan['prompts'])}); "
             f"seeds: {_e(str(plan['seeds']))}. Δ is paired against <b>strong</b> with a percentile-bootstrap 95% "
             "interval; win rate counts units where the method is better (ties half; where no direction is better, "
             "e.g. saturation or diversity, it counts units where the method is higher).</p>",
             _table(header, body)]
    if report.categories:
        columns = shown_columns(report)
        cat_header, cat_body = summary_rows(report, columns, report.categories)
        parts += ["<h2>Per category</h2>", _table(cat_header, cat_body)]
    parts += ["<h2>Plots</h2>"] + [f'<img alt="{_e(p.stem)}" src="{_data_uri(p.read_bytes())}">' for p in plots]
    parts += ["<h2>weak | strong | W2SD</h2>", _grid(run_dir, plan)]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>w2sd report</title><style>"
            "body{font-family:sans-serif;margin:24px;background:#fff;color:#111}"
            "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}"
            "th{background:#e8eef7}img{max-width:100%;margin:4px}.grid td{text-align:center;vertical-align:top}"
            "</style></head><body>" + "\n".join(parts) + "</body></html>\n")
    write_text_atomic(path, page)
    return path


def _table(header: list[str], body: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{_e(_fmt(v))}</td>" for v in row) + "</tr>" for row in body)
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


def _grid(run_dir: Path, plan: dict[str, Any]) -> str:
    """The first seed of the first prompts, one row each, side by side."""
    lines = read_lines(run_dir / "manifest.jsonl")
    by_key = {(ln["prompt_index"], ln["seed"], ln["method"]): ln for ln in lines}
    shown = [(label, m) for m, label in GRID_METHODS if m in plan["methods"]]
    rows = []
    for prompt in plan["prompts"][:GRID_PROMPTS]:
        seeds = sorted({s for (i, s, _m) in by_key if i == prompt["index"]})
        if not seeds:
            continue
        cells = []
        for _label, method in shown:
            line = by_key.get((prompt["index"], seeds[0], method))
            cells.append(f'<td><img alt="{method}" src="{_thumbnail(run_dir, line, plan)}"></td>' if line else
                         "<td>-</td>")
        caption = prompt["text"] or f"seed {seeds[0]}"
        rows.append(f"<tr><td>{_e(caption)}</td>{''.join(cells)}</tr>")
    if not rows:
        return "<p>No finished items to show.</p>"
    head = "".join(f"<th>{_e(label)}</th>" for label, _m in shown)
    return f"<table class='grid'><tr><th>prompt</th>{head}</tr>{''.join(rows)}</table>"


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
